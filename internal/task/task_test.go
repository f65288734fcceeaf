package task_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/serde"
)

// summing adds values per key, forwards the running sum, and every 5 s of
// stream time forwards a "tick" with the stream time: store writes, outputs
// and punctuator effects that an abort must all discard.
type summing struct {
	ctx exactly.ProcessorContext[string, int64]
}

func (s *summing) Init(ctx exactly.ProcessorContext[string, int64]) error {
	s.ctx = ctx
	_, err := ctx.Schedule(5*time.Second, exactly.StreamTime, func(ts time.Time) error {
		ctx.Forward(exactly.Record[string, int64]{Key: "tick", Value: ts.UnixMilli()})
		return nil
	})
	return err
}

func (s *summing) Process(rec exactly.Record[string, int64]) error {
	sums, err := exactly.GetKeyValueStore[string, int64](s.ctx, "sums")
	if err != nil {
		return err
	}
	v, _, _ := sums.Get(rec.Key)
	sums.Put(rec.Key, v+rec.Value)
	s.ctx.Forward(exactly.Record[string, int64]{Key: rec.Key, Value: v + rec.Value})
	return nil
}

func (s *summing) Close() error { return nil }

func newTask(t *testing.T) *task.Task {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, int64]{Topics: []string{"in"}, Keys: serde.String, Values: serde.Int64})
	exactly.AddProcessor(b, "sum", func() exactly.Processor[string, int64, string, int64] { return &summing{} }, "in")
	exactly.AddStore(b, exactly.Store[string, int64]{Name: "sums", Keys: serde.String, Values: serde.Int64}, "sum")
	exactly.AddSink(b, "out", exactly.Sink[string, int64]{Topic: "out", Keys: serde.String, Values: serde.Int64}, "sum")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	tk, err := task.New(topo.Of(top), task.Config{ApplicationID: "app", StreamTime: task.UnknownTime})
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Initialize(); err != nil {
		t.Fatal(err)
	}
	return tk
}

func raw(offset int64, key string, v int64, tsSeconds int64) *topo.Raw {
	vb, _ := serde.Int64.Serialize(v)
	return &topo.Raw{Topic: "in", Offset: offset, Key: []byte(key), Value: vb, Timestamp: tsSeconds * 1000}
}

func render(c *task.Commit) []string {
	var out []string
	for _, o := range c.Outputs {
		v, _ := serde.Int64.Deserialize(o.Value)
		out = append(out, fmt.Sprintf("%s=%d", o.Key, v))
	}
	for _, sc := range c.Changelogs {
		for _, ch := range sc.Changes {
			v, _ := serde.Int64.Deserialize(ch.Value)
			out = append(out, fmt.Sprintf("log %s %s=%d", sc.Store, ch.Key, v))
		}
	}
	for tp, next := range c.Offsets {
		out = append(out, fmt.Sprintf("offset %s/%d=%d", tp.Topic, tp.Partition, next))
	}
	return append(out, fmt.Sprint("streamtime ", c.StreamTime))
}

// TestAbortThenRedeliverEqualsNeverAborted processes a batch, aborts it
// (as after a failed Kafka transaction), redelivers it and compares the
// commit with a task that never aborted.
func TestAbortThenRedeliverEqualsNeverAborted(t *testing.T) {
	first := []*topo.Raw{raw(0, "a", 1, 1), raw(1, "b", 2, 2)}
	second := []*topo.Raw{raw(2, "a", 3, 6), raw(3, "a", 4, 12), raw(4, "b", 5, 11)}

	clean := newTask(t)
	for _, r := range append(slices.Clone(first), second...) {
		if r.Offset == 2 {
			c := clean.PrepareCommit()
			if err := clean.CompleteCommit(map[string]int64{"sums": int64(len(c.Changelogs))}); err != nil {
				t.Fatal(err)
			}
		}
		if err := clean.Process(r); err != nil {
			t.Fatal(err)
		}
	}
	want := render(clean.PrepareCommit())

	tk := newTask(t)
	for _, r := range first {
		tk.Process(r)
	}
	tk.PrepareCommit()
	if err := tk.CompleteCommit(map[string]int64{"sums": 1}); err != nil {
		t.Fatal(err)
	}
	for _, r := range second {
		tk.Process(r)
	}
	if got := render(tk.PrepareCommit()); !slices.Contains(got, "tick=12000") {
		t.Fatalf("punctuator did not run before the abort: %v", got)
	}
	tk.Abort()
	if st := tk.StreamTime(); st != 2000 {
		t.Fatalf("stream time after abort = %d, want the committed 2000", st)
	}
	if c := tk.PrepareCommit(); !c.Empty() {
		t.Fatalf("commit after abort not empty: %v", render(c))
	}
	for _, r := range second {
		if err := tk.Process(r); err != nil {
			t.Fatal(err)
		}
	}
	got := render(tk.PrepareCommit())
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("after abort and redelivery:\n got %v\nwant %v", got, want)
	}
}
