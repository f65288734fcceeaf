package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/counting"
)

// CountingTopology is the counting topology of the throughput scenarios
// (examples/counting): input → count per key (a logged store) → one JSON
// output per input.
func CountingTopology(input, output string, persistent bool) (*exactly.Topology, error) {
	return counting.Topology(input, output, persistent)
}

// appConfig is the configuration every scenario's app starts from. The
// runtime's log is discarded: it would go to slog.Default(), mixed into
// the benchmark's output, and cost time the ceiling does not spend.
func appConfig(brokers []string, appID string, eos bool, interval time.Duration) exactly.Config {
	g := exactly.AtLeastOnce
	if eos {
		g = exactly.ExactlyOnceV2
	}
	return exactly.Config{
		Brokers:            brokers,
		ApplicationID:      appID,
		Guarantee:          g,
		CommitInterval:     interval,
		SessionTimeout:     3 * time.Second,
		RebalanceTimeout:   5 * time.Second,
		TransactionTimeout: max(10*time.Second, 2*interval),
		CreateTopics:       true,
		Logger:             slog.New(slog.DiscardHandler),
	}
}

var intervals = []struct {
	name     string
	interval time.Duration
}{{"100ms", 100 * time.Millisecond}, {"1s", time.Second}, {"30s", 30 * time.Second}}

// sizeRecords is the input size of one throughput repetition.
func (r *runner) sizeRecords(bytes int) int {
	n := 200_000
	if r.opts.Quick {
		n = 20_000
	}
	if bytes > 500 {
		n /= 2
	}
	return n
}

func (r *runner) ceilingOnce(ctx context.Context, n, size int) (float64, error) {
	c, err := newCluster("input", "output")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.produce(ctx, sizedRecords("input", n, size, 1000)); err != nil {
		return 0, err
	}
	d, _, err := rawLoop(ctx, c.brokers, "input", "output", n)
	if err != nil {
		return 0, err
	}
	return float64(n) / d.Seconds(), nil
}

type countingRun struct {
	records, size int
	eos           bool
	interval      time.Duration
}

func (r *runner) countingOnce(ctx context.Context, cr countingRun) (float64, error) {
	c, err := newCluster("input", "output")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.produce(ctx, sizedRecords("input", cr.records, cr.size, 1000)); err != nil {
		return 0, err
	}
	top, err := CountingTopology("input", "output", false)
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "exactly-bench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	cfg := appConfig(c.brokers, "counting", cr.eos, cr.interval)
	cfg.StateDir = dir
	d, _, err := appRun{top: top, cfg: cfg, records: cr.records}.run(ctx)
	if err != nil {
		return 0, err
	}
	if got, err := committedOffsets(ctx, c.brokers, "counting", "input"); err != nil || got != int64(cr.records) {
		return 0, fmt.Errorf("counting run committed %d input offsets of %d (%v)", got, cr.records, err)
	}
	return float64(cr.records) / d.Seconds(), nil
}

// counting runs the ceiling and the counting topology under both
// guarantees at each commit interval and size, repetitions interleaved so
// that drift of the machine hits every scenario alike.
func (r *runner) counting(ctx context.Context) error {
	r.progress("ceiling and counting topology")
	for rep := range r.reps {
		for _, s := range sizes {
			n := r.sizeRecords(s.bytes)
			if r.want("ceiling") {
				v, err := r.ceilingOnce(ctx, n, s.bytes)
				if err != nil {
					return fmt.Errorf("ceiling %s: %w", s.name, err)
				}
				r.add("ceiling_"+s.name, "records/s", n, v)
			}
			if !r.want("counting") {
				continue
			}
			for _, iv := range intervals {
				// Alternate which guarantee runs first, so that neither always
				// meets the other's leftovers (heap, broker state).
				for _, eos := range []bool{rep%2 == 1, rep%2 == 0} {
					g := map[bool]string{false: "alos", true: "eos"}[eos]
					name := fmt.Sprintf("counting_%s_%s_%s", g, iv.name, s.name)
					v, err := r.countingOnce(ctx, countingRun{records: n, size: s.bytes, eos: eos, interval: iv.interval})
					if err != nil {
						return fmt.Errorf("%s: %w", name, err)
					}
					r.add(name, "records/s", n, v)
					if iv.name == "30s" && rep == 0 {
						r.note(name, "run shorter than one interval: one commit, at close")
					}
				}
			}
		}
	}
	return nil
}
