package relay

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	rows        prometheus.Counter
	restarts    prometheus.Counter
	latency     prometheus.Histogram
	refused     prometheus.Counter
	deadLetters *prometheus.CounterVec
	republished prometheus.Counter

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
			Help: "Outbox rows relayed: their record, or their dead letter, acknowledged by Kafka.",
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
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_refused_rows_total", ConstLabels: labels,
			Help: "Outbox rows whose record the broker refuses for good (too large, invalid timestamp, invalid record): dead-lettered, or Run ends.",
		}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_dead_letters_total", ConstLabels: labels,
			Help: "Outbox rows published to the dead-letter topic instead of their own, by reason (unroutable, production-error).",
		}, []string{"reason"}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_republished_rows_total", ConstLabels: labels,
			Help: "Outbox rows published a second time to keep their aggregate's order after a refused row (without Kafka transactions only).",
		}),
	}
	for _, reason := range []string{ReasonUnroutable, ReasonProduction} {
		m.deadLetters.WithLabelValues(reason) // present at 0, for alerts on increase()
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
	for _, c := range []prometheus.Collector{m.rows, m.restarts, m.latency, m.refused, m.deadLetters, m.republished, lagBytes, lagSeconds} {
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

// relayed counts p, whose record or dead letter Kafka acknowledged.
func (m *metrics) relayed(p *pending) {
	m.rows.Inc()
	if !p.since.IsZero() {
		m.latency.Observe(time.Since(p.since).Seconds())
	}
	switch {
	case p.unroutable:
		m.deadLetters.WithLabelValues(ReasonUnroutable).Inc()
	case p.deadLettered:
		m.deadLetters.WithLabelValues(ReasonProduction).Inc()
	}
}
