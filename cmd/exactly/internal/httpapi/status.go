package httpapi

import (
	_ "embed"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Metric names the status summarises: the runtime's and the ready
// processors'. A metric that is not registered reads as zero.
const (
	metricProcessed    = "exactly_records_processed_total"
	metricProduced     = "exactly_records_produced_total"
	metricLag          = "exactly_consumer_lag"
	metricTransactions = "exactly_transactions_total"
	metricDeadLetters  = "exactly_dead_letter_records_total"
	metricActiveTasks  = "exactly_active_tasks"
	metricRebalances   = "exactly_rebalances_total"
	metricE2ELatency   = "exactly_record_e2e_latency_seconds"
	metricDuplicates   = "duplicates_skipped_total"
	metricConflicting  = "duplicates_conflicting_total"
	metricBuffered     = "events_buffered_total"
	metricBufferSize   = "buffer_size"
	metricExpired      = "events_expired_total"
)

// Totals are the instance's metrics at one moment: counters since the
// process started, gauges as they stand.
type Totals struct {
	Processed             float64            `json:"processed"`
	Produced              float64            `json:"produced"`
	Lag                   float64            `json:"lag"`
	DuplicatesSkipped     float64            `json:"duplicatesSkipped"`
	DuplicatesConflicting float64            `json:"duplicatesConflicting"`
	EventsBuffered        float64            `json:"eventsBuffered"`
	BufferSize            float64            `json:"bufferSize"`
	EventsExpired         float64            `json:"eventsExpired"`
	DeadLetters           float64            `json:"deadLetters"`
	DeadLettersByTopic    map[string]float64 `json:"deadLettersByTopic"`
	TransactionsCommitted float64            `json:"transactionsCommitted"`
	TransactionsAborted   float64            `json:"transactionsAborted"`
	ActiveTasks           float64            `json:"activeTasks"`
	Rebalances            float64            `json:"rebalances"`
	// e2e latency histogram sum and count, for interval means.
	latencySum   float64
	latencyCount float64
}

// Sample is one point of the status history: rates over the interval
// since the previous sample, and gauges at its end.
type Sample struct {
	Time                  int64   `json:"t"` // epoch milliseconds
	ProcessedPerSecond    float64 `json:"processedPerSecond"`
	ProducedPerSecond     float64 `json:"producedPerSecond"`
	Lag                   float64 `json:"lag"`
	DuplicatesPerSecond   float64 `json:"duplicatesPerSecond"`
	BufferSize            float64 `json:"bufferSize"`
	ExpiredPerSecond      float64 `json:"expiredPerSecond"`
	DeadLettersPerSecond  float64 `json:"deadLettersPerSecond"`
	CommitsPerSecond      float64 `json:"commitsPerSecond"`
	AbortsPerSecond       float64 `json:"abortsPerSecond"`
	E2ELatencyMillis      float64 `json:"e2eLatencyMillis"` // mean over the interval; 0 when nothing committed
	ActiveTasks           float64 `json:"activeTasks"`
	TransactionsCommitted float64 `json:"transactionsCommitted"`
}

// Status is the body of /status.json.
type Status struct {
	Application   string   `json:"application"`
	Instance      string   `json:"instance,omitempty"`
	Ready         bool     `json:"ready"`
	StartedAt     int64    `json:"startedAt"` // epoch milliseconds
	UptimeSeconds float64  `json:"uptimeSeconds"`
	Totals        Totals   `json:"totals"`
	Samples       []Sample `json:"samples"` // oldest first
	// Routing is absent when the server was given no Options.Routing.
	Routing *Routing `json:"routing,omitempty"`
}

// history is a bounded ring of samples, safe for concurrent use.
type history struct {
	mu      sync.Mutex
	max     int
	samples []Sample
	last    Totals
	lastAt  time.Time
}

func newHistory(max int) *history { return &history{max: max} }

// record gathers reg and appends a sample of the interval since the last
// one. The first call only sets the baseline.
func (h *history) record(reg prometheus.Gatherer, now time.Time) error {
	t, err := gatherTotals(reg)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lastAt.IsZero() {
		h.samples = append(h.samples, sampleBetween(h.last, t, now.Sub(h.lastAt), now))
		if len(h.samples) > h.max {
			h.samples = append(h.samples[:0], h.samples[len(h.samples)-h.max:]...)
		}
	}
	h.last, h.lastAt = t, now
	return nil
}

func (h *history) snapshot() []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Sample, len(h.samples))
	copy(out, h.samples)
	return out
}

func sampleBetween(prev, cur Totals, elapsed time.Duration, at time.Time) Sample {
	secs := elapsed.Seconds()
	rate := func(a, b float64) float64 {
		if secs <= 0 || b < a {
			return 0
		}
		return (b - a) / secs
	}
	var latency float64
	if n := cur.latencyCount - prev.latencyCount; n > 0 {
		latency = (cur.latencySum - prev.latencySum) / n * 1000
	}
	return Sample{
		Time:                  at.UnixMilli(),
		ProcessedPerSecond:    rate(prev.Processed, cur.Processed),
		ProducedPerSecond:     rate(prev.Produced, cur.Produced),
		Lag:                   cur.Lag,
		DuplicatesPerSecond:   rate(prev.DuplicatesSkipped, cur.DuplicatesSkipped),
		BufferSize:            cur.BufferSize,
		ExpiredPerSecond:      rate(prev.EventsExpired, cur.EventsExpired),
		DeadLettersPerSecond:  rate(prev.DeadLetters, cur.DeadLetters),
		CommitsPerSecond:      rate(prev.TransactionsCommitted, cur.TransactionsCommitted),
		AbortsPerSecond:       rate(prev.TransactionsAborted, cur.TransactionsAborted),
		E2ELatencyMillis:      latency,
		ActiveTasks:           cur.ActiveTasks,
		TransactionsCommitted: cur.TransactionsCommitted,
	}
}

// gatherTotals reads the summarised metrics from reg, summing over labels.
func gatherTotals(reg prometheus.Gatherer) (Totals, error) {
	families, err := reg.Gather()
	t := Totals{DeadLettersByTopic: map[string]float64{}}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			v := value(m)
			switch f.GetName() {
			case metricProcessed:
				t.Processed += v
			case metricProduced:
				t.Produced += v
			case metricLag:
				t.Lag += v
			case metricDuplicates:
				t.DuplicatesSkipped += v
			case metricConflicting:
				t.DuplicatesConflicting += v
			case metricBuffered:
				t.EventsBuffered += v
			case metricBufferSize:
				t.BufferSize += v
			case metricExpired:
				t.EventsExpired += v
			case metricActiveTasks:
				t.ActiveTasks += v
			case metricRebalances:
				t.Rebalances += v
			case metricDeadLetters:
				t.DeadLetters += v
				t.DeadLettersByTopic[label(m, "topic")] += v
			case metricTransactions:
				switch label(m, "result") {
				case "committed":
					t.TransactionsCommitted += v
				case "aborted":
					t.TransactionsAborted += v
				}
			case metricE2ELatency:
				t.latencySum += m.GetHistogram().GetSampleSum()
				t.latencyCount += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return t, err
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// status builds /status.json from a fresh gather and the history.
func (s *Server) status() Status {
	totals, err := gatherTotals(s.opts.Registry)
	if err != nil {
		s.opts.Logger.Debug("gather metrics for /status.json", "err", err)
	}
	var routing *Routing
	if s.opts.Routing != nil {
		r := s.opts.Routing()
		routing = &r
	}
	return Status{
		Routing:       routing,
		Application:   s.opts.Application,
		Instance:      s.opts.Instance,
		Ready:         s.ready(),
		StartedAt:     s.started.UnixMilli(),
		UptimeSeconds: time.Since(s.started).Seconds(),
		Totals:        totals,
		Samples:       s.history.snapshot(),
	}
}

func (s *Server) statusJSON(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.status())
}

//go:embed status.html
var statusPage []byte

func (s *Server) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(statusPage)
}
