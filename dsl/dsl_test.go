package dsl_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/internal/metrics"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/prometheus/client_golang/prometheus"
)

type event struct {
	key string
	ts  int64
}

// randomEvents is mostly in order with jitter, plus some records far
// behind stream time (beyond any grace). Timestamps fall on a 500 ms grid
// so that records land exactly on window bounds and grace limits.
func randomEvents(rng *rand.Rand, n int) []event {
	out := make([]event, n)
	now := int64(1_000_000)
	for i := range out {
		now += 500 * rng.Int64N(3)
		ts := now - 500*rng.Int64N(9)
		if rng.IntN(20) == 0 {
			ts = now - 20_000 - 500*rng.Int64N(40)
		}
		out[i] = event{key: fmt.Sprint("k", rng.IntN(4)), ts: ts}
	}
	return out
}

type window struct {
	key   string
	start int64
}

type oracleResult struct {
	latest  map[window]int64 // last value per window (update mode)
	final   map[window]int64 // value of each window when it closed
	dropped int
}

// oracle recomputes windowed counts by brute force: stream time is the
// running maximum; a record misses every window whose end + grace stream
// time has already reached; a window closes after the record that moves
// stream time past its end + grace.
func oracle(events []event, w dsl.TimeWindows) oracleResult {
	size, adv, grace := w.Size.Milliseconds(), w.Advance.Milliseconds(), w.Grace.Milliseconds()
	res := oracleResult{latest: map[window]int64{}, final: map[window]int64{}}
	open := map[window]int64{}
	st := int64(-1 << 62)
	for _, e := range events {
		st = max(st, e.ts)
		closeTime := st - grace
		for start := int64(0); start <= e.ts; start += adv {
			if e.ts >= start+size {
				continue
			}
			if start+size <= closeTime {
				res.dropped++
				continue
			}
			k := window{e.key, start}
			open[k]++
			res.latest[k] = open[k]
		}
		for k, n := range open {
			if k.start+size <= closeTime {
				res.final[k] = n
				delete(open, k)
			}
		}
	}
	return res
}

// lateDrops is dropped_records_total{reason="late"} in reg.
func lateDrops(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	v, err := metrics.Sum(reg, "dropped_records_total", "reason", "late")
	if err != nil {
		t.Fatal(err)
	}
	return int(v)
}

func windowedCountTopology(w dsl.TimeWindows, reg prometheus.Registerer) func(t *testing.T) *exactly.Topology {
	return func(t *testing.T) *exactly.Topology {
		sb := dsl.NewStreamsBuilder(dsl.Options{Registerer: reg})
		dsl.WindowedCount(dsl.Stream(sb, "clicks", serde.String, serde.String).GroupByKey(), w, "clicks-per-window", dsl.Materialized{}).
			To("click-counts")
		top, err := sb.Build()
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
}

func windowedTopology(t *testing.T, w dsl.TimeWindows) (*testdriver.Driver, *prometheus.Registry) {
	m := prometheus.NewRegistry()
	d, err := testdriver.New(windowedCountTopology(w, m)(t), testdriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, m
}

func TestWindowedCountsMatchBruteForce(t *testing.T) {
	shapes := map[string]dsl.TimeWindows{
		"tumbling": dsl.TumblingWindows(10*time.Second, 5*time.Second),
		"hopping":  dsl.HoppingWindows(10*time.Second, 4*time.Second, 3*time.Second),
		"no grace": dsl.TumblingWindows(7*time.Second, 0),
	}
	for name, w := range shapes {
		for _, emit := range []dsl.EmitStrategy{dsl.OnWindowUpdate, dsl.OnWindowClose} {
			w.Emit = emit
			t.Run(fmt.Sprintf("%s/emit=%v", name, emit), func(t *testing.T) {
				for seed := range uint64(8) {
					events := randomEvents(rand.New(rand.NewPCG(seed, 3)), 300)
					want := oracle(events, w)
					d, m := windowedTopology(t, w)
					pipeEvents(t, d, "clicks", events)
					out := testdriver.CreateOutputTopic(d, "click-counts", dsl.WindowedSerde(serde.String), serde.Int64)
					recs, err := out.ReadRecords()
					if err != nil {
						t.Fatal(err)
					}
					got := map[window]int64{}
					emitted := map[window]int{}
					for _, r := range recs {
						k := window{r.Key.Key, r.Key.Start.UnixMilli()}
						if r.Key.End.UnixMilli()-k.start != w.Size.Milliseconds() {
							t.Fatalf("window %v ends at %v", k, r.Key.End)
						}
						got[k] = r.Value
						emitted[k]++
					}
					expect := want.latest
					if emit == dsl.OnWindowClose {
						expect = want.final
						for k, n := range emitted {
							if n != 1 {
								t.Fatalf("seed %d: window %v emitted %d times, want once", seed, k, n)
							}
						}
					}
					if fmt.Sprint(got) != fmt.Sprint(expect) {
						t.Fatalf("seed %d: windows differ\n got %v\nwant %v", seed, got, expect)
					}
					if dropped := lateDrops(t, m); dropped != want.dropped {
						t.Fatalf("seed %d: dropped %v, want %d", seed, dropped, want.dropped)
					}
					if want.dropped == 0 {
						t.Fatalf("seed %d: the stream has no late record to drop", seed)
					}
				}
			})
		}
	}
}

func TestWindowedAggregationsSurviveCrashes(t *testing.T) {
	events := randomEvents(rand.New(rand.NewPCG(4, 4)), 200)
	for _, w := range []dsl.TimeWindows{dsl.HoppingWindows(4*time.Second, 2*time.Second, time.Second),
		{Size: 3 * time.Second, Advance: 3 * time.Second, Grace: 2 * time.Second, Emit: dsl.OnWindowClose}} {
		checkCrashEquivalence(t, clicksCrashCase(windowedCountTopology(w, nil), events, "click-counts"), 8)
	}
}

func TestWindowStoreStaysBounded(t *testing.T) {
	w := dsl.TumblingWindows(10*time.Second, 5*time.Second)
	w.Emit = dsl.OnWindowClose
	d, _ := windowedTopology(t, w)
	in := testdriver.CreateInputTopic(d, "clicks", serde.String, serde.String)
	for i := range 20_000 {
		if err := in.PipeInput(fmt.Sprint("k", i%5), "c", time.UnixMilli(int64(i)*100)); err != nil {
			t.Fatal(err)
		}
	}
	kv, err := testdriver.KeyValueStore[[]byte, int64](d, "clicks-per-window", 0)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := kv.ApproximateNumEntries()
	// Open windows span at most size + grace of stream time: two per key.
	if n > 5*2 {
		t.Fatalf("window store holds %d entries after 2,000 s of stream time, want at most 10", n)
	}
}

func TestStatelessOperations(t *testing.T) {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	words := dsl.FlatMap(dsl.Stream(sb, "lines", serde.String, serde.String),
		func(_ string, line string) []dsl.KeyValue[string, string] {
			var out []dsl.KeyValue[string, string]
			for _, w := range strings.Fields(line) {
				out = append(out, dsl.KeyValue[string, string]{Key: w, Value: w})
			}
			return out
		}, serde.String, serde.String)
	branches := words.Filter(func(k, _ string) bool { return k != "the" }).Split(
		func(k, _ string) bool { return len(k) > 4 },
		func(string, string) bool { return true })
	dsl.MapValues(branches[0], func(_, v string) int64 { return int64(len(v)) }, serde.Int64).To("long-words")
	branches[1].Merge(branches[0]).To("all-words")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, testdriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	testdriver.CreateInputTopic(d, "lines", serde.String, serde.String).PipeInput("l1", "the quick brown fox", time.UnixMilli(1))
	long, _ := testdriver.CreateOutputTopic(d, "long-words", serde.String, serde.Int64).ReadKeyValuesToMap()
	if fmt.Sprint(long) != "map[brown:5 quick:5]" {
		t.Fatalf("long words: %v", long)
	}
	all, _ := testdriver.CreateOutputTopic(d, "all-words", serde.String, serde.String).ReadRecords()
	if len(all) != 3 {
		t.Fatalf("all words: %v", all)
	}
}

func TestAggregationsIntoTables(t *testing.T) {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	amounts := dsl.Stream(sb, "payments", serde.String, serde.Int64)
	dsl.Count(amounts.GroupByKey(), "payment-counts", dsl.Materialized{}).ToStream().To("counts")
	dsl.Reduce(amounts.GroupByKey(), "max-payment", func(acc, v int64) int64 { return max(acc, v) }, dsl.Materialized{}).ToStream().To("max")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, testdriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	in := testdriver.CreateInputTopic(d, "payments", serde.String, serde.Int64)
	for i, v := range []int64{-5, -9, -2, -7} {
		in.PipeInput("c-1", v, time.UnixMilli(int64(i)))
	}
	counts, _ := testdriver.CreateOutputTopic(d, "counts", serde.String, serde.Int64).ReadKeyValuesToMap()
	maxes, _ := testdriver.CreateOutputTopic(d, "max", serde.String, serde.Int64).ReadKeyValuesToMap()
	if counts["c-1"] != 4 || maxes["c-1"] != -2 {
		t.Fatalf("count %d (want 4), max %d (want -2: the first value starts a reduce)", counts["c-1"], maxes["c-1"])
	}
}

// TestStreamTableJoinsMatchBruteForce interleaves table updates and stream
// records at random and compares inner and left joins with a replay.
func TestStreamTableJoinsMatchBruteForce(t *testing.T) {
	for seed := range uint64(10) {
		rng := rand.New(rand.NewPCG(seed, 11))
		sb := dsl.NewStreamsBuilder(dsl.Options{})
		customers := dsl.Table(sb, "customers", serde.String, serde.String, "customers-store", dsl.Materialized{})
		orders := dsl.Stream(sb, "orders", serde.String, serde.Int64)
		dsl.Join(orders, customers, func(_ string, amount int64, name string) string {
			return fmt.Sprint(name, ":", amount)
		}, serde.String).To("enriched")
		dsl.LeftJoin(orders, customers, func(_ string, amount int64, name string, found bool) string {
			return fmt.Sprint(name, ":", amount, ":", found)
		}, serde.String).To("enriched-left")
		top, err := sb.Build()
		if err != nil {
			t.Fatal(err)
		}
		d, err := testdriver.New(top, testdriver.Config{Partitions: map[string]int32{"customers": 2, "orders": 2}})
		if err != nil {
			t.Fatal(err)
		}
		table := map[string]string{}
		var inner, left []string
		tin := testdriver.CreateInputTopic(d, "customers", serde.String, serde.String)
		sin := testdriver.CreateInputTopic(d, "orders", serde.String, serde.Int64)
		for i := range 400 {
			key := fmt.Sprint("c", rng.IntN(8))
			ts := time.UnixMilli(int64(i))
			if rng.IntN(3) == 0 {
				name := fmt.Sprint("name", i)
				table[key] = name
				tin.PipeInput(key, name, ts)
				continue
			}
			amount := rng.Int64N(100)
			sin.PipeInput(key, amount, ts)
			name, found := table[key]
			if found {
				inner = append(inner, key+"="+fmt.Sprint(name, ":", amount))
			}
			left = append(left, key+"="+fmt.Sprint(name, ":", amount, ":", found))
		}
		for topic, want := range map[string][]string{"enriched": inner, "enriched-left": left} {
			recs, _ := testdriver.CreateOutputTopic(d, topic, serde.String, serde.String).ReadRecords()
			var got []string
			for _, r := range recs {
				got = append(got, r.Key+"="+r.Value)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("seed %d %s:\n got %v\nwant %v", seed, topic, got, want)
			}
		}
		d.Close()
	}
}

func TestJoinOfTopicsWithDifferentPartitionCountsIsRefusedNamingBoth(t *testing.T) {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	customers := dsl.Table(sb, "customers", serde.String, serde.String, "customers-store", dsl.Materialized{})
	dsl.Join(dsl.Stream(sb, "orders", serde.String, serde.Int64), customers, func(_ string, a int64, n string) string { return n }, serde.String).To("out")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	_, err = testdriver.New(top, testdriver.Config{Partitions: map[string]int32{"customers": 2, "orders": 3}})
	if err == nil || !strings.Contains(err.Error(), "customers") || !strings.Contains(err.Error(), "orders") {
		t.Fatalf("error %v, want one naming both topics", err)
	}
}

type sideEvent struct {
	left bool
	key  string
	ts   int64
	val  string
}

// joinOracle computes a windowed join from its definition, not from the
// join's buffers: a record is accepted unless it arrives when stream time
// has passed its timestamp + d + g; every two accepted records of one key
// on opposite sides at most d apart make a pair; an accepted record with
// no accepted partner is emitted alone (if the kind keeps its side) once
// stream time has passed the last moment a partner could have been
// accepted, its timestamp + 2d + g.
func joinOracle(events []sideEvent, d, g int64, kind dsl.JoinKind) (out []string, dropped int) {
	var accepted []sideEvent
	st := int64(-1 << 62)
	for _, e := range events {
		st = max(st, e.ts)
		if e.ts+d+g < st {
			dropped++
			continue
		}
		accepted = append(accepted, e)
	}
	for i, a := range accepted {
		paired := false
		for j, b := range accepted {
			if a.left == b.left || a.key != b.key || a.ts-b.ts > d || b.ts-a.ts > d {
				continue
			}
			paired = true
			if a.left && i != j {
				out = append(out, a.key+":"+a.val+"+"+b.val)
			}
		}
		if paired || a.ts+2*d+g >= st || !(kind == dsl.JoinOuter || kind == dsl.JoinLeft && a.left) {
			continue
		}
		if a.left {
			out = append(out, a.key+":"+a.val+"+-")
		} else {
			out = append(out, a.key+":-+"+a.val)
		}
	}
	return out, dropped
}

func TestStreamStreamJoinsMatchBruteForce(t *testing.T) {
	w := dsl.JoinWindows{TimeDifference: 3 * time.Second, Grace: 2 * time.Second}
	for _, kind := range []dsl.JoinKind{dsl.JoinInner, dsl.JoinLeft, dsl.JoinOuter} {
		for seed := range uint64(8) {
			rng := rand.New(rand.NewPCG(seed, uint64(kind)+20))
			m := prometheus.NewRegistry()
			d := joinTopology(t, w, kind, m)
			var events []sideEvent
			now := int64(100_000)
			for i := range 300 {
				now += 500 * rng.Int64N(3)
				ts := now - 500*rng.Int64N(6)
				if rng.IntN(25) == 0 {
					ts = now - 15_000
				}
				e := sideEvent{left: rng.IntN(2) == 0, key: fmt.Sprint("k", rng.IntN(3)), ts: ts, val: fmt.Sprint("v", i)}
				events = append(events, e)
				topic := "views"
				if e.left {
					topic = "clicks"
				}
				if err := testdriver.CreateInputTopic(d, topic, serde.String, serde.String).PipeInput(e.key, e.val, time.UnixMilli(e.ts)); err != nil {
					t.Fatal(err)
				}
			}
			want, wantDropped := joinOracle(events, w.TimeDifference.Milliseconds(), w.Grace.Milliseconds(), kind)
			recs, _ := testdriver.CreateOutputTopic(d, "joined", serde.String, serde.String).ReadRecords()
			var got []string
			for _, r := range recs {
				got = append(got, r.Key+":"+r.Value)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("kind %d seed %d: join differs\n got %d %v\nwant %d %v", kind, seed, len(got), got, len(want), want)
			}
			if dropped := lateDrops(t, m); dropped != wantDropped || dropped == 0 {
				t.Fatalf("kind %d seed %d: dropped %d, want %d (and some)", kind, seed, dropped, wantDropped)
			}
		}
	}
}

func TestStreamFromTakesEventTimeFromTheExtractor(t *testing.T) {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	clicks := dsl.StreamFrom(sb, exactly.Source[string, int64]{
		Topics: []string{"clicks"}, Keys: serde.String, Values: serde.Int64,
		Timestamp: func(rec exactly.Record[string, int64]) (time.Time, error) { return time.UnixMilli(rec.Value), nil },
	})
	dsl.WindowedCount(clicks.GroupByKey(), dsl.TumblingWindows(10*time.Second, 0), "per-window", dsl.Materialized{}).To("counts")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, testdriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	in := testdriver.CreateInputTopic(d, "clicks", serde.String, serde.Int64)
	for _, ms := range []int64{1_000, 12_000, 15_000} { // the Kafka timestamps all say 0
		if err := in.PipeInput("k", ms, time.UnixMilli(0)); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := testdriver.CreateOutputTopic(d, "counts", dsl.WindowedSerde(serde.String), serde.Int64).ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]int64{} // window start → latest count
	for _, r := range recs {
		got[r.Key.Start.UnixMilli()] = r.Value
	}
	if want := map[int64]int64{0: 1, 10_000: 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("counts by window start %v, want %v", got, want)
	}
}

func joinTopology(t *testing.T, w dsl.JoinWindows, kind dsl.JoinKind, reg prometheus.Registerer) *testdriver.Driver {
	sb := dsl.NewStreamsBuilder(dsl.Options{Registerer: reg})
	dsl.JoinStreams(dsl.Stream(sb, "clicks", serde.String, serde.String), dsl.Stream(sb, "views", serde.String, serde.String),
		w, kind, "click-view", func(_ string, j dsl.Joined[string, string]) string {
			l, r := "-", "-"
			if j.HasLeft {
				l = j.Left
			}
			if j.HasRight {
				r = j.Right
			}
			return l + "+" + r
		}, serde.String, dsl.Materialized{}).To("joined")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, testdriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestStreamJoinKeepsRecordsUntilNoPartnerCanArrive: a right record at
// 100 is still joined by a left record at 105 that arrives after an
// unrelated record moved stream time to 111 (difference 10 ms, no
// grace): the left record is on time (105 + 10 >= 111), so its partner
// must still be there.
func TestStreamJoinKeepsRecordsUntilNoPartnerCanArrive(t *testing.T) {
	for _, kind := range []dsl.JoinKind{dsl.JoinInner, dsl.JoinLeft, dsl.JoinOuter} {
		d := joinTopology(t, dsl.JoinWindows{TimeDifference: 10 * time.Millisecond}, kind, nil)
		pipe := func(topic, key, value string, ts int64) {
			if err := testdriver.CreateInputTopic(d, topic, serde.String, serde.String).PipeInput(key, value, time.UnixMilli(ts)); err != nil {
				t.Fatal(err)
			}
		}
		pipe("views", "k", "right", 100)
		pipe("views", "other", "unrelated", 111)
		pipe("clicks", "k", "left", 105)
		recs, _ := testdriver.CreateOutputTopic(d, "joined", serde.String, serde.String).ReadRecords()
		var got []string
		for _, r := range recs {
			got = append(got, r.Key+":"+r.Value)
		}
		if !slices.Equal(got, []string{"k:left+right"}) {
			t.Fatalf("kind %d: joined %v, want the one pair and no unpaired result", kind, got)
		}
	}
}

// TestStreamJoinTellsApartRecordsOfOneOffset: a FlatMap gives its records
// the offset of their input; each must still be a record of its own in
// the join's buffer.
func TestStreamJoinTellsApartRecordsOfOneOffset(t *testing.T) {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	lefts := dsl.FlatMap(dsl.Stream(sb, "batches", serde.String, serde.String), func(k, v string) []dsl.KeyValue[string, string] {
		var out []dsl.KeyValue[string, string]
		for _, part := range strings.Split(v, ",") {
			out = append(out, dsl.KeyValue[string, string]{Key: k, Value: part})
		}
		return out
	}, serde.String, serde.String)
	dsl.JoinStreams(lefts, dsl.Stream(sb, "views", serde.String, serde.String), dsl.JoinWindows{TimeDifference: time.Second}, dsl.JoinInner, "j",
		func(_ string, j dsl.Joined[string, string]) string { return j.Left + "+" + j.Right }, serde.String, dsl.Materialized{}).To("joined")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, testdriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	testdriver.CreateInputTopic(d, "batches", serde.String, serde.String).PipeInput("k", "a,b,c", time.UnixMilli(10))
	testdriver.CreateInputTopic(d, "views", serde.String, serde.String).PipeInput("k", "v", time.UnixMilli(10))
	recs, _ := testdriver.CreateOutputTopic(d, "joined", serde.String, serde.String).ReadRecords()
	var got []string
	for _, r := range recs {
		got = append(got, r.Value)
	}
	if !slices.Equal(got, []string{"a+v", "b+v", "c+v"}) {
		t.Fatalf("joined %v, want each of the three records paired", got)
	}
}

func TestStreamStreamJoinSurvivesCrashes(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	var events []sideEvent
	now := int64(100_000)
	for i := range 200 {
		now += 500 * rng.Int64N(3)
		events = append(events, sideEvent{left: rng.IntN(2) == 0, key: fmt.Sprint("k", rng.IntN(3)), ts: now - 500*rng.Int64N(6), val: fmt.Sprint("v", i)})
	}
	checkCrashEquivalence(t, crashCase{
		build: func(t *testing.T) *exactly.Topology {
			sb := dsl.NewStreamsBuilder(dsl.Options{})
			dsl.JoinStreams(dsl.Stream(sb, "clicks", serde.String, serde.String), dsl.Stream(sb, "views", serde.String, serde.String),
				dsl.JoinWindows{TimeDifference: 2 * time.Second, Grace: time.Second}, dsl.JoinOuter, "click-view",
				func(_ string, j dsl.Joined[string, string]) string { return j.Left + "+" + j.Right }, serde.String, dsl.Materialized{}).To("joined")
			top, err := sb.Build()
			if err != nil {
				t.Fatal(err)
			}
			return top
		},
		steps: len(events),
		step: func(d *testdriver.Driver, i int) error {
			topic := "views"
			if events[i].left {
				topic = "clicks"
			}
			return testdriver.CreateInputTopic(d, topic, serde.String, serde.String).PipeInput(events[i].key, events[i].val, time.UnixMilli(events[i].ts))
		},
		outputs: []string{"joined"},
	}, 8)
}
