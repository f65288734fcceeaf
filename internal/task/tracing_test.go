package task_test

import (
	"errors"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/internal/tracing"
)

// view is a serde of byte slices that neither copies nor allocates, so
// that a record's allocations are the runtime's own.
type view struct{}

func (view) Serialize(b []byte) ([]byte, error)   { return b, nil }
func (view) Deserialize(b []byte) ([]byte, error) { return b, nil }

// passThrough forwards each record with its headers, and dead-letters the
// values "bad".
func passThrough(t testing.TB) *topo.Topology {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[[]byte, []byte]{Topics: []string{"in"}, Keys: view{}, Values: view{}})
	exactly.AddProcessor(b, "p", exactly.ProcessorFunc[[]byte, []byte, []byte, []byte](
		func(ctx exactly.ProcessorContext[[]byte, []byte], rec exactly.Record[[]byte, []byte]) error {
			if string(rec.Value) == "bad" {
				return errors.New("bad value")
			}
			ctx.Forward(rec)
			return nil
		}).Supplier(), "in")
	exactly.AddSink(b, "out", exactly.Sink[[]byte, []byte]{Topic: "out", Keys: view{}, Values: view{}}, "p")
	exactly.AddDeadLetterSink(b, "dlq", "dlq", "in", "p")
	b.OnProcessingError(exactly.DeadLetterOnError)
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return topo.Of(top)
}

func newTracedTask(t testing.TB, tracer trace.Tracer) *task.Task {
	tk, err := task.New(passThrough(t), task.Config{ApplicationID: "app", StreamTime: task.UnknownTime, Tracer: tracer})
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Initialize(); err != nil {
		t.Fatal(err)
	}
	return tk
}

// TestTracingOffAllocatesNothingPerRecord: without a Tracer, a record that
// goes through a processor to a sink allocates nothing (but the growth of
// the commit's outputs, which AllocsPerRun's average rounds away), header
// or no header: tracing off costs a nil check.
func TestTracingOffAllocatesNothingPerRecord(t *testing.T) {
	tk := newTracedTask(t, nil)
	raw := &topo.Raw{Topic: "in", Key: []byte("k"), Value: []byte("v"), Timestamp: 1,
		Headers: []topo.Header{{Key: tracing.HeaderTraceParent, Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}}}
	process := func() {
		raw.Offset++
		if err := tk.Process(raw); err != nil {
			t.Fatal(err)
		}
	}
	if allocs := testing.AllocsPerRun(1000, process); allocs != 0 {
		t.Fatalf("a record allocates %v times with tracing off; want 0", allocs)
	}
	if n := len(tk.PrepareCommit().Outputs); n != 1001 {
		t.Fatalf("%d outputs; want 1001", n)
	}
}

// BenchmarkProcessTracing compares a record's cost with tracing off, on
// with a provider that samples nothing, and on with every span recorded.
func BenchmarkProcessTracing(b *testing.B) {
	for _, c := range []struct {
		name   string
		tracer trace.Tracer
	}{
		{"off", nil},
		{"never-sampled", sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample())).Tracer("b")},
		{"recorded", sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder())).Tracer("b")},
	} {
		b.Run(c.name, func(b *testing.B) {
			tk := newTracedTask(b, c.tracer)
			raw := &topo.Raw{Topic: "in", Key: []byte("k"), Value: []byte("v"), Timestamp: 1}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				raw.Offset = int64(i)
				if err := tk.Process(raw); err != nil {
					b.Fatal(err)
				}
				tk.TakeOutputs()
			}
		})
	}
}

// TestRecordSpanContinuesTheInputTraceOnOutputsAndDeadLetters: the span of
// a record is a child of its traceparent, and its outputs and dead letters
// carry the span's own traceparent; a record without one starts a trace.
func TestRecordSpanContinuesTheInputTraceOnOutputsAndDeadLetters(t *testing.T) {
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	tk := newTracedTask(t, tracing.Tracer(tp))
	parent := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	in := []topo.Header{{Key: "other", Value: []byte("x")}, {Key: tracing.HeaderTraceParent, Value: []byte(parent)}}

	for i, value := range []string{"good", "bad"} {
		if err := tk.Process(&topo.Raw{Topic: "in", Partition: 2, Offset: int64(i), Value: []byte(value), Headers: in, Timestamp: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tk.Process(&topo.Raw{Topic: "in", Partition: 2, Offset: 2, Value: []byte("fresh"), Timestamp: 1}); err != nil {
		t.Fatal(err)
	}
	if string(in[1].Value) != parent {
		t.Fatal("the input's headers were modified")
	}
	outs := tk.PrepareCommit().Outputs
	spans := exporter.GetSpans()
	if len(outs) != 3 || len(spans) != 3 {
		t.Fatalf("%d outputs and %d spans; want 3 of each", len(outs), len(spans))
	}
	for i, out := range outs {
		span := spans[i]
		if span.Name != "process in" || span.SpanKind != trace.SpanKindConsumer {
			t.Errorf("span %d is %q of kind %v", i, span.Name, span.SpanKind)
		}
		got := tracing.Extract(out.Headers)
		if got.SpanID() != span.SpanContext.SpanID() || got.TraceID() != span.SpanContext.TraceID() {
			t.Errorf("output %d (%s) carries %v; its record's span is %v", i, out.Topic, got, span.SpanContext)
		}
		if i < 2 {
			if span.Parent.SpanID().String() != "b7ad6b7169203331" || span.SpanContext.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
				t.Errorf("span %d has parent %v; want the input's traceparent", i, span.Parent)
			}
			if n := countKey(out.Headers, tracing.HeaderTraceParent); n != 1 || countKey(out.Headers, "other") != 1 {
				t.Errorf("output %d headers %v: want the other header once and one traceparent", i, out.Headers)
			}
		} else if span.Parent.IsValid() {
			t.Errorf("a record without traceparent has a span with parent %v", span.Parent)
		}
	}
	if outs[1].Topic != "dlq" || spans[1].Status.Code.String() != "Error" {
		t.Errorf("the bad record went to %s with span status %v", outs[1].Topic, spans[1].Status)
	}
	attrs := map[string]string{}
	for _, kv := range spans[1].Attributes {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	for k, v := range map[string]string{
		"messaging.system": "kafka", "messaging.destination.name": "in", "messaging.destination.partition.id": "2",
		"messaging.kafka.offset": "1", "messaging.consumer.group.name": "app", "exactly.task": "0_0",
		"exactly.dead_letter.reason": exactly.ReasonProcessing,
	} {
		if attrs[k] != v {
			t.Errorf("span attribute %s = %q; want %q", k, attrs[k], v)
		}
	}
}

func countKey(headers []topo.Header, key string) int {
	n := 0
	for _, h := range headers {
		if h.Key == key {
			n++
		}
	}
	return n
}

// TestOutputWithATraceOfItsOwnKeepsIt: an output whose traceparent is not
// the input's (a record held back from another trace) keeps its own.
func TestOutputWithATraceOfItsOwnKeepsIt(t *testing.T) {
	own := []topo.Header{{Key: tracing.HeaderTraceParent, Value: []byte("00-11111111111111111111111111111111-2222222222222222-01")}}
	input := []topo.Header{{Key: tracing.HeaderTraceParent, Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}})
	if got := tracing.Stamp(own, input, sc); string(got[0].Value) != string(own[0].Value) || len(got) != 1 {
		t.Errorf("an output of another trace was stamped: %v", got)
	}
	got := tracing.Stamp(input, input, sc)
	if len(got) != 1 || tracing.Extract(got).SpanID() != sc.SpanID() {
		t.Errorf("an output passing the input's traceparent on was not stamped: %v", got)
	}
	if tracing.Extract(input).SpanID() == sc.SpanID() {
		t.Error("Stamp modified its argument")
	}
}
