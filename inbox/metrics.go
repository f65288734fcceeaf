package inbox

import (
	"github.com/exactly-go/exactly/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

type counters struct {
	processed  prometheus.Counter
	duplicates prometheus.Counter
}

// newMetrics creates the inbox counters for group and registers them with
// reg (see Options.Registerer).
func newMetrics(reg prometheus.Registerer, group string) *counters {
	labels := prometheus.Labels{"consumer_group": group}
	m := &counters{
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
	// A refused registration (a metric of the same name with other labels
	// in the caller's registry) leaves the counters counting unexposed.
	m.processed, _ = metrics.Register(reg, m.processed)
	m.duplicates, _ = metrics.Register(reg, m.duplicates)
	return m
}
