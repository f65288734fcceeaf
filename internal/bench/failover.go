package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/counting"
)

// failover measures how long the tasks of an instance that leaves take to
// run again on the instance that stays: from the leaving instance's Close
// to the other instance running every task, with no standby replica (the
// tasks restore their whole changelog) and with one (they restore what
// their standbys had not applied), over the same Pebble store of counts
// (300,000 keys with Quick, 1,000,000 without), written to its changelog
// before the instances start. The leaving instance closes, and so leaves the
// group at once: a SIGKILLed instance is noticed after SessionTimeout, the
// same wait with and without a standby, which the ratio leaves out.
func (r *runner) failover(ctx context.Context) error {
	// Quick keeps a store large enough for its restore to outweigh the
	// rebalance, which both runs pay.
	n := 300_000
	if !r.opts.Quick {
		n = 1_000_000
	}
	r.progress("failover: %d keys in Pebble, with and without a standby replica", n)
	for range r.lightReps() {
		for _, standbys := range []int{0, 1} {
			name := map[int]string{0: "none", 1: "standby"}[standbys]
			took, restored, err := r.failoverOnce(ctx, n, standbys)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			r.add("failover_"+name+"_seconds", "s", n, took.Seconds())
			r.add("failover_"+name+"_restored", "records", n, restored)
			if standbys == 0 && restored > 0 {
				r.add("failover_restore", "records/s", n, restored/took.Seconds())
			}
		}
	}
	r.note("failover_none_seconds", "owner leaves -> new owner runs its tasks; whole changelogs restored")
	r.note("failover_standby_seconds", "the same, from standby replicas")
	return nil
}

// failoverOnce writes a changelog of n counts, starts instance a (which
// restores them all), starts instance b (which takes half the tasks, and
// with standbys keeps copies of a's), closes a and returns the time until
// b runs every task, and the records b restored meanwhile.
func (r *runner) failoverOnce(ctx context.Context, n, standbys int) (time.Duration, float64, error) {
	c, err := newCluster("input", "output")
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if err := c.writeCounts(ctx, "failover-"+counting.StoreName+"-changelog", n); err != nil {
		return 0, 0, err
	}
	top, err := CountingTopology("input", "output", true)
	if err != nil {
		return 0, 0, err
	}
	root, err := os.MkdirTemp("", "exactly-bench-failover-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(root)
	start := func(name string) (*exactly.App, *prometheus.Registry, func() error, error) {
		cfg := appConfig(c.brokers, "failover", true, 100*time.Millisecond)
		cfg.StateDir = filepath.Join(root, name)
		cfg.StandbyReplicas = standbys
		// Heartbeats every 100ms: the survivor learns of the rebalance
		// quickly in both runs.
		cfg.SessionTimeout = 300 * time.Millisecond
		reg := prometheus.NewRegistry()
		cfg.Registerer = reg
		app, err := exactly.New(top, cfg)
		if err != nil {
			return nil, nil, nil, err
		}
		runErr := make(chan error, 1)
		go func() { runErr <- app.Run(context.WithoutCancel(ctx)) }()
		return app, reg, sync.OnceValue(func() error { app.Close(); return <-runErr }), nil
	}
	a, _, stopA, err := start("a")
	if err != nil {
		return 0, 0, err
	}
	defer stopA()
	select {
	case <-a.Ready():
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(3 * time.Minute):
		return 0, 0, errors.New("instance a not ready in 3 minutes")
	}
	b, regB, stopB, err := start("b")
	if err != nil {
		return 0, 0, err
	}
	defer stopB()
	// b runs half the tasks and, with standbys, keeps caught-up copies of
	// the other half.
	err = until(ctx, 3*time.Minute, func() bool {
		running := 0
		for _, t := range b.LocalTasks() {
			if !t.Restoring {
				running++
			}
		}
		caughtUp := 0
		for _, t := range b.StandbyTasks() {
			if t.CaughtUp && t.Lag == 0 {
				caughtUp++
			}
		}
		return running == partitions/2 && caughtUp == standbys*partitions/2
	})
	if err != nil {
		return 0, 0, fmt.Errorf("instance b taking half the tasks: %w", err)
	}
	restoredBefore := gatherSum(regB, "exactly_restore_records_total")
	began := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- stopA() }()
	err = until(ctx, 3*time.Minute, func() bool {
		tasks := b.LocalTasks()
		for _, t := range tasks {
			if t.Restoring {
				return false
			}
		}
		return len(tasks) == partitions
	})
	took := time.Since(began)
	if err != nil {
		return 0, 0, fmt.Errorf("instance b taking over: %w", err)
	}
	if err := <-stopped; err != nil {
		return 0, 0, err
	}
	return took, gatherSum(regB, "exactly_restore_records_total") - restoredBefore, nil
}

// until polls cond every 2ms until it holds, ctx ends or timeout passes.
func until(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// writeCounts creates a compacted changelog topic and writes n counts to
// it, a key each, spread over the partitions: the store a counting
// application would have after n distinct keys.
func (c *cluster) writeCounts(ctx context.Context, topic string, n int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	compact := "compact"
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, -1, map[string]*string{"cleanup.policy": &compact}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", topic, err)
	}
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Partition: int32(i % partitions), Key: fmt.Appendf(nil, "key-%d", i), Value: binary.BigEndian.AppendUint64(nil, 1)}
	}
	return c.produce(ctx, recs)
}
