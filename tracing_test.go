package exactly_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactly-go/exactly"
)

// waitSpans waits until the exporter holds a span that ok accepts.
func waitSpans(t *testing.T, exporter *tracetest.InMemoryExporter, what string, ok func(tracetest.SpanStub) bool) tracetest.SpanStub {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range exporter.GetSpans() {
			if ok(s) {
				return s
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s span among %d", what, len(exporter.GetSpans()))
	return tracetest.SpanStub{}
}

func attrOf(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// TestKafkaTraceCrossesThePipelineAcrossACommit: on a broker, a record
// that carries a traceparent is processed in a span of its trace, the
// committed output carries that span's traceparent, the commit that
// published it has a span with its result, and a restarted instance's
// restore has a span counting the changelog records it read.
func TestKafkaTraceCrossesThePipelineAcrossACommit(t *testing.T) {
	brokers := newCluster(t, 1)
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.TracerProvider = tp
	stop := startApp(t, countingApp(t, false), cfg)

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	in := &kgo.Record{Topic: "input", Key: []byte("k"), Value: []byte("r0"),
		Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte("00-" + traceID + "-" + parentID + "-01")}}}
	if err := cl.ProduceSync(context.Background(), in).FirstErr(); err != nil {
		t.Fatal(err)
	}
	out := readCommittedRecord(t, brokers)
	carrier := propagation.MapCarrier{}
	for _, h := range out.Headers {
		carrier[h.Key] = string(h.Value)
	}
	outCtx := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
	if outCtx.TraceID().String() != traceID {
		t.Fatalf("committed output carries trace %s (headers %v); want %s", outCtx.TraceID(), out.Headers, traceID)
	}

	record := waitSpans(t, exporter, "record", func(s tracetest.SpanStub) bool { return s.Name == "process input" })
	if record.SpanContext.TraceID().String() != traceID || record.Parent.SpanID().String() != parentID {
		t.Errorf("record span in trace %s with parent %s; want the input's %s/%s", record.SpanContext.TraceID(), record.Parent.SpanID(), traceID, parentID)
	}
	if outCtx.SpanID() != record.SpanContext.SpanID() {
		t.Errorf("output's parent span %s; want the record span %s", outCtx.SpanID(), record.SpanContext.SpanID())
	}
	for key, want := range map[string]string{"messaging.system": "kafka", "messaging.destination.name": "input",
		"messaging.destination.partition.id": "0", "messaging.kafka.offset": "0", "exactly.task": "0_0"} {
		if got := attrOf(record, key); got != want {
			t.Errorf("record span %s = %q; want %q", key, got, want)
		}
	}
	commit := waitSpans(t, exporter, "commit", func(s tracetest.SpanStub) bool {
		return s.Name == "commit" && attrOf(s, "exactly.commit.records") == "1"
	})
	if got := attrOf(commit, "exactly.commit.result"); got != "committed" {
		t.Errorf("the commit of the record ended %q; want committed", got)
	}
	if commit.EndTime.Before(record.EndTime) {
		t.Error("the commit ended before the record's processing")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// In-memory stores restore from the changelog at every start.
	exporter.Reset()
	stop = startApp(t, countingApp(t, false), cfg)
	defer stop()
	restore := waitSpans(t, exporter, "restore", func(s tracetest.SpanStub) bool { return s.Name == "restore" })
	if got := attrOf(restore, "exactly.restore.records"); got != "1" {
		t.Errorf("restore span counts %s records; want 1", got)
	}
	if got := attrOf(restore, "exactly.task"); got != "0_0" {
		t.Errorf("restore span of task %q; want 0_0", got)
	}
}

// readCommittedRecord reads the first committed record of output.
func readCommittedRecord(t *testing.T, brokers []string) *kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("output"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("no committed output")
		}
		if recs := fetches.Records(); len(recs) > 0 {
			return recs[0]
		}
	}
}
