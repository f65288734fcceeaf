package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly-go/exactly/examples/orders"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// lockedBuffer is a bytes.Buffer that other goroutines (an exporter, a
// logger) write while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// exportedSpan is what the test reads of a span the stdout exporter wrote.
type exportedSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Attributes  []struct {
		Key   string
		Value struct{ Value any }
	}
}

// runTracedOrder runs the orders application with tr on a fresh broker,
// feeds it one OrderCreated whose envelope names traceID, and returns the
// committed projection once the run has stopped (and flushed its spans).
func runTracedOrder(t *testing.T, tr tracingConfig, traceID string) *kgo.Record {
	t.Helper()
	brokers := newBroker(t).ListenAddrs()
	c := testRunOrdersConfig(t, brokers, 1)
	c.HTTP = ""
	c.Tracing = tr
	_, stop := startRunOrders(t, c)

	ts := time.Now().UnixMilli()
	waitFor(t, 20*time.Second, "the input topic", func() bool {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
		if err != nil {
			return false
		}
		defer cl.Close()
		err = cl.ProduceSync(context.Background(), &kgo.Record{Topic: c.InputTopic, Key: []byte("o-1"),
			Value: fmt.Appendf(nil, `{"metadata":{"eventId":"e-1","traceId":%q,"timestamp":%d},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c-1","createdAt":%d}}`, traceID, ts, ts)}).FirstErr()
		return err == nil
	})

	out, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(c.OutputTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var projection *kgo.Record
	waitFor(t, 20*time.Second, "the projection", func() bool {
		pollCtx, stop := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer stop()
		if recs := out.PollFetches(pollCtx).Records(); len(recs) > 0 {
			projection = recs[0]
		}
		return projection != nil
	})
	if err := stop(); err != nil {
		t.Fatalf("run orders: %v", err)
	}

	return projection
}

// TestRunOrdersTraceStdoutWritesTheSpansOfRecordsAndCommits: with
// --trace-stdout, an order event whose envelope names a W3C trace id is
// traced in that trace, its commit is traced, and its projection carries
// the record span's traceparent.
func TestRunOrdersTraceStdoutWritesTheSpansOfRecordsAndCommits(t *testing.T) {
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	var spans lockedBuffer
	projection := runTracedOrder(t, tracingConfig{Stdout: true, Output: &spans, SampleRatio: 1}, traceID)
	const inputTopic = orders.DefaultInputTopic

	var record, commit *exportedSpan
	sc := bufio.NewScanner(strings.NewReader(spans.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s exportedSpan
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("a line of the trace output is not a span: %v: %s", err, sc.Text())
		}
		switch {
		case s.Name == "process "+inputTopic:
			record = &s
		case s.Name == "commit" && commit == nil:
			commit = &s
		}
	}
	if record == nil || commit == nil {
		t.Fatalf("the trace output lacks a record's or a commit's span:\n%s", spans.String())
	}
	if record.SpanContext.TraceID != traceID {
		t.Errorf("the record is traced in %s; want its envelope's traceId %s", record.SpanContext.TraceID, traceID)
	}
	var traceparent string
	for _, h := range projection.Headers {
		if h.Key == "traceparent" {
			traceparent = string(h.Value)
		}
	}
	if want := "00-" + traceID + "-" + record.SpanContext.SpanID + "-01"; traceparent != want {
		t.Errorf("the projection carries traceparent %q; want %q", traceparent, want)
	}
}

// otlpCollector is an OTLP/HTTP trace receiver on loopback: it keeps the
// spans it is sent.
type otlpCollector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	bad   error
}

func (o *otlpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil && r.URL.Path != "/v1/traces" {
		err = fmt.Errorf("spans posted to %s, not /v1/traces", r.URL.Path)
	}
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.bad = err
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			o.spans = append(o.spans, ss.Spans...)
		}
	}
	resp, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(resp)
}

// TestRunOrdersOTLPEndpointExportsTheTraceToACollector: with
// --otlp-endpoint, the spans of a record and of its commit reach an OTLP/HTTP
// collector, the record's in the trace its envelope names, and the
// projection carries that span's traceparent.
func TestRunOrdersOTLPEndpointExportsTheTraceToACollector(t *testing.T) {
	collector := &otlpCollector{}
	srv := httptest.NewServer(collector) // 127.0.0.1
	defer srv.Close()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	projection := runTracedOrder(t, tracingConfig{OTLPEndpoint: srv.URL, SampleRatio: 1}, traceID)

	collector.mu.Lock()
	defer collector.mu.Unlock()
	if collector.bad != nil {
		t.Fatalf("the collector got a request it could not read: %v", collector.bad)
	}
	var record, commit *tracepb.Span
	for _, s := range collector.spans {
		switch s.Name {
		case "process " + orders.DefaultInputTopic:
			record = s
		case "commit":
			commit = s
		}
	}
	if record == nil || commit == nil {
		t.Fatalf("the collector got %d spans, without a record's or a commit's span", len(collector.spans))
	}
	if got := hex.EncodeToString(record.TraceId); got != traceID {
		t.Errorf("the record is traced in %s; want its envelope's traceId %s", got, traceID)
	}
	var traceparent string
	for _, h := range projection.Headers {
		if h.Key == "traceparent" {
			traceparent = string(h.Value)
		}
	}
	if want := "00-" + traceID + "-" + hex.EncodeToString(record.SpanId) + "-01"; traceparent != want {
		t.Errorf("the projection carries traceparent %q; want %q", traceparent, want)
	}
}

// TestTracingFlagsRefuseWhatCannotWork: an endpoint that is not an http(s)
// URL and a sample ratio outside [0, 1] are errors naming the flag.
func TestTracingFlagsRefuseWhatCannotWork(t *testing.T) {
	for _, c := range []struct {
		cfg  tracingConfig
		flag string
	}{
		{tracingConfig{OTLPEndpoint: "127.0.0.1:4318", SampleRatio: 1}, "--otlp-endpoint"},
		{tracingConfig{OTLPEndpoint: "grpc://collector:4317", SampleRatio: 1}, "--otlp-endpoint"},
		{tracingConfig{Stdout: true, SampleRatio: 1.5}, "--trace-sample-ratio"},
		{tracingConfig{Stdout: true, SampleRatio: -0.1}, "--trace-sample-ratio"},
	} {
		tp, stop, err := newTracing(c.cfg, "orders", slog.Default())
		if err == nil {
			stop()
			_ = tp
			t.Errorf("%+v: no error", c.cfg)
			continue
		}
		if !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%+v: error %q does not name %s", c.cfg, err, c.flag)
		}
	}
}

// TestTracingErrorsAreWarningsOfTheApplication: an export that fails (a
// collector that is down) is logged as a warning by the application's
// logger, saying that spans were lost, not as OpenTelemetry's bare
// informational line.
func TestTracingErrorsAreWarningsOfTheApplication(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil)).With("application", "orders")
	tp, stop, err := newTracing(tracingConfig{OTLPEndpoint: "http://127.0.0.1:4318", SampleRatio: 1}, "orders", log)
	if err != nil {
		t.Fatal(err)
	}
	_ = tp
	otel.Handle(errors.New("traces export: connection refused"))
	stop()
	got := buf.String()
	for _, want := range []string{"level=WARN", "application=orders", "tracing", "connection refused"} {
		if !strings.Contains(got, want) {
			t.Errorf("the log %q lacks %q", got, want)
		}
	}
}
