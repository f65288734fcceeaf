package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

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
