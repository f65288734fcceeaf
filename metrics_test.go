package exactly_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/prometheus/client_golang/prometheus"
)

// histogramCount is the number of observations of the histogram called
// name, over all its series.
func histogramCount(t testing.TB, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// TestRuntimeMetricsMoveWithTheWork runs an instance over a known input and
// checks that the operations metrics say what happened: every task
// counted its records, the worker rebalanced and
// polled, and a second instance with the same static id fenced the
// first.
func TestRuntimeMetricsMoveWithTheWork(t *testing.T) {
	brokers := newCluster(t, 3)
	const keys, n = 5, 300
	produceInputs(t, brokers, 0, n, keys)
	reg := prometheus.NewRegistry()
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.Registerer, cfg.InstanceID = reg, "same"
	app, err := exactly.New(countingApp(t, true), cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Run(context.Background()) }()
	defer app.Close()
	checkExactlyOnce(t, readCommitted(t, brokers, n, 30*time.Second), n, keys)

	if got := histogramCount(t, reg, "exactly_rebalance_duration_seconds"); got < 1 {
		t.Errorf("exactly_rebalance_duration_seconds observed %d rebalances, want at least the first", got)
	}
	if got := histogramCount(t, reg, "exactly_poll_latency_seconds"); got < 1 {
		t.Errorf("exactly_poll_latency_seconds observed %d polls", got)
	}
	perTask, total := metricSum(t, reg, "exactly_task_records_processed_total"), metricSum(t, reg, "exactly_records_processed_total")
	if perTask != total || total < n {
		t.Errorf("exactly_task_records_processed_total sums to %v, exactly_records_processed_total is %v; want equal and at least %d", perTask, total, n)
	}
	for p := range 3 {
		if v := countWithLabel(t, reg, "exactly_task_records_processed_total", "task", fmt.Sprint("0_", p)); v == 0 {
			t.Errorf("task 0_%d processed nothing by its metric", p)
		}
	}
	if got := metricSum(t, reg, "exactly_fenced_producers_total"); got != 0 {
		t.Fatalf("exactly_fenced_producers_total = %v before any other instance ran", got)
	}

	// A second instance with the same static id takes the member's place:
	// the first must stop with a ConfigError (rejoining would fence the
	// other in turn), counted as fenced.
	cfg2 := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg2.InstanceID = "same"
	stop := startApp(t, countingApp(t, true), cfg2)
	defer stop()
	select {
	case err := <-done:
		var ce *exactly.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "InstanceID") {
			t.Fatalf("the replaced static member's Run returned %v, want a *ConfigError naming InstanceID", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the replaced static member kept running")
	}
	if got := metricSum(t, reg, "exactly_fenced_producers_total"); got != 1 {
		t.Errorf("exactly_fenced_producers_total = %v, want 1", got)
	}
}

// TestRestoreMetricsCountWhatWasRead restores an instance's three tasks
// into an empty state directory: each restore is observed once, and the
// records read are the changelog's.
func TestRestoreMetricsCountWhatWasRead(t *testing.T) {
	brokers := newCluster(t, 3)
	const keys, n = 5, 300
	produceInputs(t, brokers, 0, n, keys)
	stop := startApp(t, countingApp(t, true), appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2))
	readCommitted(t, brokers, n, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	changelog := 0
	for p := range int32(3) {
		for _, r := range changelogRecords(t, brokers, p) {
			if !r.Attrs.IsControl() {
				changelog++
			}
		}
	}
	reg := prometheus.NewRegistry()
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.Registerer = reg
	app, err := exactly.New(countingApp(t, true), cfg)
	if err != nil {
		t.Fatal(err)
	}
	go app.Run(context.Background())
	defer app.Close()
	select {
	case <-app.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("not ready")
	}
	if got := histogramCount(t, reg, "exactly_restore_duration_seconds"); got != 3 {
		t.Errorf("exactly_restore_duration_seconds observed %d restores, want 3 (one per task)", got)
	}
	if got := metricSum(t, reg, "exactly_restore_records_total"); int(got) != changelog {
		t.Errorf("exactly_restore_records_total = %v, want the %d changelog records", got, changelog)
	}
}

// metricSumWith adds up the series of name whose label has the value.
