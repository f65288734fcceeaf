package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/verify"
)

// Topics of the orders family; every contender writes its own outputs.
const (
	gokaOutput = "goka-order-projections"
	gokaDLQ    = "goka-order-events-dlq"
)

func (r *runner) ordersCount() int {
	if r.opts.Quick {
		return 2000
	}
	return 12000
}

// ordersInput is the generated order stream (about 11 records per order,
// with duplicates, reordering, orphans and bad records) as records.
func ordersInput(n int) []*kgo.Record {
	in := orders.Generate(orders.DefaultGenerateOptions(42, n, partitions))
	recs := make([]*kgo.Record, len(in))
	for i, r := range in {
		recs[i] = recordOf(r)
	}
	return recs
}

func recordOf(r orders.InputRecord) *kgo.Record {
	return &kgo.Record{Topic: orders.DefaultInputTopic, Partition: r.Partition, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
}

func ordersOptions(suffix string) orders.Options {
	return orders.Options{
		OutputTopic:     orders.DefaultOutputTopic + "-" + suffix,
		DeadLetterTopic: orders.DefaultDeadLetterTopic + "-" + suffix,
	}
}

// orders runs, on one broker holding the generated stream, the ceiling over
// the same records, the orders projection under both guarantees and the
// goka version, interleaved per repetition; the first repetition's outputs
// are audited by the orders verifier.
func (r *runner) orders(ctx context.Context) error {
	n := r.ordersCount()
	input := ordersInput(n)
	r.progress("orders projection: %d orders, %d records", n, len(input))
	for rep := range r.reps {
		c, err := newCluster(orders.DefaultInputTopic, warmUpTopic, "ceiling-out", gokaOutput, gokaDLQ)
		if err != nil {
			return err
		}
		err = r.ordersRep(ctx, c, input, rep)
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) ordersRep(ctx context.Context, c *cluster, input []*kgo.Record, rep int) error {
	audit := rep == 0
	if err := c.produce(ctx, input); err != nil {
		return err
	}
	n := len(input)
	d, cpu, err := rawLoop(ctx, c.brokers, orders.DefaultInputTopic, "ceiling-out", n)
	if err != nil {
		return fmt.Errorf("ceiling over orders: %w", err)
	}
	r.add("ceiling_orders", "records/s", n, float64(n)/d.Seconds())
	r.add("ceiling_orders_cpu", "µs/record", n, float64(cpu.Microseconds())/float64(n))
	// An unmeasured warm-up run on a tenth of the input, on a topic of its
	// own: the first application run on a fresh broker is markedly slower
	// whatever its guarantee.
	if err := r.ordersWarmUp(ctx, c, input[:len(input)/10]); err != nil {
		return err
	}
	// Alternate which guarantee runs first, so that neither always meets
	// the other's leftovers.
	for _, eos := range []bool{rep%2 == 1, rep%2 == 0} {
		g := map[bool]string{false: "alos", true: "eos"}[eos]
		opts := ordersOptions(g)
		top, err := orders.Topology(opts)
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "exactly-bench-")
		if err != nil {
			return err
		}
		cfg := appConfig(c.brokers, "orders-"+g, eos, 100*time.Millisecond)
		cfg.StateDir = dir
		var cpu time.Duration
		d, reg, err := appRun{top: top, cfg: cfg, records: n, cpu: &cpu}.run(ctx)
		os.RemoveAll(dir)
		if err != nil {
			return fmt.Errorf("orders %s: %w", g, err)
		}
		r.add("orders_"+g, "records/s", n, float64(n)/d.Seconds())
		r.add("orders_"+g+"_cpu", "µs/record", n, float64(cpu.Microseconds())/float64(n))
		r.add("orders_"+g+"_commit_share", "fraction", n, histogramSum(reg, "exactly_commit_latency_seconds")/d.Seconds())
		if audit {
			if err := r.audit(ctx, c, "orders_"+g, opts); err != nil {
				return err
			}
		}
		if eos {
			logged, err := changelogRecords(ctx, c.brokers, top, cfg.ApplicationID)
			if err != nil {
				return err
			}
			r.add("orders_eos_changelog_records", "records", n, float64(logged))
		}
	}
	if r.want("goka") {
		if err := r.gokaRun(ctx, c, n, audit); err != nil {
			return err
		}
	}
	return nil
}

// audit checks a contender's committed output with the orders verifier.
func (r *runner) audit(ctx context.Context, c *cluster, name string, opts orders.Options) error {
	rep, err := verify.Orders(ctx, verify.Config{Brokers: c.brokers, Options: opts, Timeout: 2 * time.Minute})
	if err != nil {
		return fmt.Errorf("audit %s: %w", name, err)
	}
	var failed []string
	for _, ch := range rep.Checks {
		if !ch.OK {
			failed = append(failed, ch.Name+" ("+ch.Detail+")")
		}
	}
	if len(failed) == 0 {
		r.report.Checks[name] = fmt.Sprintf("verifier: all %d checks pass (%d projection records, %d dead letters)", len(rep.Checks), rep.Outputs, rep.DeadLetters)
	} else {
		r.report.Checks[name] = "verifier FAILED: " + strings.Join(failed, "; ")
	}
	r.progress("  audit %s: %s", name, r.report.Checks[name])
	return nil
}

// buildGoka compiles bench/goka (its own module) before any measurement.
func (r *runner) buildGoka(ctx context.Context) error {
	if !r.want("goka") || !r.want("orders") {
		return nil
	}
	if r.opts.ModuleDir == "" {
		r.unavailable["goka_orders_alos"] = "no source tree: run from the exactly checkout"
		return nil
	}
	src := filepath.Join(r.opts.ModuleDir, "bench", "goka")
	if _, err := os.Stat(filepath.Join(src, "go.mod")); err != nil {
		r.unavailable["goka_orders_alos"] = "bench/goka not found under " + r.opts.ModuleDir
		return nil
	}
	dir, err := os.MkdirTemp("", "exactly-bench-goka-")
	if err != nil {
		return err
	}
	bin := filepath.Join(dir, "goka-bench")
	r.progress("building bench/goka")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		r.unavailable["goka_orders_alos"] = fmt.Sprintf("go build in bench/goka failed: %v: %s", err, lastLine(string(out)))
		return nil
	}
	r.progress("  built in %s", time.Since(start).Round(100*time.Millisecond))
	r.gokaBinary = bin
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// gokaRun runs the goka projection as a child process against c.
func (r *runner) gokaRun(ctx context.Context, c *cluster, n int, audit bool) error {
	if r.gokaBinary == "" {
		return nil
	}
	dir, err := os.MkdirTemp("", "exactly-bench-goka-state-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cmd := exec.CommandContext(ctx, r.gokaBinary,
		"-brokers", strings.Join(c.brokers, ","), "-records", strconv.Itoa(n),
		"-output", gokaOutput, "-dlq", gokaDLQ, "-group", "goka-orders", "-dir", dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if os.Getenv("GOKA_DEBUG") != "" {
		cmd.Stderr = io.MultiWriter(&stderr, os.Stderr)
	}
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("goka: %v: %s", err, lastLine(stderr.String()))
	}
	var res struct {
		Seconds          float64 `json:"seconds"`
		RecordsPerSecond float64 `json:"records_per_second"`
		StartupSeconds   float64 `json:"startup_seconds"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return fmt.Errorf("goka output %q: %w", out, err)
	}
	r.add("goka_orders_alos", "records/s", n, res.RecordsPerSecond)
	if audit {
		r.note("goka_orders_alos", fmt.Sprintf("goka v1.1.16, LevelDB; startup %.1f s not counted", res.StartupSeconds))
		return r.audit(ctx, c, "goka_orders_alos", orders.Options{OutputTopic: gokaOutput, DeadLetterTopic: gokaDLQ})
	}
	return nil
}

const warmUpTopic = "order-events-warm-up"

func (r *runner) ordersWarmUp(ctx context.Context, c *cluster, input []*kgo.Record) error {
	recs := make([]*kgo.Record, len(input))
	for i, rec := range input {
		cp := *rec
		cp.Topic = warmUpTopic
		recs[i] = &cp
	}
	if err := c.produce(ctx, recs); err != nil {
		return err
	}
	opts := ordersOptions("warm-up")
	opts.InputTopic = warmUpTopic
	top, err := orders.Topology(opts)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "exactly-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := appConfig(c.brokers, "orders-warm-up", true, 100*time.Millisecond)
	cfg.StateDir = dir
	if _, _, err := (appRun{top: top, cfg: cfg, records: len(recs)}).run(ctx); err != nil {
		return fmt.Errorf("orders warm-up: %w", err)
	}
	return nil
}

// changelogRecords counts the committed records of the changelog topics of
// application appID's topology top: what its stores logged.
func changelogRecords(ctx context.Context, brokers []string, top *exactly.Topology, appID string) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	topics := top.ChangelogTopics(appID)
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("list changelog ends: %w", err)
	}
	partitions := map[string]map[int32]kgo.Offset{}
	left := map[string]map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset <= 0 {
			return
		}
		if partitions[o.Topic] == nil {
			partitions[o.Topic], left[o.Topic] = map[int32]kgo.Offset{}, map[int32]int64{}
		}
		partitions[o.Topic][o.Partition] = kgo.NewOffset().AtStart()
		left[o.Topic][o.Partition] = o.Offset
	})
	if len(partitions) == 0 {
		return 0, nil
	}
	reader, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(partitions),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return 0, err
	}
	defer reader.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n := 0
	for len(left) > 0 {
		fetches := reader.PollFetches(ctx)
		if err := fetches.Err0(); err != nil {
			return 0, fmt.Errorf("read changelogs: %w", err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := left[r.Topic][r.Partition]
			if !ok {
				return
			}
			if !r.Attrs.IsControl() && r.Offset < end {
				n++
			}
			if r.Offset+1 >= end {
				delete(left[r.Topic], r.Partition)
				if len(left[r.Topic]) == 0 {
					delete(left, r.Topic)
				}
			}
		})
	}
	return n, nil
}

// histogramSum is the sum of the observations of histogram name in reg (0
// if there is none).
func histogramSum(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return sum
}
