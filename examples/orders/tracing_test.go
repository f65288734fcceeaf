package orders_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/testdriver"
)

func traceparentOf(headers []exactly.Header) trace.SpanContext {
	carrier := propagation.MapCarrier{}
	for _, h := range headers {
		carrier[h.Key] = string(h.Value)
	}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), carrier))
}

// TestEnvelopeTraceIDMapsIntoTheTraceAndTheLogs: an event without a
// traceparent header is traced in the trace its envelope's traceId names
// when that is a W3C trace id, and otherwise carries it as an attribute; a
// traceparent header wins over the envelope; a held-back event's projection
// stays in its own trace; a dead letter continues its record's trace; and
// the debug log lines carry the envelope's traceId with the span's ids.
func TestEnvelopeTraceIDMapsIntoTheTraceAndTheLogs(t *testing.T) {
	exporter := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d := newDriver(t, orders.Options{Logger: logger}, testdriver.Config{TracerProvider: tp})

	const hexTrace = "0af7651916cd43dd8448eb211c80319c"
	const headerTrace, headerParent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	ts := int64(1732260000000)
	created := func(order, id, traceID string) []byte {
		return fmt.Appendf(nil, `{"metadata":{"eventId":%q,"traceId":%q,"timestamp":%d},"type":"OrderCreated","payload":{"orderId":%q,"customerId":"c","createdAt":%d}}`, id, traceID, ts, order, ts)
	}
	shipped := func(order, id, traceID string) []byte {
		return fmt.Appendf(nil, `{"metadata":{"eventId":%q,"traceId":%q,"timestamp":%d},"type":"OrderShipped","payload":{"orderId":%q,"trackingNumber":"t","shippedAt":%d}}`, id, traceID, ts+1, order, ts)
	}
	pipeWith := func(key string, value []byte, headers ...exactly.Header) {
		t.Helper()
		if err := d.PipeBytes(orders.DefaultInputTopic, []byte(key), value, time.UnixMilli(ts), headers...); err != nil {
			t.Fatal(err)
		}
	}
	held := exactly.Header{Key: "traceparent", Value: []byte("00-" + headerTrace + "-" + headerParent + "-01")}
	pipeWith("o-1", created("o-1", "e-1", hexTrace))           // 0: joins hexTrace
	pipeWith("o-2", created("o-2", "e-2", "t-o-2"))            // 1: a trace of its own
	pipeWith("o-3", shipped("o-3", "e-3", hexTrace), held)     // 2: held back; the header wins
	pipeWith("o-3", created("o-3", "e-4", "t-o-3"))            // 3: releases e-3
	pipeWith("o-4", []byte(`{"metadata":{"traceId":"t-bad"}`)) // 4: malformed

	spans := map[int64]tracetest.SpanStub{}
	for _, s := range exporter.GetSpans() {
		if s.Name == "process "+orders.DefaultInputTopic {
			for _, kv := range s.Attributes {
				if kv.Key == "messaging.kafka.offset" {
					spans[kv.Value.AsInt64()] = s
				}
			}
		}
	}
	if len(spans) != 5 {
		t.Fatalf("%d record spans; want 5", len(spans))
	}
	attr := func(s tracetest.SpanStub, key string) string {
		for _, kv := range s.Attributes {
			if string(kv.Key) == key {
				return kv.Value.AsString()
			}
		}
		return ""
	}
	if got := spans[0].SpanContext.TraceID().String(); got != hexTrace || attr(spans[0], "orders.trace_id") != hexTrace {
		t.Errorf("event with traceId %s traced in %s", hexTrace, got)
	}
	if got := spans[1].SpanContext.TraceID().String(); got == hexTrace || spans[1].Parent.IsValid() || attr(spans[1], "orders.trace_id") != "t-o-2" {
		t.Errorf("event with traceId t-o-2: trace %s, parent %v, attribute %q", got, spans[1].Parent, attr(spans[1], "orders.trace_id"))
	}
	if got := spans[2].SpanContext.TraceID().String(); got != headerTrace || spans[2].Parent.SpanID().String() != headerParent {
		t.Errorf("event with a traceparent traced in %s under %s; want %s under %s", got, spans[2].Parent.SpanID(), headerTrace, headerParent)
	}

	byEvent := map[string]trace.SpanContext{}
	for _, r := range d.TopicRecords(orders.DefaultOutputTopic, 0) {
		for _, h := range r.Headers {
			if h.Key == orders.HeaderEventID {
				byEvent[string(h.Value)] = traceparentOf(r.Headers)
			}
		}
	}
	for event, want := range map[string]trace.SpanContext{"e-1": spans[0].SpanContext, "e-2": spans[1].SpanContext, "e-4": spans[3].SpanContext} {
		if got := byEvent[event]; got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() {
			t.Errorf("projection of %s carries %v; want its record's span %v", event, got, want)
		}
	}
	if got := byEvent["e-3"]; got.TraceID().String() != headerTrace || got.SpanID().String() != headerParent {
		t.Errorf("projection of the held-back e-3 carries %v; want its own traceparent %s-%s", got, headerTrace, headerParent)
	}
	dls := d.TopicRecords(orders.DefaultDeadLetterTopic, 0)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters; want 1", len(dls))
	}
	if got := traceparentOf(dls[0].Headers); got.SpanID() != spans[4].SpanContext.SpanID() {
		t.Errorf("dead letter carries span %s; want its record's %s", got.SpanID(), spans[4].SpanContext.SpanID())
	}
	if attr(spans[4], "exactly.dead_letter.reason") != orders.ReasonMalformed {
		t.Errorf("dead-lettered record's span lacks the reason: %v", spans[4].Attributes)
	}

	for _, want := range []string{
		`"msg":"order event applied"`,
		`"traceId":"` + hexTrace + `","trace_id":"` + hexTrace + `","span_id":"` + spans[0].SpanContext.SpanID().String() + `"`,
		`"traceId":"t-o-2","trace_id":"` + spans[1].SpanContext.TraceID().String() + `"`,
		`"msg":"order event dead-lettered"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs.String())
		}
	}
}
