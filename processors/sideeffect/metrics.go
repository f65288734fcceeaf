package sideeffect

import (
	"errors"
	"time"

	"github.com/exactly-go/exactly/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// collectors are the metrics of one side-effect processor, shared by its
// tasks (see Options.Registerer).
type collectors struct {
	calls        *prometheus.CounterVec
	retries      prometheus.Counter
	skips        prometheus.Counter
	deadLetters  *prometheus.CounterVec
	callDuration prometheus.Histogram
	calling      prometheus.Gauge
}

func newCollectors(reg prometheus.Registerer, name string) (collectors, error) {
	labels := prometheus.Labels{"processor": name}
	var c collectors
	var errs [6]error
	c.calls, errs[0] = metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sideeffect_calls_total", Help: "External call attempts by outcome (success, transient, permanent).",
		ConstLabels: labels,
	}, []string{"outcome"}))
	c.retries, errs[1] = metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sideeffect_retries_total", Help: "Retries after a transient failure of an external call.",
		ConstLabels: labels,
	}))
	c.skips, errs[2] = metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sideeffect_skipped_total", Help: "Events skipped because their idempotency key was already recorded.",
		ConstLabels: labels,
	}))
	c.deadLetters, errs[3] = metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sideeffect_dead_letters_total", Help: "Events sent to the dead-letter topic, by reason.",
		ConstLabels: labels,
	}, []string{"reason"}))
	c.callDuration, errs[4] = metrics.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sideeffect_call_duration_seconds", Help: "Duration of each external call attempt.",
		ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}))
	c.calling, errs[5] = metrics.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sideeffect_calls_in_flight", Help: "External calls under way.",
		ConstLabels: labels,
	}))
	return c, errors.Join(errs[:]...)
}

func (c collectors) call(outcome string)      { c.calls.WithLabelValues(outcome).Inc() }
func (c collectors) retry()                   { c.retries.Inc() }
func (c collectors) skipped()                 { c.skips.Inc() }
func (c collectors) deadLetter(reason string) { c.deadLetters.WithLabelValues(reason).Inc() }
func (c collectors) observe(d time.Duration)  { c.callDuration.Observe(d.Seconds()) }
func (c collectors) inFlight(delta float64)   { c.calling.Add(delta) }
