package exactly_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/metrics"
)

// waitMetric waits until the sum of a metric's series satisfies ok.
func waitMetric(t *testing.T, reg prometheus.Gatherer, name string, timeout time.Duration, ok func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, err := metrics.Sum(reg, name)
		if err == nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (err %v) after %v", name, v, err, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStandbyOwnerLeavingRestoresOnlyTheDelta runs two instances with one
// standby replica each: every task's standby lives on the other instance
// and catches up with the changelog. When one instance leaves, the other
// takes its tasks over from its standbys and restores nothing that they
// had applied; the output stays exactly once.
func TestStandbyOwnerLeavingRestoresOnlyTheDelta(t *testing.T) {
	for _, persistent := range []bool{true, false} {
		t.Run(map[bool]string{true: "pebble", false: "memory"}[persistent], func(t *testing.T) {
			const keys = 50
			brokers := newCluster(t, 4)
			top := countingApp(t, persistent)
			regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
			cfg := func(reg *prometheus.Registry) exactly.Config {
				c := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
				c.StandbyReplicas = 1
				c.Registerer = reg
				return c
			}
			stopA := startApp(t, top, cfg(regA))
			stopB := startApp(t, top, cfg(regB))
			defer stopB()
			produceInputs(t, brokers, 0, 2000, keys)
			readCommitted(t, brokers, 2000, 60*time.Second)
			time.Sleep(time.Second) // standbys fetch at least every 250ms
			// Two tasks each, a standby of each of the other's.
			for _, reg := range []*prometheus.Registry{regA, regB} {
				waitMetric(t, reg, "exactly_standby_tasks", 30*time.Second, func(v float64) bool { return v == 2 })
				waitMetric(t, reg, "exactly_standby_lag_records", 30*time.Second, func(v float64) bool { return v == 0 })
			}
			applied, _ := metrics.Sum(regB, "exactly_standby_records_total")
			restoredBefore, _ := metrics.Sum(regB, "exactly_restore_records_total")
			if err := stopA(); err != nil {
				t.Fatal(err)
			}
			waitMetric(t, regB, "exactly_active_tasks", 30*time.Second, func(v float64) bool { return v == 4 })
			restored, _ := metrics.Sum(regB, "exactly_restore_records_total")
			t.Logf("standby applied %.0f changelog records; the takeover restored %.0f", applied, restored-restoredBefore)
			if applied == 0 || restored != restoredBefore {
				t.Fatalf("the takeover restored %.0f records; its standbys were caught up (applied %.0f)", restored-restoredBefore, applied)
			}
			produceInputs(t, brokers, 2000, 3000, keys)
			checkExactlyOnce(t, readCommitted(t, brokers, 3000, 60*time.Second), 3000, keys)
			waitMetric(t, regB, "exactly_standby_tasks", 10*time.Second, func(v float64) bool { return v == 0 })
		})
	}
}
