package dsl_test

import (
	"bytes"
	"errors"
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
)

func pipeEvents(t *testing.T, d *testdriver.Driver, topic string, events []event) {
	t.Helper()
	in := testdriver.CreateInputTopic(d, topic, serde.String, serde.String)
	for _, e := range events {
		if err := in.PipeInput(e.key, "c", time.UnixMilli(e.ts)); err != nil {
			t.Fatal(err)
		}
	}
}

func finalTopology(w dsl.TimeWindows) func(t *testing.T) *exactly.Topology {
	return func(t *testing.T) *exactly.Topology {
		sb := dsl.NewStreamsBuilder(dsl.Options{})
		dsl.WindowedCount(dsl.Stream(sb, "clicks", serde.String, serde.String).GroupByKey(), w, "counts", dsl.Materialized{}).
			Suppress("final", dsl.UntilWindowCloses(dsl.BufferConfig{})).To("final")
		top, err := sb.Build()
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
}

// TestSuppressUntilWindowClosesEmitsEachFinalCountOnce: downstream of an
// aggregation that emits every update, the suppression emits exactly the
// windows' final counts, each once, when stream time closes them.
func TestSuppressUntilWindowClosesEmitsEachFinalCountOnce(t *testing.T) {
	shapes := map[string]dsl.TimeWindows{
		"tumbling": dsl.TumblingWindows(10*time.Second, 5*time.Second),
		"hopping":  dsl.HoppingWindows(10*time.Second, 4*time.Second, 3*time.Second),
		"no grace": dsl.TumblingWindows(7*time.Second, 0),
	}
	for name, w := range shapes {
		for seed := range uint64(8) {
			events := randomEvents(rand.New(rand.NewPCG(seed, 3)), 300)
			want := oracle(events, w).final
			d, err := testdriver.New(finalTopology(w)(t), testdriver.Config{})
			if err != nil {
				t.Fatal(err)
			}
			pipeEvents(t, d, "clicks", events)
			got := map[window]int64{}
			for k, vs := range windowEmissions(t, d, "final") {
				if len(vs) != 1 {
					t.Fatalf("%s seed %d: window %s emitted %v, want once", name, seed, k, vs)
				}
				var key string
				var start, end, n int64
				fmt.Sscanf(strings.Replace(k, "@", " ", 1), "%s %d-%d", &key, &start, &end)
				fmt.Sscan(vs[0], &n)
				got[window{key, start}] = n
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%s seed %d: final counts\n got %v\nwant %v", name, seed, got, want)
			}
			// Four keys, each with at most (size + grace) / advance + 1
			// windows open.
			if n, _ := d.StoreEntries("final-buffer"); n > int64(4*((w.Size+w.Grace)/w.Advance+1)) {
				t.Fatalf("%s seed %d: the buffer holds %d windows; closed ones must leave it", name, seed, n)
			}
			d.Close()
		}
	}
}

func TestSuppressUntilSessionCloses(t *testing.T) {
	w := dsl.SessionWindows{Gap: 2 * time.Second, Grace: time.Second}
	for seed := range uint64(8) {
		events := randomEvents(rand.New(rand.NewPCG(seed, 5)), 300)
		emitted, _ := sessionOracle(events, w.Gap.Milliseconds(), w.Grace.Milliseconds())
		st := int64(0)
		for _, e := range events {
			st = max(st, e.ts)
		}
		want := map[string][]string{}
		for k, vs := range emitted {
			var key string
			var start, end int64
			fmt.Sscanf(strings.Replace(k, "@", " ", 1), "%s %d-%d", &key, &start, &end)
			if last := vs[len(vs)-1]; last != "<nil>" && end-1+w.Gap.Milliseconds()+w.Grace.Milliseconds() < st {
				want[k] = []string{last}
			}
		}
		sb := dsl.NewStreamsBuilder(dsl.Options{})
		dsl.SessionCount(dsl.Stream(sb, "clicks", serde.String, serde.String).GroupByKey(), w, "sessions", dsl.Materialized{}).
			Suppress("final", dsl.UntilWindowCloses(dsl.BufferConfig{})).To("final")
		top, err := sb.Build()
		if err != nil {
			t.Fatal(err)
		}
		d, err := testdriver.New(top, testdriver.Config{})
		if err != nil {
			t.Fatal(err)
		}
		pipeEvents(t, d, "clicks", events)
		sameByKey(t, fmt.Sprint("seed ", seed), windowEmissions(t, d, "final"), want)
		d.Close()
	}
}

func timeLimitTopology(limit time.Duration, buffer dsl.BufferConfig) func(t *testing.T) *exactly.Topology {
	return func(t *testing.T) *exactly.Topology {
		sb := dsl.NewStreamsBuilder(dsl.Options{})
		dsl.Count(dsl.Stream(sb, "clicks", serde.String, serde.String).GroupByKey(), "counts", dsl.Materialized{}).
			Suppress("rate-limited", dsl.UntilTimeLimit(limit, buffer)).To("limited")
		top, err := sb.Build()
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
}

// timeLimitOracle replays a count per key through a buffer that holds
// each key's latest count until limit after its first held update, and
// when over maxRecords emits the entry due soonest (ties by key bytes).
func timeLimitOracle(events []event, limit int64, maxRecords int) map[string][]string {
	type held struct {
		key      string
		deadline int64
		n        int64
	}
	var buf []*held
	counts := map[string]int64{}
	out := map[string][]string{}
	emit := func(i int) {
		out[buf[i].key] = append(out[buf[i].key], fmt.Sprint(buf[i].n))
		buf = slices.Delete(buf, i, i+1)
	}
	soonest := func() int {
		best := 0
		for i, h := range buf {
			b := buf[best]
			if h.deadline < b.deadline || h.deadline == b.deadline && bytes.Compare([]byte(h.key), []byte(b.key)) < 0 {
				best = i
			}
		}
		return best
	}
	st := int64(-1 << 62)
	for _, e := range events {
		st = max(st, e.ts)
		counts[e.key]++
		i := slices.IndexFunc(buf, func(h *held) bool { return h.key == e.key })
		if i < 0 {
			buf = append(buf, &held{key: e.key, deadline: e.ts + limit})
			i = len(buf) - 1
		}
		buf[i].n = counts[e.key]
		for len(buf) > 0 && buf[soonest()].deadline <= st {
			emit(soonest())
		}
		for maxRecords > 0 && len(buf) > maxRecords {
			emit(soonest())
		}
	}
	return out
}

func TestSuppressUntilTimeLimitMatchesBruteForce(t *testing.T) {
	for _, maxRecords := range []int{0, 2} {
		for seed := range uint64(8) {
			events := randomEvents(rand.New(rand.NewPCG(seed, 7)), 300)
			want := timeLimitOracle(events, 3000, maxRecords)
			d, err := testdriver.New(timeLimitTopology(3*time.Second, dsl.BufferConfig{MaxRecords: maxRecords, WhenFull: dsl.EmitEarlyWhenFull})(t), testdriver.Config{})
			if err != nil {
				t.Fatal(err)
			}
			pipeEvents(t, d, "clicks", events)
			sameByKey(t, fmt.Sprint("max ", maxRecords, " seed ", seed), recordsByKey(d, "limited", asInt64), want)
			d.Close()
		}
	}
}

func TestSuppressionBufferFullFailsTheRecord(t *testing.T) {
	d, err := testdriver.New(timeLimitTopology(time.Hour, dsl.BufferConfig{MaxRecords: 2})(t), testdriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	in := testdriver.CreateInputTopic(d, "clicks", serde.String, serde.String)
	for i, k := range []string{"a", "b", "a"} {
		if err := in.PipeInput(k, "c", time.UnixMilli(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	err = in.PipeInput("c", "c", time.UnixMilli(3))
	var re *exactly.RecordError
	if !errors.As(err, &re) || re.Node != "rate-limited" || !strings.Contains(err.Error(), "buffer full (3 records") {
		t.Fatalf("error %v, want the third key to fail in node rate-limited, naming the full buffer", err)
	}
}

func TestSuppressionMistakesAreReportedAtBuild(t *testing.T) {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	clicks := dsl.Stream(sb, "clicks", serde.String, serde.String)
	dsl.Count(clicks.GroupByKey(), "counts", dsl.Materialized{}).Suppress("not-windowed", dsl.UntilWindowCloses(dsl.BufferConfig{}))
	dsl.WindowedCount(clicks.GroupByKey(), dsl.TumblingWindows(time.Second, 0), "w", dsl.Materialized{}).
		Suppress("early", dsl.UntilWindowCloses(dsl.BufferConfig{MaxRecords: 5, WhenFull: dsl.EmitEarlyWhenFull}))
	_, err := sb.Build()
	for _, want := range []string{`suppression "not-windowed": UntilWindowCloses needs a windowed table`, `suppression "early": UntilWindowCloses cannot emit early`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Build error %v, want %q", err, want)
		}
	}
}

func TestSuppressionSurvivesCrashes(t *testing.T) {
	events := randomEvents(rand.New(rand.NewPCG(11, 11)), 200)
	t.Run("until window closes", func(t *testing.T) {
		checkCrashEquivalence(t, clicksCrashCase(finalTopology(dsl.TumblingWindows(5*time.Second, 2*time.Second)), events, "final"), 8)
	})
	t.Run("until time limit", func(t *testing.T) {
		checkCrashEquivalence(t, clicksCrashCase(timeLimitTopology(3*time.Second, dsl.BufferConfig{MaxRecords: 2, WhenFull: dsl.EmitEarlyWhenFull}),
			events, "limited"), 8)
	})
}
