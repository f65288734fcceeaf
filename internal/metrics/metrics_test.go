package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func counter(labels prometheus.Labels) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: "things_total", Help: "Things.", ConstLabels: labels})
}

func TestRegisteringAnEqualCollectorTwiceSharesTheFirst(t *testing.T) {
	reg := prometheus.NewRegistry()
	first, err := Register(reg, counter(prometheus.Labels{"processor": "a"}))
	if err != nil {
		t.Fatal(err)
	}
	again, err := Register(reg, counter(prometheus.Labels{"processor": "a"}))
	if err != nil {
		t.Fatalf("second registration: %v", err)
	}
	other, err := Register(reg, counter(prometheus.Labels{"processor": "b"}))
	if err != nil {
		t.Fatalf("another instance: %v", err)
	}
	first.Inc()
	again.Inc()
	other.Inc()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if got["a"] != 2 || got["b"] != 1 {
		t.Fatalf("series %v, want a=2 (shared) and b=1", got)
	}
}

func TestNilRegistererRegistersNothing(t *testing.T) {
	c := counter(nil)
	got, err := Register[prometheus.Counter](nil, c)
	if err != nil || got != c {
		t.Fatalf("Register(nil) = %v, %v; want the collector itself", got, err)
	}
}

func TestAnIncompatibleCollectorIsRefused(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := Register(reg, counter(prometheus.Labels{"processor": "a"})); err != nil {
		t.Fatal(err)
	}
	if _, err := Register(reg, counter(prometheus.Labels{"node": "a"})); err == nil {
		t.Fatal("a metric of the same name with other label names was accepted")
	}
}
