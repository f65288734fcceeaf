package sideeffect

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the collectors a side-effect processor updates. They count
// what happened, including calls made in a transaction that later aborted
// (those are exactly the calls the idempotency key protects); the committed
// truth is in the output and dead-letter topics. Nil collectors are not
// updated.
type Metrics struct {
	// Calls counts call attempts by outcome: success, transient, permanent
	// (sideeffect_calls_total).
	Calls *prometheus.CounterVec
	// Retries counts backoffs after a transient failure
	// (sideeffect_retries_total).
	Retries prometheus.Counter
	// Skipped counts events whose key was already recorded
	// (sideeffect_skipped_total).
	Skipped prometheus.Counter
	// DeadLetters counts events sent to the dead-letter sinks, by reason
	// (sideeffect_dead_letters_total).
	DeadLetters *prometheus.CounterVec
	// CallDuration observes each attempt's duration
	// (sideeffect_call_duration_seconds).
	CallDuration prometheus.Histogram
	// InFlight is the number of calls under way
	// (sideeffect_calls_in_flight).
	InFlight prometheus.Gauge
}

// NewMetrics returns unregistered collectors with the given constant
// labels; register Collectors() with the registry that serves /metrics.
// Processors of one application may share them: they are safe for
// concurrent use.
func NewMetrics(constLabels prometheus.Labels) Metrics {
	return Metrics{
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sideeffect_calls_total", Help: "External call attempts by outcome (success, transient, permanent).",
			ConstLabels: constLabels,
		}, []string{"outcome"}),
		Retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sideeffect_retries_total", Help: "Retries after a transient failure of an external call.",
			ConstLabels: constLabels,
		}),
		Skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sideeffect_skipped_total", Help: "Events skipped because their idempotency key was already recorded.",
			ConstLabels: constLabels,
		}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sideeffect_dead_letters_total", Help: "Events sent to the dead-letter topic, by reason.",
			ConstLabels: constLabels,
		}, []string{"reason"}),
		CallDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sideeffect_call_duration_seconds", Help: "Duration of each external call attempt.",
			ConstLabels: constLabels, Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sideeffect_calls_in_flight", Help: "External calls under way.",
			ConstLabels: constLabels,
		}),
	}
}

// Collectors returns the non-nil collectors, for registering.
func (m Metrics) Collectors() []prometheus.Collector {
	var cs []prometheus.Collector
	add := func(c prometheus.Collector, ok bool) {
		if ok {
			cs = append(cs, c)
		}
	}
	add(m.Calls, m.Calls != nil)
	add(m.Retries, m.Retries != nil)
	add(m.Skipped, m.Skipped != nil)
	add(m.DeadLetters, m.DeadLetters != nil)
	add(m.CallDuration, m.CallDuration != nil)
	add(m.InFlight, m.InFlight != nil)
	return cs
}

func (m Metrics) call(outcome string) {
	if m.Calls != nil {
		m.Calls.WithLabelValues(outcome).Inc()
	}
}

func (m Metrics) retry() {
	if m.Retries != nil {
		m.Retries.Inc()
	}
}

func (m Metrics) skipped() {
	if m.Skipped != nil {
		m.Skipped.Inc()
	}
}

func (m Metrics) deadLetter(reason string) {
	if m.DeadLetters != nil {
		m.DeadLetters.WithLabelValues(reason).Inc()
	}
}

func (m Metrics) observe(d time.Duration) {
	if m.CallDuration != nil {
		m.CallDuration.Observe(d.Seconds())
	}
}

func (m Metrics) inFlight(delta float64) {
	if m.InFlight != nil {
		m.InFlight.Add(delta)
	}
}
