package testdriver_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
)

// repartitionedCounts counts words per first letter: the words are re-keyed
// by their letter, so they pass through a repartition topic before the
// count, and the counts go to "letter-counts".
func repartitionedCounts(t *testing.T) *exactly.Topology {
	t.Helper()
	sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: "test"})
	words := dsl.Stream(sb, "words", serde.String, serde.String)
	byLetter := dsl.SelectKey(words, func(_, w string) string { return w[:1] }, serde.String)
	dsl.Count(byLetter.GroupByKey(), "letter-counts-store").ToStream().To("letter-counts")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	if len(top.RepartitionTopics()) != 1 {
		t.Fatalf("repartition topics %v, want one", top.RepartitionTopics())
	}
	return top
}

// TestDrainCommitsThroughEveryRepartitionHop pipes words under manual
// commits: one Commit leaves the counts behind the repartition topic, one
// Drain brings every count out, with the counts an automatic-commit run
// gives.
func TestDrainCommitsThroughEveryRepartitionHop(t *testing.T) {
	top := repartitionedCounts(t)
	words := []string{"apple", "avocado", "banana", "blueberry", "cherry", "apricot"}
	want := map[string]int64{"a": 3, "b": 2, "c": 1}
	for _, manual := range []bool{false, true} {
		t.Run(fmt.Sprintf("ManualCommit=%v", manual), func(t *testing.T) {
			d := newDriver(t, top, testdriver.Config{ManualCommit: manual, Partitions: map[string]int32{"words": 2, top.RepartitionTopics()[0]: 2}})
			in := testdriver.CreateInputTopic(d, "words", serde.String, serde.String)
			for i, w := range words {
				if err := in.PipeInput(w, w, time.UnixMilli(int64(i))); err != nil {
					t.Fatal(err)
				}
			}
			out := testdriver.CreateOutputTopic(d, "letter-counts", serde.String, serde.Int64)
			if manual {
				if err := d.Commit(); err != nil {
					t.Fatal(err)
				}
				if n := out.QueueSize(); n != 0 {
					t.Fatalf("%d counts after one Commit; the repartitioned words should wait for the next", n)
				}
			}
			if err := d.Drain(); err != nil {
				t.Fatal(err)
			}
			got, err := out.ReadKeyValuesToMap()
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("counts after Drain %v, want %v", got, want)
			}
			if err := d.Drain(); err != nil || !out.IsEmpty() {
				t.Fatalf("a second Drain: %v, %d new records; want nothing to do", err, out.QueueSize())
			}
		})
	}
}

// TestEveryCallFailsWhileCrashed crashes the driver, by Crash and by a
// task's error: every call that needs the application returns ErrCrashed
// and changes nothing, the committed topics stay readable, and Restart
// makes the calls work again.
func TestEveryCallFailsWhileCrashed(t *testing.T) {
	for _, how := range []string{"Crash", "CrashMidCommit", "a failed task"} {
		t.Run(how, func(t *testing.T) {
			d := newDriver(t, countingTopology(t, false, exactly.FailOnError), testdriver.Config{ManualCommit: true})
			in := testdriver.CreateInputTopic(d, "input", serde.String, serde.String)
			if err := in.PipeInput("a", "1", time.UnixMilli(1)); err != nil {
				t.Fatal(err)
			}
			if err := d.Commit(); err != nil {
				t.Fatal(err)
			}
			switch how {
			case "Crash":
				d.Crash()
			case "CrashMidCommit":
				if err := d.CrashMidCommit(); err != nil {
					t.Fatal(err)
				}
			default:
				if err := in.PipeInput("a", "fail", time.UnixMilli(2)); err == nil {
					t.Fatal("the failing record did not fail")
				}
			}
			inputs := len(d.TopicRecords("input", 0))
			calls := map[string]error{
				"PipeInput":        in.PipeInput("b", "2", time.UnixMilli(3)),
				"PipeBytes":        d.PipeBytes("input", []byte("b"), []byte("2"), time.UnixMilli(3)),
				"PipeRaw":          d.PipeRaw(exactly.SourceRecord{Topic: "input", Offset: 100, Key: []byte("b"), Value: []byte("2")}),
				"Commit":           d.Commit(),
				"CrashMidCommit":   d.CrashMidCommit(),
				"AdvanceWallClock": d.AdvanceWallClock(time.Second),
				"Drain":            d.Drain(),
			}
			_, calls["KeyValueStore"] = testdriver.KeyValueStore[string, int64](d, "counts", 0)
			_, calls["StoreEntries"] = d.StoreEntries("counts")
			_, calls["RunWithCrashes"] = d.RunWithCrashes(testdriver.CrashSchedule{}, 1, func(int) error { return nil })
			for call, err := range calls {
				if !errors.Is(err, testdriver.ErrCrashed) {
					t.Errorf("%s while crashed: %v, want ErrCrashed", call, err)
				}
				if how == "a failed task" && !strings.Contains(fmt.Sprint(err), "refusing input a") {
					t.Errorf("%s while crashed: %v, want it to name the task's error", call, err)
				}
			}
			if n := len(d.TopicRecords("input", 0)); n != inputs {
				t.Fatalf("input holds %d records after the refused calls, want %d", n, inputs)
			}
			if out := testdriver.CreateOutputTopic(d, "output", serde.String, serde.JSON[counted]()); out.QueueSize() != 1 {
				t.Fatalf("%d committed outputs readable while crashed, want 1", out.QueueSize())
			}
			err := d.Restart()
			if how == "a failed task" {
				// The failed record is met again: the application stays down.
				if err == nil || !errors.Is(d.Commit(), testdriver.ErrCrashed) {
					t.Fatalf("restart: %v; want the failed record to fail again and the driver to stay crashed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := in.PipeInput("b", "2", time.UnixMilli(3)); err != nil {
				t.Fatalf("PipeInput after Restart: %v", err)
			}
			if err := d.Commit(); err != nil {
				t.Fatalf("Commit after Restart: %v", err)
			}
		})
	}
}

// TestPersistentInMemoryOutlivesCrashesAsADiskDoes keeps a persistent
// store without a changelog, which nothing restores: what a commit applied
// survives a crash both on Pebble and in the driver's memory, and what was
// not committed is gone in both.
func TestPersistentInMemoryOutlivesCrashesAsADiskDoes(t *testing.T) {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"input"}, Keys: serde.String, Values: serde.String})
	exactly.AddProcessor(b, "count", func() exactly.Processor[string, string, string, counted] { return &counter{} }, "in")
	exactly.AddStore(b, exactly.Store[string, int64]{Name: "counts", Keys: serde.String, Values: serde.Int64, Persistent: true, DisableChangelog: true}, "count")
	exactly.AddSink(b, "out", exactly.Sink[string, counted]{Topic: "output", Keys: serde.String, Values: serde.JSON[counted]()}, "count")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	for _, inMemory := range []bool{false, true} {
		t.Run(fmt.Sprintf("PersistentInMemory=%v", inMemory), func(t *testing.T) {
			d := newDriver(t, top, testdriver.Config{ManualCommit: true, PersistentInMemory: inMemory})
			in := testdriver.CreateInputTopic(d, "input", serde.String, serde.String)
			in.PipeInput("a", "1", time.UnixMilli(1))
			in.PipeInput("a", "2", time.UnixMilli(2))
			if err := d.CrashMidCommit(); err != nil {
				t.Fatal(err)
			}
			if err := d.Restart(); err != nil {
				t.Fatal(err)
			}
			in.PipeInput("b", "3", time.UnixMilli(3))
			if err := d.Commit(); err != nil {
				t.Fatal(err)
			}
			in.PipeInput("b", "4", time.UnixMilli(4))
			d.Crash()
			if err := d.Restart(); err != nil {
				t.Fatal(err)
			}
			kv, err := testdriver.KeyValueStore[string, int64](d, "counts", 0)
			if err != nil {
				t.Fatal(err)
			}
			// a's writes were committed to Kafka but never applied (the crash
			// came mid-commit) and there is no changelog to restore them: a
			// is gone. b's first write was applied; the second is
			// redelivered and applied again after the restart.
			for key, want := range map[string]int64{"a": 0, "b": 2} {
				if got, _, err := kv.Get(key); err != nil || got != want {
					t.Fatalf("store holds %s=%d (%v), want %d", key, got, err, want)
				}
			}
		})
	}
}

// TestRunWithCrashesIsReproducibleAndCrashesOfBothKinds runs one schedule
// twice: the same seed gives the same run, with crashes of both kinds.
func TestRunWithCrashesIsReproducibleAndCrashesOfBothKinds(t *testing.T) {
	top := countingTopology(t, true, exactly.FailOnError)
	inputs := randomInputs(rand.New(rand.NewPCG(1, 1)), 200)
	var runs []testdriver.CrashRun
	for range 2 {
		d := newDriver(t, top, testdriver.Config{PersistentInMemory: true})
		in := testdriver.CreateInputTopic(d, "input", serde.String, serde.String)
		run, err := d.RunWithCrashes(testdriver.CrashSchedule{Seed: 42}, len(inputs), func(i int) error {
			return in.PipeInput(inputs[i].key, inputs[i].value, inputs[i].ts)
		})
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, run)
	}
	if runs[0] != runs[1] {
		t.Fatalf("one seed, two runs: %v and %v", runs[0], runs[1])
	}
	if r := runs[0]; r.Steps != len(inputs) || r.Commits == 0 || r.Crashes == 0 || r.MidCommitCrashes == 0 {
		t.Fatalf("run %v: want every step and commits and crashes of both kinds", r)
	}
	d := newDriver(t, top, testdriver.Config{})
	in := testdriver.CreateInputTopic(d, "input", serde.String, serde.String)
	_, err := d.RunWithCrashes(testdriver.CrashSchedule{Seed: 1}, 3, func(i int) error {
		return in.PipeInput("k", []string{"ok", "fail", "ok"}[i], time.UnixMilli(int64(i)))
	})
	if err == nil || !strings.Contains(err.Error(), "step 1") {
		t.Fatalf("a failing step: %v, want an error naming step 1", err)
	}
}
