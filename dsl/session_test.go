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
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/prometheus/client_golang/prometheus"
)

// windowEmission renders one update of a windowed table: the window, and
// the new value or "<nil>" for a deletion.
func windowEmissions(t *testing.T, d *testdriver.Driver, topic string) map[string][]string {
	t.Helper()
	keys := dsl.WindowedSerde(serde.String)
	out := map[string][]string{}
	for _, r := range d.TopicRecords(topic, 0) {
		w, err := keys.Deserialize(r.Key)
		if err != nil {
			t.Fatal(err)
		}
		k := fmt.Sprintf("%s@%d-%d", w.Key, w.Start.UnixMilli(), w.End.UnixMilli())
		v := "<nil>"
		if r.Value != nil {
			n, _ := serde.Int64.Deserialize(r.Value)
			v = fmt.Sprint(n)
		}
		out[k] = append(out[k], v)
	}
	return out
}

// sessionOracle replays events by the definition of session windows: a
// record later than ts + gap + grace behind stream time is dropped;
// otherwise it joins every open session it is within gap of (open: last
// record + gap + grace not behind stream time), merging them; the merged
// sessions are deleted and the new one emitted with its count.
func sessionOracle(events []event, gap, grace int64) (map[string][]string, int) {
	type sess struct {
		key        string
		first, end int64
		n          int64
	}
	var sessions []*sess
	out := map[string][]string{}
	emit := func(s *sess, v string) {
		k := fmt.Sprintf("%s@%d-%d", s.key, s.first, s.end+1)
		out[k] = append(out[k], v)
	}
	dropped := 0
	st := int64(-1 << 62)
	for _, e := range events {
		st = max(st, e.ts)
		if e.ts+gap+grace < st {
			dropped++
			continue
		}
		merged := &sess{key: e.key, first: e.ts, end: e.ts, n: 1}
		var kept []*sess
		var replaced []*sess
		for _, s := range sessions {
			open := s.end+gap+grace >= st
			if s.key == e.key && open && s.first-gap <= e.ts && e.ts <= s.end+gap {
				merged.first, merged.end, merged.n = min(merged.first, s.first), max(merged.end, s.end), merged.n+s.n
				replaced = append(replaced, s)
				continue
			}
			if open {
				kept = append(kept, s)
			}
		}
		slices.SortFunc(replaced, func(a, b *sess) int { return int(a.end - b.end) })
		for _, s := range replaced {
			if s.first != merged.first || s.end != merged.end {
				emit(s, "<nil>")
			}
		}
		emit(merged, fmt.Sprint(merged.n))
		sessions = append(kept, merged)
	}
	return out, dropped
}

// closedFinals is what an aggregation emitting on window close emits, by
// the definition of the emit strategy, given what it emits on every
// update: each window's last value, once, for the windows stream time
// (the largest timestamp of events) has closed (those it reached their
// end + closeAfter), except windows whose last update deleted them.
func closedFinals(t *testing.T, updates map[string][]string, events []event, closeAfter int64) map[string][]string {
	t.Helper()
	st := int64(-1 << 62)
	for _, e := range events {
		st = max(st, e.ts)
	}
	out := map[string][]string{}
	for k, vs := range updates {
		var start, end int64
		if _, err := fmt.Sscanf(k[strings.LastIndexByte(k, '@')+1:], "%d-%d", &start, &end); err != nil {
			t.Fatalf("window %q: %v", k, err)
		}
		if last := vs[len(vs)-1]; last != "<nil>" && st >= end+closeAfter {
			out[k] = []string{last}
		}
	}
	if len(out) == 0 || len(out) == len(updates) {
		t.Fatalf("%d of %d windows closed: the input does not tell emitting on close from emitting on update", len(out), len(updates))
	}
	return out
}

func sessionTopology(w dsl.SessionWindows, reg prometheus.Registerer) func(t *testing.T) *exactly.Topology {
	return func(t *testing.T) *exactly.Topology {
		sb := dsl.NewStreamsBuilder(dsl.Options{Registerer: reg})
		dsl.SessionCount(dsl.Stream(sb, "clicks", serde.String, serde.String).GroupByKey(), w, "sessions", dsl.Materialized{}).To("sessions")
		top, err := sb.Build()
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
}

func TestSessionWindowsMatchBruteForce(t *testing.T) {
	for _, w := range []dsl.SessionWindows{{Gap: 2 * time.Second, Grace: 3 * time.Second}, {Gap: 1500 * time.Millisecond},
		{Gap: 2 * time.Second, Grace: time.Second, Emit: dsl.OnWindowClose}} {
		for seed := range uint64(8) {
			events := randomEvents(rand.New(rand.NewPCG(seed, 90)), 300)
			updates, wantDropped := sessionOracle(events, w.Gap.Milliseconds(), w.Grace.Milliseconds())
			want := updates
			if w.Emit == dsl.OnWindowClose {
				want = closedFinals(t, updates, events, w.Gap.Milliseconds()+w.Grace.Milliseconds())
			}
			m := prometheus.NewRegistry()
			d, err := testdriver.New(sessionTopology(w, m)(t), testdriver.Config{})
			if err != nil {
				t.Fatal(err)
			}
			pipeEvents(t, d, "clicks", events)
			got := windowEmissions(t, d, "sessions")
			sameByKey(t, fmt.Sprintf("%+v seed %d", w, seed), got, want)
			merges := 0
			for _, vs := range updates {
				if slices.Contains(vs, "<nil>") {
					merges++
				}
			}
			if merges == 0 || wantDropped == 0 {
				t.Fatalf("seed %d: %d merges, %d late records: the input tests neither", seed, merges, wantDropped)
			}
			if dropped := lateDrops(t, m); dropped != wantDropped {
				t.Fatalf("seed %d: dropped %d, want %d", seed, dropped, wantDropped)
			}
			d.Close()
		}
	}
}

// clicksCrashCase pipes events into the topic clicks of build's topology
// and compares what it commits to output.
func clicksCrashCase(build func(t *testing.T) *exactly.Topology, events []event, output string) crashCase {
	return crashCase{
		build: build,
		steps: len(events),
		step: func(d *testdriver.Driver, i int) error {
			return testdriver.CreateInputTopic(d, "clicks", serde.String, serde.String).PipeInput(events[i].key, "c", time.UnixMilli(events[i].ts))
		},
		outputs: []string{output},
	}
}

func TestSessionWindowsSurviveCrashes(t *testing.T) {
	events := randomEvents(rand.New(rand.NewPCG(2, 2)), 200)
	for _, emit := range []dsl.EmitStrategy{dsl.OnWindowUpdate, dsl.OnWindowClose} {
		checkCrashEquivalence(t, clicksCrashCase(sessionTopology(dsl.SessionWindows{Gap: 2 * time.Second, Grace: time.Second, Emit: emit}, nil),
			events, "sessions"), 8)
	}
}

// slidingOracle replays events by the definition of sliding windows:
// after each record, the windows of all records kept so far (those
// ending at a record, and those starting just after one that hold a
// record) are recounted; each open window whose count changed, or that
// is new, is emitted.
func slidingOracle(events []event, diff, grace int64) (map[string][]string, int) {
	type window struct {
		key         string
		start, last int64
	}
	byKey := map[string][]int64{}
	prev := map[window]int64{}
	out := map[string][]string{}
	dropped := 0
	st := int64(-1 << 62)
	for _, e := range events {
		st = max(st, e.ts)
		if e.ts+1+diff+grace < st {
			dropped++
			continue
		}
		byKey[e.key] = append(byKey[e.key], e.ts)
		recs := byKey[e.key]
		count := func(w window) (n int64) {
			for _, ts := range recs {
				if w.start <= ts && ts <= w.last {
					n++
				}
			}
			return n
		}
		current := map[window]int64{}
		for _, ts := range recs {
			current[window{e.key, ts - diff, ts}] = 0
			right := window{e.key, ts + 1, ts + 1 + diff}
			if count(right) > 0 {
				current[right] = 0
			}
		}
		var changed []window
		for w := range current {
			n := count(w)
			if w.last+grace >= st && prev[w] != n {
				changed = append(changed, w)
			}
			prev[w] = n
		}
		slices.SortFunc(changed, func(a, b window) int { return int(a.start - b.start) })
		for _, w := range changed {
			k := fmt.Sprintf("%s@%d-%d", w.key, w.start, w.last+1)
			out[k] = append(out[k], fmt.Sprint(prev[w]))
		}
	}
	return out, dropped
}

func slidingTopology(w dsl.SlidingWindows, reg prometheus.Registerer) func(t *testing.T) *exactly.Topology {
	return func(t *testing.T) *exactly.Topology {
		sb := dsl.NewStreamsBuilder(dsl.Options{Registerer: reg})
		dsl.SlidingCount(dsl.Stream(sb, "clicks", serde.String, serde.String).GroupByKey(), w, "sliding", dsl.Materialized{}).To("sliding")
		top, err := sb.Build()
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
}

func TestSlidingWindowsMatchBruteForce(t *testing.T) {
	for _, w := range []dsl.SlidingWindows{{TimeDifference: 2 * time.Second, Grace: 2 * time.Second}, {TimeDifference: 1 * time.Second},
		{TimeDifference: 2 * time.Second, Grace: time.Second, Emit: dsl.OnWindowClose}} {
		for seed := range uint64(8) {
			events := randomEvents(rand.New(rand.NewPCG(seed, 100)), 250)
			want, wantDropped := slidingOracle(events, w.TimeDifference.Milliseconds(), w.Grace.Milliseconds())
			if w.Emit == dsl.OnWindowClose {
				want = closedFinals(t, want, events, w.Grace.Milliseconds())
			}
			m := prometheus.NewRegistry()
			d, err := testdriver.New(slidingTopology(w, m)(t), testdriver.Config{})
			if err != nil {
				t.Fatal(err)
			}
			pipeEvents(t, d, "clicks", events)
			sameByKey(t, fmt.Sprintf("%+v seed %d", w, seed), windowEmissions(t, d, "sliding"), want)
			if dropped := lateDrops(t, m); dropped != wantDropped || dropped == 0 {
				t.Fatalf("seed %d: dropped %d, want %d (and some)", seed, dropped, wantDropped)
			}
			entries, _ := d.StoreEntries("sliding")
			if entries > 200 {
				t.Fatalf("seed %d: the store keeps %d records: old ones are not pruned", seed, entries)
			}
			d.Close()
		}
	}
}

func TestSlidingWindowsSurviveCrashes(t *testing.T) {
	events := randomEvents(rand.New(rand.NewPCG(3, 3)), 200)
	for _, emit := range []dsl.EmitStrategy{dsl.OnWindowUpdate, dsl.OnWindowClose} {
		checkCrashEquivalence(t, clicksCrashCase(slidingTopology(dsl.SlidingWindows{TimeDifference: 2 * time.Second, Grace: time.Second, Emit: emit}, nil),
			events, "sliding"), 8)
	}
}
