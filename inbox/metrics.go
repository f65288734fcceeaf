package inbox

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	processed  prometheus.Counter
	duplicates prometheus.Counter
}

// newMetrics creates the inbox counters for group and registers them with
// reg, if reg is not nil. An inbox of the same group registered before shares
// its counters.
func newMetrics(reg prometheus.Registerer, group string) *metrics {
	labels := prometheus.Labels{"consumer_group": group}
	m := &metrics{
		processed: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "inbox_events_processed_total",
			Help:        "Events whose effect ran and committed.",
			ConstLabels: labels,
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "inbox_duplicates_skipped_total",
			Help:        "Deliveries of already processed events; no effect ran.",
			ConstLabels: labels,
		}),
	}
	if reg != nil {
		m.processed = register(reg, m.processed)
		m.duplicates = register(reg, m.duplicates)
	}
	return m
}

func register(reg prometheus.Registerer, c prometheus.Counter) prometheus.Counter {
	if err := reg.Register(c); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			if existing, ok := already.ExistingCollector.(prometheus.Counter); ok {
				return existing
			}
		}
		// An incompatible registration would be a programming error in the
		// caller's registry; keep counting without exposing.
	}
	return c
}
