// Package metrics registers the collectors of the library's packages with
// the prometheus.Registerer an application gives them, under one rule: a
// nil Registerer registers nothing, and registering an equal collector
// again (the same topology built twice against one registry, two inboxes
// of one group) reuses the one registered first instead of failing. Sum
// reads a registry back, for tests.
package metrics

import (
	"errors"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
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

// Sum adds up the values of the series of the metric called name that g
// gathers, counters and gauges alike, keeping those whose labels include
// every name-value pair in labels (name1, value1, name2, value2, …). A
// metric g does not hold sums to 0.
func Sum(g prometheus.Gatherer, name string, labels ...string) (float64, error) {
	families, err := g.Gather()
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
					return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}) {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum, nil
}
