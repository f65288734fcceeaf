package httpapi

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/prometheus/client_golang/prometheus"
)

func request(s *Server, path string) (int, map[string]any, http.Header) {
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	var body map[string]any
	json.Unmarshal(rec.Body.Bytes(), &body)
	return rec.Code, body, rec.Header()
}

// TestReadyzAnswers503UntilReadyIsClosed proves readiness follows the
// application's Ready channel, while liveness is 200 throughout.
func TestReadyzAnswers503UntilReadyIsClosed(t *testing.T) {
	ready := make(chan struct{})
	s := New(Options{Ready: ready})
	if code, _, _ := request(s, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready = %d; want 503", code)
	}
	if code, _, _ := request(s, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d; want 200", code)
	}
	close(ready)
	if code, _, _ := request(s, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after ready = %d; want 200", code)
	}
}

// TestStatusHistoryRatesAreDeltasOverElapsedTime proves samples turn
// counters into per-second rates between gathers, and keep gauges and
// dead letters by topic as they stand.
func TestStatusHistoryRatesAreDeltasOverElapsedTime(t *testing.T) {
	reg := prometheus.NewRegistry()
	processed := prometheus.NewCounter(prometheus.CounterOpts{Name: metricProcessed})
	buffer := prometheus.NewGauge(prometheus.GaugeOpts{Name: metricBufferSize})
	dlq := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricDeadLetters}, []string{"topic"})
	txns := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricTransactions}, []string{"result"})
	reg.MustRegister(processed, buffer, dlq, txns)

	h := newHistory(2)
	start := time.UnixMilli(1_000_000)
	if err := h.record(reg, start); err != nil {
		t.Fatal(err)
	}
	processed.Add(500)
	buffer.Set(7)
	dlq.WithLabelValues("a-dlq").Add(4)
	txns.WithLabelValues("committed").Add(20)
	txns.WithLabelValues("aborted").Add(2)
	if err := h.record(reg, start.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	got := h.snapshot()
	want := Sample{Time: 1_002_000, ProcessedPerSecond: 250, BufferSize: 7, DeadLettersPerSecond: 2,
		CommitsPerSecond: 10, AbortsPerSecond: 1, TransactionsCommitted: 20}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("samples = %+v; want [%+v]", got, want)
	}
	for i := range 3 {
		h.record(reg, start.Add(time.Duration(3+i)*time.Second))
	}
	if n := len(h.snapshot()); n != 2 {
		t.Errorf("history holds %d samples; want its bound 2", n)
	}

	s := New(Options{Application: "app", Registry: reg})
	st := s.status()
	if st.Totals.DeadLettersByTopic["a-dlq"] != 4 || st.Totals.TransactionsAborted != 2 || st.Application != "app" {
		t.Errorf("status totals = %+v", st.Totals)
	}
}

// TestServeStopsWithItsContext proves Serve returns once its context ends.
func TestServeStopsWithItsContext(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	ln := srv.Listener
	s := New(Options{SampleInterval: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// TestStatusSeparatesPipelineLatencyFromEventTimeLag: records a year old by
// their timestamps, committed 40 ms after their fetch, read as an
// event-time lag of a year and a pipeline latency of 40 ms (the 95th
// percentile within its bucket), measured from the fetch.
func TestStatusSeparatesPipelineLatencyFromEventTimeLag(t *testing.T) {
	reg := prometheus.NewRegistry()
	lag := prometheus.NewHistogram(prometheus.HistogramOpts{Name: metricEventTimeLag, Buckets: []float64{1, 3600}})
	pipeline := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: metricPipeline, Buckets: []float64{.025, .05, .1}}, []string{"since"})
	reg.MustRegister(lag, pipeline)
	pipeline.WithLabelValues("append") // a series without observations

	h := newHistory(10)
	start := time.UnixMilli(1_000_000)
	if err := h.record(reg, start); err != nil {
		t.Fatal(err)
	}
	const year = 365 * 24 * 3600.0
	for range 100 {
		lag.Observe(year)
		pipeline.WithLabelValues("fetch").Observe(0.04)
	}
	if err := h.record(reg, start.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	got := h.snapshot()[0]
	if got.EventTimeLagMillis != year*1000 {
		t.Errorf("event-time lag %v ms; want a year, %v ms", got.EventTimeLagMillis, year*1000)
	}
	if math.Abs(got.PipelineLatencyMillis-40) > 1e-9 {
		t.Errorf("pipeline latency mean %v ms; want 40", got.PipelineLatencyMillis)
	}
	// All 100 in (25 ms, 50 ms]: the 95th lies at 95% of that bucket.
	if want := 25 + 0.95*25; math.Abs(got.PipelineLatencyP95Millis-want) > 1e-9 {
		t.Errorf("pipeline latency p95 %v ms; want %v", got.PipelineLatencyP95Millis, want)
	}
	if err := h.record(reg, start.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if idle := h.snapshot()[1]; idle.PipelineLatencyP95Millis != 0 || idle.EventTimeLagMillis != 0 {
		t.Errorf("an interval without commits reads %+v; want zero latencies", idle)
	}
	st := New(Options{Registry: reg}).status()
	if len(st.Totals.PipelineLatencySince) != 1 || st.Totals.PipelineLatencySince[0] != "fetch" {
		t.Errorf("pipeline latency since %v; want [fetch]", st.Totals.PipelineLatencySince)
	}
}

// TestStatusReportsRestoreProgress: a restore under way reads as restored
// of total offsets with its percent and rate; a finished one as 100%.
func TestStatusReportsRestoreProgress(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	got := restoresOf([]exactly.RestoreProgress{
		{Store: "s", Partition: 1, Task: "0_1", StartOffset: 100, EndOffset: 1100, Position: 350, Records: 240, Started: now.Add(-2 * time.Second)},
		{Store: "s", Partition: 2, Task: "0_2", StartOffset: 0, EndOffset: 500, Position: 500, Records: 480, Started: now.Add(-3 * time.Second), Finished: now.Add(-time.Second)},
	}, now)
	want := []Restore{
		{Store: "s", Partition: 1, Task: "0_1", Restored: 250, Total: 1000, Percent: 25, Records: 240, RecordsPerSecond: 120, ElapsedSeconds: 2},
		{Store: "s", Partition: 2, Task: "0_2", Restored: 500, Total: 500, Percent: 100, Done: true, Records: 480, RecordsPerSecond: 240, ElapsedSeconds: 2},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("restores = %+v\nwant %+v", got, want)
	}
}
