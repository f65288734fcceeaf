package testdriver_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/exactly-go/exactly/testdriver"
)

// counted is what the counting topology emits for every input record.
type counted struct {
	Input string `json:"input"`
	Count int64  `json:"count"`
}

// counter counts records per key in a store, forwards one output per input
// naming the input, and on every 10 s of stream time emits a "tick" with
// the number of keys seen, so punctuator effects are part of the output.
type counter struct {
	ctx    exactly.ProcessorContext[string, counted]
	counts store.KeyValueStore[string, int64]
}

func (c *counter) Init(ctx exactly.ProcessorContext[string, counted]) error {
	c.ctx = ctx
	var err error
	if c.counts, err = exactly.GetKeyValueStore[string, int64](ctx, "counts"); err != nil {
		return err
	}
	_, err = ctx.Schedule(10*time.Second, exactly.StreamTime, func(ts time.Time) error {
		n, err := c.counts.ApproximateNumEntries()
		ctx.Forward(exactly.Record[string, counted]{Key: fmt.Sprint("tick-", ctx.TaskID().Partition), Value: counted{Input: fmt.Sprint("tick@", ts.UnixMilli()), Count: n}})
		return err
	})
	return err
}

func (c *counter) Process(rec exactly.Record[string, string]) error {
	if rec.Value == "fail" {
		return errors.New("refusing input " + rec.Key)
	}
	if rec.Value == "panic" {
		var m map[string]int
		//lint:ignore SA5000 a runtime panic is what the test provokes
		m["boom"]++
	}
	n, _, err := c.counts.Get(rec.Key)
	if err != nil {
		return err
	}
	if err := c.counts.Put(rec.Key, n+1); err != nil {
		return err
	}
	c.ctx.Forward(exactly.Record[string, counted]{Key: rec.Key, Value: counted{Input: rec.Value, Count: n + 1}})
	if rec.Value == "fail-after-effects" {
		return errors.New("failed after writing and forwarding")
	}
	return nil
}

func (c *counter) Close() error { return nil }

func countingTopology(t testing.TB, persistent bool, onError exactly.ErrorAction) *exactly.Topology {
	b := exactly.NewBuilder()
	b.OnDeserializationError(onError)
	b.OnProcessingError(onError)
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"input"}, Keys: serde.String, Values: serde.String})
	exactly.AddProcessor(b, "count", func() exactly.Processor[string, string, string, counted] { return &counter{} }, "in")
	exactly.AddStore(b, exactly.Store[string, int64]{Name: "counts", Keys: serde.String, Values: serde.Int64, Persistent: persistent}, "count")
	exactly.AddSink(b, "out", exactly.Sink[string, counted]{Topic: "output", Keys: serde.String, Values: serde.JSON[counted]()}, "count")
	exactly.AddDeadLetterSink(b, "dlq", "input-dlq", "in", "count")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func newDriver(t testing.TB, top *exactly.Topology, cfg testdriver.Config) *testdriver.Driver {
	d, err := testdriver.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

type input struct {
	key, value string
	ts         time.Time
}

func randomInputs(rng *rand.Rand, n int) []input {
	in := make([]input, n)
	for i := range in {
		// Mostly increasing timestamps with some disorder.
		ts := time.UnixMilli(int64(i)*700 + rng.Int64N(3000))
		in[i] = input{key: fmt.Sprint("k", rng.IntN(12)), value: fmt.Sprint("v", i), ts: ts}
	}
	return in
}

type outcome struct {
	perKey map[string][]counted // committed outputs, in order, per key
	counts map[string]int64     // committed store, per partition merged
}

func collect(t *testing.T, d *testdriver.Driver, partitions int32) outcome {
	t.Helper()
	out := testdriver.CreateOutputTopic(d, "output", serde.String, serde.JSON[counted]())
	recs, err := out.ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	o := outcome{perKey: map[string][]counted{}, counts: map[string]int64{}}
	for _, r := range recs {
		o.perKey[r.Key] = append(o.perKey[r.Key], r.Value)
	}
	for p := range partitions {
		kv, err := testdriver.KeyValueStore[string, int64](d, "counts", p)
		if err != nil {
			t.Fatal(err)
		}
		it, _ := kv.All()
		for it.Next() {
			o.counts[it.Key()] = it.Value()
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func sameOutcome(t *testing.T, want, got outcome, label string) {
	t.Helper()
	for k, w := range want.perKey {
		if g := got.perKey[k]; !slices.Equal(w, g) {
			t.Fatalf("%s: outputs for key %s differ\nwant %v\ngot  %v", label, k, w, g)
		}
	}
	if len(got.perKey) != len(want.perKey) {
		t.Fatalf("%s: %d keys in output, want %d", label, len(got.perKey), len(want.perKey))
	}
	if fmt.Sprint(want.counts) != fmt.Sprint(got.counts) {
		t.Fatalf("%s: store differs\nwant %v\ngot  %v", label, want.counts, got.counts)
	}
}

// TestCrashAtRandomPointsChangesNothing runs the same input once without
// interruption and many times with commits and crashes at random points: the
// committed outputs (including punctuator output) and the stores must be the
// same, with nothing duplicated and nothing lost. Persistent stores are
// tried on Pebble (fewer runs: opening it at every restart is slow) and in
// the driver's memory that outlives crashes.
func TestCrashAtRandomPointsChangesNothing(t *testing.T) {
	for _, c := range []struct {
		name                 string
		persistent, inMemory bool
		seeds                uint64
	}{
		{"in-memory stores", false, false, 25},
		{"persistent stores on Pebble", true, false, 4},
		{"persistent stores in memory", true, true, 25},
	} {
		t.Run(c.name, func(t *testing.T) {
			top := countingTopology(t, c.persistent, exactly.FailOnError)
			const partitions = 3
			cfg := testdriver.Config{Partitions: map[string]int32{"input": partitions}, PersistentInMemory: c.inMemory}
			for seed := range c.seeds {
				inputs := randomInputs(rand.New(rand.NewPCG(seed, 7)), 300)

				clean := newDriver(t, top, cfg)
				pipe := testdriver.CreateInputTopic(clean, "input", serde.String, serde.String)
				for _, in := range inputs {
					if err := pipe.PipeInput(in.key, in.value, in.ts); err != nil {
						t.Fatal(err)
					}
				}
				want := collect(t, clean, partitions)

				d := newDriver(t, top, cfg)
				pipe = testdriver.CreateInputTopic(d, "input", serde.String, serde.String)
				run, err := d.RunWithCrashes(testdriver.CrashSchedule{Seed: seed, Crash: 0.05, CrashMidCommit: 0.05}, len(inputs), func(i int) error {
					return pipe.PipeInput(inputs[i].key, inputs[i].value, inputs[i].ts)
				})
				if err != nil {
					t.Fatal(err)
				}
				if run.Crashes == 0 || run.MidCommitCrashes == 0 {
					t.Fatalf("seed %d: %v: the schedule crashed too little", seed, run)
				}
				sameOutcome(t, want, collect(t, d, partitions), fmt.Sprintf("seed %d (%v)", seed, run))
			}
		})
	}
}

// TestOutputsInvisibleUntilCommit checks read_committed semantics: nothing
// processed since the last commit is readable, and a crash drops it.
func TestOutputsInvisibleUntilCommit(t *testing.T) {
	d := newDriver(t, countingTopology(t, false, exactly.FailOnError), testdriver.Config{ManualCommit: true})
	in := testdriver.CreateInputTopic(d, "input", serde.String, serde.String)
	out := testdriver.CreateOutputTopic(d, "output", serde.String, serde.JSON[counted]())
	in.PipeInput("a", "1", time.UnixMilli(1))
	if !out.IsEmpty() {
		t.Fatal("output visible before commit")
	}
	d.Crash()
	if !out.IsEmpty() {
		t.Fatal("output of a crashed transaction visible")
	}
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	d.Commit()
	recs, _ := out.ReadRecords()
	if len(recs) != 1 || recs[0].Value.Count != 1 {
		t.Fatalf("after restart and commit: %+v, want one record with count 1", recs)
	}
}

func TestStreamTimePunctuatorFiresOncePerInterval(t *testing.T) {
	var fired []int64
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"input"}, Keys: serde.String, Values: serde.String})
	exactly.AddProcessor(b, "p", func() exactly.Processor[string, string, string, string] {
		return &punctuated{typ: exactly.StreamTime, every: 10 * time.Second, fired: &fired}
	}, "in")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, top, testdriver.Config{})
	in := testdriver.CreateInputTopic(d, "input", serde.String, serde.String)
	for s := 1; s <= 60; s++ {
		in.PipeInput("k", "v", time.Unix(int64(s), 0))
	}
	if want := []int64{10_000, 20_000, 30_000, 40_000, 50_000, 60_000}; !slices.Equal(fired, want) {
		t.Fatalf("fired at %v, want %v", fired, want)
	}
	d.AdvanceWallClock(time.Hour)
	if len(fired) != 6 {
		t.Fatalf("wall clock fired a stream-time punctuator: %v", fired)
	}
	// A jump over several intervals fires once.
	in.PipeInput("k", "v", time.Unix(200, 0))
	if len(fired) != 7 || fired[6] != 200_000 {
		t.Fatalf("after a jump: %v", fired)
	}
}

func TestWallClockPunctuatorFiresOnlyWhenTheDriverAdvancesTime(t *testing.T) {
	var fired []int64
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"input"}, Keys: serde.String, Values: serde.String})
	var cancel exactly.Cancellable
	exactly.AddProcessor(b, "p", func() exactly.Processor[string, string, string, string] {
		return &punctuated{typ: exactly.WallClockTime, every: 5 * time.Second, fired: &fired, cancel: &cancel}
	}, "in")
	top, _ := b.Build()
	d := newDriver(t, top, testdriver.Config{})
	in := testdriver.CreateInputTopic(d, "input", serde.String, serde.String)
	for s := 1; s <= 100; s++ {
		in.PipeInput("k", "v", time.Unix(int64(s), 0))
	}
	if len(fired) != 0 {
		t.Fatalf("records fired a wall-clock punctuator: %v", fired)
	}
	d.AdvanceWallClock(4 * time.Second)
	if len(fired) != 0 {
		t.Fatalf("fired before the interval: %v", fired)
	}
	d.AdvanceWallClock(time.Second)
	d.AdvanceWallClock(12 * time.Second) // passes 10 s and 15 s: fires once
	if want := []int64{5_000, 17_000}; !slices.Equal(fired, want) {
		t.Fatalf("fired at %v, want %v", fired, want)
	}
	cancel.Cancel()
	d.AdvanceWallClock(time.Minute)
	if len(fired) != 2 {
		t.Fatalf("cancelled punctuator fired: %v", fired)
	}
}

type punctuated struct {
	typ    exactly.PunctuationType
	every  time.Duration
	fired  *[]int64
	cancel *exactly.Cancellable
}

func (p *punctuated) Init(ctx exactly.ProcessorContext[string, string]) error {
	c, err := ctx.Schedule(p.every, p.typ, func(ts time.Time) error {
		*p.fired = append(*p.fired, ts.UnixMilli())
		return nil
	})
	if p.cancel != nil {
		*p.cancel = c
	}
	return err
}
func (p *punctuated) Process(exactly.Record[string, string]) error { return nil }
func (p *punctuated) Close() error                                 { return nil }

func header(rec exactly.Record[[]byte, []byte], key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return "<missing>"
}

func TestFailedRecordsGoToTheDeadLetterSinkWithTheirOriginalBytes(t *testing.T) {
	d := newDriver(t, countingTopology(t, false, exactly.DeadLetterOnError), testdriver.Config{})
	in := testdriver.CreateInputTopic(d, "input", serde.String, serde.String)
	out := testdriver.CreateOutputTopic(d, "output", serde.String, serde.JSON[counted]())
	dlq := testdriver.CreateOutputTopic(d, "input-dlq", serde.Bytes, serde.Bytes)

	in.PipeInput("a", "ok", time.UnixMilli(1))                 // offset 0
	in.PipeInput("a", "fail", time.UnixMilli(2))               // offset 1
	in.PipeInput("a", "fail-after-effects", time.UnixMilli(3)) // offset 2: its store write and output are undone
	d.PipeBytes("input", []byte{0xff, 0xfe}, []byte("x"), time.UnixMilli(4),
		exactly.Header{Key: "trace", Value: []byte("t-1")}) // offset 3: key is not UTF-8
	in.PipeInput("a", "panic", time.UnixMilli(5)) // offset 4
	in.PipeInput("a", "ok2", time.UnixMilli(6))   // offset 5

	recs, _ := out.ReadRecords()
	if len(recs) != 2 || recs[0].Value.Count != 1 || recs[1].Value != (counted{Input: "ok2", Count: 2}) {
		t.Fatalf("outputs %+v: want ok (1) then ok2 (2), nothing from failed records", recs)
	}
	dead, _ := dlq.ReadRecords()
	want := []struct{ reason, offset, value, msg string }{
		{"processing-error", "1", "fail", "refusing input a"},
		{"processing-error", "2", "fail-after-effects", "failed after writing"},
		{"deserialization-error", "3", "x", "UTF-8"},
		{"processing-error", "4", "panic", "panicked"},
	}
	if len(dead) != len(want) {
		t.Fatalf("dead letters: %d, want %d", len(dead), len(want))
	}
	for i, w := range want {
		rec := dead[i]
		if string(rec.Value) != w.value || header(rec, "exactly.error.reason") != w.reason ||
			header(rec, "exactly.source.topic") != "input" || header(rec, "exactly.source.partition") != "0" ||
			header(rec, "exactly.source.offset") != w.offset || !strings.Contains(header(rec, "exactly.error.message"), w.msg) {
			t.Errorf("dead letter %d: value %q headers %v; want %+v", i, rec.Value, rec.Headers, w)
		}
	}
	if header(dead[2], "trace") != "t-1" || string(dead[2].Key) != "\xff\xfe" {
		t.Errorf("dead letter lost the original key or headers: %q %v", dead[2].Key, dead[2].Headers)
	}
}

func TestFailOnErrorStopsTheTaskNamingTheRecord(t *testing.T) {
	d := newDriver(t, countingTopology(t, false, exactly.FailOnError), testdriver.Config{})
	in := testdriver.CreateInputTopic(d, "input", serde.String, serde.String)
	in.PipeInput("a", "ok", time.UnixMilli(1))
	err := in.PipeInput("a", "fail", time.UnixMilli(2))
	var re *exactly.RecordError
	if !errors.As(err, &re) || re.Topic != "input" || re.Partition != 0 || re.Offset != 1 || re.Node != "count" {
		t.Fatalf("error %v (%#v), want a RecordError for input/0@1 in count", err, re)
	}
	if !strings.Contains(err.Error(), "input/0@1") {
		t.Fatalf("error message %q does not name input/0@1", err)
	}
	// The failed record is not skipped: a restart meets it again.
	if err := d.Restart(); !errors.As(err, &re) || re.Offset != 1 {
		t.Fatalf("restart: %v, want the same record to fail again", err)
	}
}

// TestStoreEntriesCountsEveryPartitionIncludingUncommittedWrites counts a
// store spread over two partitions, before and after a commit.
func TestStoreEntriesCountsEveryPartitionIncludingUncommittedWrites(t *testing.T) {
	d := newDriver(t, countingTopology(t, false, exactly.FailOnError), testdriver.Config{
		ManualCommit: true, Partitions: map[string]int32{"input": 2},
	})
	if got := d.StoreNames(); !slices.Equal(got, []string{"counts"}) {
		t.Fatalf("StoreNames() = %v, want [counts]", got)
	}
	in := testdriver.CreateInputTopic(d, "input", serde.String, serde.String)
	keys := []string{"a", "b", "c", "d", "e", "a", "b"}
	partitions := map[int32]bool{}
	for _, k := range keys {
		if err := in.PipeInput(k, "v", time.UnixMilli(1000)); err != nil {
			t.Fatal(err)
		}
	}
	for p := range int32(2) {
		kv, err := testdriver.KeyValueStore[string, int64](d, "counts", p)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := kv.ApproximateNumEntries(); n > 0 {
			partitions[p] = true
		}
	}
	if len(partitions) != 2 {
		t.Fatal("the keys all went to one partition; the test needs both")
	}
	for _, commit := range []bool{false, true} {
		if commit {
			if err := d.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := d.StoreEntries("counts"); err != nil || n != 5 {
			t.Fatalf("after commit=%v: StoreEntries = %d, %v; want 5 distinct keys", commit, n, err)
		}
	}
	if _, err := d.StoreEntries("nope"); err == nil {
		t.Fatal("StoreEntries of an unknown store did not fail")
	}
}
