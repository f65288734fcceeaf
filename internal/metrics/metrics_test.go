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

func TestSumAddsTheSeriesWithTheGivenLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "calls_total", Help: "Calls."}, []string{"outcome", "processor"})
	reg.MustRegister(calls)
	calls.WithLabelValues("success", "a").Add(2)
	calls.WithLabelValues("success", "b").Add(3)
	calls.WithLabelValues("failure", "a").Add(5)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{nil, 10},
		{[]string{"outcome", "success"}, 5},
		{[]string{"outcome", "success", "processor", "a"}, 2},
		{[]string{"outcome", "none"}, 0},
	} {
		if got, err := Sum(reg, "calls_total", c.labels...); err != nil || got != c.want {
			t.Errorf("Sum(%v) = %v, %v; want %v", c.labels, got, err, c.want)
		}
	}
	if got, _ := Sum(reg, "absent_total"); got != 0 {
		t.Errorf("an absent metric sums to %v", got)
	}
}
