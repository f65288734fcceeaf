package exactly_test

import (
	"errors"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCountOnCommitCountsCommittedWorkOnly: a processor counts each record
// it accepts with CountOnCommit. The counter moves only when a commit
// succeeds, never for a record that failed, nor for work a crash or a
// failed commit discarded and that is processed again.
func TestCountOnCommitCountsCommittedWorkOnly(t *testing.T) {
	accepted := prometheus.NewCounter(prometheus.CounterOpts{Name: "accepted_total", Help: "Records accepted."})
	b := exactly.NewBuilder()
	b.OnProcessingError(exactly.DeadLetterOnError)
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"in"}, Keys: serde.String, Values: serde.String})
	exactly.AddProcessor(b, "accept", exactly.ProcessorFunc[string, string, string, string](
		func(ctx exactly.ProcessorContext[string, string], rec exactly.Record[string, string]) error {
			ctx.CountOnCommit(accepted, 1)
			if rec.Value == "bad" {
				return errors.New("refused") // counted above, dropped with the record
			}
			ctx.Forward(rec)
			return nil
		}).Supplier(), "in")
	exactly.AddSink(b, "out", exactly.Sink[string, string]{Topic: "out", Keys: serde.String, Values: serde.String}, "accept")
	exactly.AddDeadLetterSink(b, "dlq", "dlq", "in", "accept")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, testdriver.Config{ApplicationID: "count", ManualCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	in := testdriver.CreateInputTopic(d, "in", serde.String, serde.String)
	pipe := func(values ...string) {
		t.Helper()
		for _, v := range values {
			if err := in.PipeInput("k", v, time.UnixMilli(1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := func(n float64, when string) {
		t.Helper()
		if got := testutil.ToFloat64(accepted); got != n {
			t.Fatalf("%s: counter = %v, want %v", when, got, n)
		}
	}

	pipe("a", "bad", "b")
	want(0, "before the commit")
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	want(2, "after the commit (the failed record not counted)")

	pipe("c", "d")
	d.Crash()
	want(2, "after a crash before the commit")
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(); err != nil { // c and d processed again, committed once
		t.Fatal(err)
	}
	want(4, "after the redone work committed")

	pipe("e")
	if err := d.CrashMidCommit(); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	// The transaction committed and the instance died before completing
	// it: e is not processed again, and its count went with the process
	// (as a real process's counters do).
	want(4, "after a crash between the transaction's commit and its completion")
	pipe("f")
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	want(5, "after the next commit")
}
