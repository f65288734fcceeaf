// Package metrics registers the collectors of the library's packages with
// the prometheus.Registerer an application gives them, under one rule: a
// nil Registerer registers nothing, and registering an equal collector
// again (the same topology built twice against one registry, two inboxes
// of one group) reuses the one registered first instead of failing.
package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c with reg and returns the collector to update: c,
// or the equal collector (same name and labels) that reg already holds.
// With a nil reg it returns c, unregistered. Any other refusal (a metric
// of the same name with other label names or help) is returned with c.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
