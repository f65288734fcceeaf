package relay

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rows     prometheus.Counter
	restarts prometheus.Counter
	latency  prometheus.Histogram

	mu       sync.Mutex
	lagBytes float64
	oldest   time.Time // commit time of the oldest unacknowledged row; zero when none
}

// newMetrics creates the relay's metrics and registers them with reg (nil:
// nowhere). A registry holds one relay of each mode: the lag gauges read
// the relay that registered them.
func newMetrics(reg prometheus.Registerer, mode Mode) (*metrics, error) {
	labels := prometheus.Labels{"mode": string(mode)}
	m := &metrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_rows_total", ConstLabels: labels,
			Help: "Outbox rows published and acknowledged by Kafka.",
		}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_session_restarts_total", ConstLabels: labels,
			Help: "Relay sessions that ended in an error and were restarted.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "outbox_relay_publish_latency_seconds", ConstLabels: labels,
			Help:    "Time from the row's commit (CDC) or creation (poll) to Kafka's acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	if reg == nil {
		return m, nil
	}
	lagBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outbox_relay_lag_bytes", ConstLabels: labels,
		Help: "WAL between the server's position and the slot position the relay confirmed (CDC).",
	}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.lagBytes
	})
	lagSeconds := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outbox_relay_lag_seconds", ConstLabels: labels,
		Help: "Age of the oldest row read but not yet acknowledged by Kafka; 0 when caught up.",
	}, func() float64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.oldest.IsZero() {
			return 0
		}
		return time.Since(m.oldest).Seconds()
	})
	for _, c := range []prometheus.Collector{m.rows, m.restarts, m.latency, lagBytes, lagSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) setLag(bytes float64, oldest time.Time) {
	m.mu.Lock()
	m.lagBytes, m.oldest = bytes, oldest
	m.mu.Unlock()
}

func (m *metrics) acked(n int, since time.Time) {
	m.rows.Add(float64(n))
	if !since.IsZero() {
		m.latency.Observe(time.Since(since).Seconds())
	}
}
