package testdriver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
)

// tracedTopology reads values that may name a trace id ("trace=<hex>"),
// and forwards each upper-cased without its headers, so that an output's
// traceparent can only come from the runtime.
func tracedTopology(t *testing.T) *exactly.Topology {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{
		Topics: []string{"in"}, Keys: serde.String, Values: serde.String,
		Trace: func(rec exactly.Record[string, string]) exactly.RecordTrace {
			hex, ok := strings.CutPrefix(rec.Value, "trace=")
			if !ok {
				return exactly.RecordTrace{}
			}
			rt := exactly.RecordTrace{Attributes: []attribute.KeyValue{attribute.String("app.trace_id", hex)}}
			rt.TraceID, _ = trace.TraceIDFromHex(hex)
			return rt
		},
	})
	exactly.AddProcessor(b, "upper", exactly.ProcessorFunc[string, string, string, string](
		func(ctx exactly.ProcessorContext[string, string], rec exactly.Record[string, string]) error {
			ctx.Span().SetAttributes(attribute.String("app.processor", ctx.NodeName()))
			ctx.Forward(exactly.Record[string, string]{Key: rec.Key, Value: strings.ToUpper(rec.Value), Timestamp: rec.Timestamp})
			return nil
		}).Supplier(), "in")
	exactly.AddSink(b, "out", exactly.Sink[string, string]{Topic: "out", Keys: serde.String, Values: serde.String}, "upper")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func spanAttrs(s tracetest.SpanStub) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

// TestDriverTracesARecordFromInputToOutputAcrossItsCommit: with a
// TracerProvider, a record carrying a traceparent gets a span in that
// trace, its committed output carries the span's traceparent, and the
// commit that made it visible has a span of its own.
func TestDriverTracesARecordFromInputToOutputAcrossItsCommit(t *testing.T) {
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	d, err := testdriver.New(tracedTopology(t), testdriver.Config{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	parent := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if err := d.PipeBytes("in", []byte("k"), []byte("hello"), time.UnixMilli(5), exactly.Header{Key: "traceparent", Value: []byte(parent)}); err != nil {
		t.Fatal(err)
	}
	outs := d.TopicRecords("out", 0)
	if len(outs) != 1 {
		t.Fatalf("%d outputs; want 1", len(outs))
	}
	var record, commit *tracetest.SpanStub
	spans := exporter.GetSpans()
	for i := range spans {
		switch spans[i].Name {
		case "process in":
			record = &spans[i]
		case "commit":
			commit = &spans[i]
		}
	}
	if record == nil || commit == nil {
		t.Fatalf("spans %v: want a record's and a commit's", spans)
	}
	if got := record.SpanContext.TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" || record.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("record span in trace %s with parent %s; want the input's", got, record.Parent.SpanID())
	}
	out := traceOf(outs[0].Headers)
	if out.TraceID() != record.SpanContext.TraceID() || out.SpanID() != record.SpanContext.SpanID() {
		t.Errorf("output's traceparent %v; want the record span %v", out, record.SpanContext)
	}
	if a := spanAttrs(*record); a["app.processor"] != "upper" || a["messaging.destination.name"] != "in" {
		t.Errorf("record span attributes %v: want the processor's and the input topic", a)
	}
	if a := spanAttrs(*commit); a["exactly.commit.result"] != "committed" || a["exactly.commit.records"] != "1" || a["exactly.commit.outputs"] != "1" || a["exactly.commit.tasks"] != "1" {
		t.Errorf("commit span attributes %v", a)
	}
}

// TestSourceTraceGivesARecordWithoutTraceparentItsTrace: a source's Trace
// function puts a record without a traceparent header into the trace its
// content names, and adds its attributes; a content without a valid trace
// id gets a trace of its own.
func TestSourceTraceGivesARecordWithoutTraceparentItsTrace(t *testing.T) {
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	d, err := testdriver.New(tracedTopology(t), testdriver.Config{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, v := range []string{"trace=0af7651916cd43dd8448eb211c80319c", "trace=t-order-1", "trace=0af7651916cd43dd8448eb211c80319c"} {
		if err := d.PipeBytes("in", []byte("k"), []byte(v), time.UnixMilli(5)); err != nil {
			t.Fatal(err)
		}
	}
	var records []tracetest.SpanStub
	for _, s := range exporter.GetSpans() {
		if s.Name == "process in" {
			records = append(records, s)
		}
	}
	outs := d.TopicRecords("out", 0)
	if len(records) != 3 || len(outs) != 3 {
		t.Fatalf("%d record spans and %d outputs; want 3 of each", len(records), len(outs))
	}
	want := "0af7651916cd43dd8448eb211c80319c"
	if records[0].SpanContext.TraceID().String() != want || records[2].SpanContext.TraceID().String() != want {
		t.Errorf("records naming trace %s are in traces %s and %s", want, records[0].SpanContext.TraceID(), records[2].SpanContext.TraceID())
	}
	if records[0].Parent.SpanID() != records[2].Parent.SpanID() {
		t.Error("two records of one trace hang from different producer spans")
	}
	if records[1].SpanContext.TraceID().String() == want || records[1].Parent.IsValid() {
		t.Errorf("a record naming no valid trace id joined trace %s (parent %v)", records[1].SpanContext.TraceID(), records[1].Parent)
	}
	if a := spanAttrs(records[1]); a["app.trace_id"] != "t-order-1" {
		t.Errorf("record span attributes %v: want app.trace_id", a)
	}
	for i, out := range outs {
		if got := traceOf(out.Headers); got.SpanID() != records[i].SpanContext.SpanID() {
			t.Errorf("output %d carries span %s; want its record's %s", i, got.SpanID(), records[i].SpanContext.SpanID())
		}
	}
}

// traceOf reads the W3C traceparent of record headers.
func traceOf(headers []exactly.Header) trace.SpanContext {
	carrier := propagation.MapCarrier{}
	for _, h := range headers {
		carrier[h.Key] = string(h.Value)
	}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
}
