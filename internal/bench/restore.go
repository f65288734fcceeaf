package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactly-go/exactly"
)

// untilReady starts an app and returns the time from start to Ready (the
// group joined and the first assignment's stores restored), the restored
// record count, and a stop function.
func untilReady(ctx context.Context, top *exactly.Topology, cfg exactly.Config) (time.Duration, float64, func() error, error) {
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	app, err := exactly.New(top, cfg)
	if err != nil {
		return 0, 0, nil, err
	}
	start := time.Now()
	runErr := make(chan error, 1)
	go func() { runErr <- app.Run(context.WithoutCancel(ctx)) }()
	stop := func() error { app.Close(); return <-runErr }
	select {
	case <-app.Ready():
	case err := <-runErr:
		return 0, 0, nil, fmt.Errorf("app stopped before ready: %v", err)
	case <-time.After(3 * time.Minute):
		stop()
		return 0, 0, nil, errors.New("app not ready in 3 minutes")
	}
	took := time.Since(start)
	return took, gatherSum(reg, "exactly_restore_records_total"), stop, nil
}

// gatherSum adds up every series of a counter or gauge family.
func gatherSum(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func (r *runner) restoreRecords() int {
	if r.opts.Quick {
		return 30_000
	}
	return 300_000
}

// restore measures rebuilding a Pebble store from its changelog: in full
// (an empty state directory) and the delta after a checkpoint (a state
// directory that missed a tenth more records, processed by another
// instance), and the join-only baseline of an up-to-date directory.
func (r *runner) restore(ctx context.Context) error {
	n := r.restoreRecords()
	r.progress("restore: %d changelog records", n)
	for range r.lightReps() {
		if err := r.restoreOnce(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) restoreOnce(ctx context.Context, n int) error {
	c, err := newCluster("input", "output")
	if err != nil {
		return err
	}
	defer c.Close()
	// Every record has its own key: the changelog holds n distinct entries.
	if err := c.produce(ctx, sizedRecords("input", n, 100, n)); err != nil {
		return err
	}
	top, err := CountingTopology("input", "output", true)
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp("", "exactly-bench-restore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	cfg := func(dir string) exactly.Config {
		cfg := appConfig(c.brokers, "restore", true, 100*time.Millisecond)
		cfg.StateDir = filepath.Join(root, dir)
		return cfg
	}
	if _, _, err := (appRun{top: top, cfg: cfg("a"), records: n}).run(ctx); err != nil {
		return fmt.Errorf("fill changelog: %w", err)
	}

	took, restored, stop, err := untilReady(ctx, top, cfg("b"))
	if err != nil {
		return fmt.Errorf("full restore: %w", err)
	}
	if err := stop(); err != nil {
		return err
	}
	if int(restored) != n {
		return fmt.Errorf("full restore applied %.0f changelog records, want %d", restored, n)
	}
	r.add("restore_full", "records/s", n, float64(n)/took.Seconds())
	r.add("restore_full_seconds", "s", n, took.Seconds())

	// Instance b processes a tenth more; a's checkpoint is now behind by it.
	delta := n / 10
	more := sizedRecords("input", delta, 100, delta)
	for i, rec := range more {
		rec.Key = fmt.Appendf(nil, "delta-%d", i)
	}
	if err := c.produce(ctx, more); err != nil {
		return err
	}
	if _, _, err := (appRun{top: top, cfg: cfg("b"), records: delta}).run(ctx); err != nil {
		return fmt.Errorf("process delta: %w", err)
	}
	took, restored, stop, err = untilReady(ctx, top, cfg("a"))
	if err != nil {
		return fmt.Errorf("delta restore: %w", err)
	}
	if err := stop(); err != nil {
		return err
	}
	if int(restored) != delta {
		return fmt.Errorf("delta restore applied %.0f changelog records, want %d", restored, delta)
	}
	r.add("restore_delta_seconds", "s", delta, took.Seconds())
	r.add("restore_delta", "records/s", delta, float64(delta)/took.Seconds())

	took, restored, stop, err = untilReady(ctx, top, cfg("b"))
	if err != nil {
		return fmt.Errorf("restart up to date: %w", err)
	}
	if err := stop(); err != nil {
		return err
	}
	if restored != 0 {
		return fmt.Errorf("an up-to-date store restored %.0f records", restored)
	}
	r.add("restore_none_seconds", "s", 0, took.Seconds())
	return nil
}
