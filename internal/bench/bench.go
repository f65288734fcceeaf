// Package bench is the benchmark suite behind `exactly bench`: scenarios
// that run the product against an in-process kfake broker (and, where
// available, goka and PostgreSQL), repeated, summarized as median, min and
// max, and reduced to the ratios the product is judged by (SPEC R-PF1 …
// R-PF5). Absolute numbers on shared machines drift; compare the ratios of
// one run.
package bench

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Options select and size the scenarios.
type Options struct {
	// Quick runs every scenario family with small inputs and fewer
	// repetitions, to finish in under a minute.
	Quick bool
	// Repetitions per scenario; default 3 (2 with Quick). A warm-up run
	// precedes the measured ones.
	Repetitions int
	// Only, when not empty, runs the families whose names it lists:
	// ceiling, counting, orders, goka, restore, failover, state, latency,
	// postgres.
	Only []string
	// ModuleDir is the root of the exactly source tree, where bench/goka
	// and the PostgreSQL benchmarks live; empty means those scenarios are
	// reported unavailable.
	ModuleDir string
	// Executable runs child processes (the bounded-state scenario); it must
	// be a binary whose ChildArgs dispatch to RunChild. Empty skips the
	// scenario.
	Executable string
	// ChildArgs are the arguments that make Executable call RunChild with
	// the arguments appended after them.
	ChildArgs []string
	// Progress receives one line per finished measurement; nil discards.
	Progress io.Writer
}

// Result is one scenario's figures.
type Result struct {
	// Name is the scenario, e.g. counting_eos_100ms_1KB.
	Name string `json:"name"`
	// Unit of the samples: records/s, s, ms, MiB, entries, rows/s.
	Unit string `json:"unit"`
	// Samples holds one figure per measured repetition.
	Samples []float64 `json:"samples"`
	// Median, Min and Max summarize Samples.
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// Records is the input size of one repetition, where it applies.
	Records int    `json:"records,omitempty"`
	Note    string `json:"note,omitempty"`
}

// Target is a ratio the product aims for, and whether this run met it.
type Target struct {
	// Ratio names the ratio (or figure) in Report.Ratios.
	Ratio string `json:"ratio"`
	// Want is the target, e.g. ">= 0.5".
	Want string `json:"want"`
	// Value is this run's figure and Met whether it reaches Want.
	Value float64 `json:"value"`
	Met   bool    `json:"met"`
}

// Report is the outcome of a run.
type Report struct {
	// Quick and Repetitions say how the run was sized.
	Quick       bool    `json:"quick"`
	Repetitions int     `json:"repetitions"`
	Machine     Machine `json:"machine"`
	// Started and Seconds place the run in time.
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	// Ratios are computed from the medians of Results, e.g.
	// orders_eos_over_ceiling, eos_over_alos_100ms_100B.
	Ratios map[string]float64 `json:"ratios"`
	// Targets are the product's targets and whether this run met them.
	Targets []Target `json:"targets"`
	// Results are the raw figures, in the order they were measured.
	Results []Result `json:"results"`
	// Unavailable names scenarios that could not run, with why.
	Unavailable map[string]string `json:"unavailable,omitempty"`
	// Checks are correctness checks made on the benchmarks' outputs.
	Checks map[string]string `json:"checks,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	// GOOS, GOARCH, CPUs, CPUModel and GoVersion describe the host and
	// toolchain.
	GOOS      string `json:"goos"`
	GOARCH    string `json:"goarch"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	GoVersion string `json:"go_version"`
}

func machine() Machine {
	m := Machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	return m
}

// sizes are the two record sizes of the throughput scenarios.
var sizes = []struct {
	name  string
	bytes int
}{{"100B", 100}, {"1KB", 1024}}

// runner carries a run's options and collects its results.
type runner struct {
	opts        Options
	reps        int
	report      *Report
	samples     map[string]*Result
	order       []string
	unavailable map[string]string
	gokaBinary  string // built bench/goka, if any
}

// lightReps is the repetition count of the slower scenarios (restore,
// state, latency): one with Quick.
func (r *runner) lightReps() int {
	if r.opts.Quick {
		return 1
	}
	return r.reps
}

func (r *runner) want(family string) bool {
	return len(r.opts.Only) == 0 || slices.Contains(r.opts.Only, family)
}

// add records one sample of a scenario.
func (r *runner) add(name, unit string, records int, v float64) {
	res := r.samples[name]
	if res == nil {
		res = &Result{Name: name, Unit: unit, Records: records}
		r.samples[name] = res
		r.order = append(r.order, name)
	}
	res.Samples = append(res.Samples, v)
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, "  %-34s %14.1f %s\n", name, v, unit)
	}
}

func (r *runner) note(name, note string) {
	if res := r.samples[name]; res != nil {
		res.Note = note
	}
}

func (r *runner) progress(format string, args ...any) {
	if r.opts.Progress != nil {
		fmt.Fprintf(r.opts.Progress, format+"\n", args...)
	}
}

func (r *runner) median(name string) float64 {
	if res := r.samples[name]; res != nil {
		return summarize(res.Samples).Median
	}
	return 0
}

// Run runs the selected scenarios and returns the report. A scenario that
// cannot run (no PostgreSQL, no Go toolchain for goka) is listed in
// Unavailable; a scenario that fails makes Run fail.
func Run(ctx context.Context, opts Options) (*Report, error) {
	reps := opts.Repetitions
	if reps <= 0 {
		reps = 3
		if opts.Quick {
			reps = 2
		}
	}
	r := &runner{
		opts: opts, reps: reps, samples: map[string]*Result{}, unavailable: map[string]string{},
		report: &Report{Quick: opts.Quick, Repetitions: reps, Machine: machine(), Started: time.Now(), Checks: map[string]string{}},
	}
	families := []struct {
		name string
		run  func(context.Context) error
	}{
		{"goka", r.buildGoka}, // compiled first, so that compiling does not disturb measurements
		{"ceiling", r.warmUp},
		{"counting", r.counting},
		{"orders", r.orders},
		{"restore", r.restore},
		{"failover", r.failover},
		{"state", r.boundedState},
		{"latency", r.latency},
		{"postgres", r.postgres},
	}
	for _, f := range families {
		if f.name == "counting" && !r.want("ceiling") && !r.want("counting") {
			continue
		}
		if f.name != "ceiling" && f.name != "goka" && f.name != "counting" && !r.want(f.name) {
			continue
		}
		start := time.Now()
		if err := f.run(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		r.progress("  (%s: %.1f s)", f.name, time.Since(start).Seconds())
	}
	r.finish()
	return r.report, nil
}

// warmUp runs one unmeasured ceiling and counting pass, so that the first
// measured scenario does not pay for cold caches and heap growth.
func (r *runner) warmUp(ctx context.Context) error {
	if !r.want("ceiling") && !r.want("counting") {
		return nil
	}
	r.progress("warm-up")
	n := 20000
	if _, err := r.ceilingOnce(ctx, n, 100); err != nil {
		return err
	}
	if _, err := r.countingOnce(ctx, countingRun{records: n, size: 100, eos: true, interval: 100 * time.Millisecond}); err != nil {
		return err
	}
	return nil
}

// finish summarizes the samples and computes the ratios and targets.
func (r *runner) finish() {
	rep := r.report
	for _, name := range r.order {
		res := r.samples[name]
		s := summarize(res.Samples)
		res.Median, res.Min, res.Max = s.Median, s.Min, s.Max
		rep.Results = append(rep.Results, *res)
	}
	rep.Unavailable = r.unavailable
	ratios := map[string]float64{}
	ratio := func(name, num, den string) {
		a, b := r.median(num), r.median(den)
		if a > 0 && b > 0 {
			ratios[name] = round(a/b, 3)
		}
	}
	ratio("orders_eos_over_ceiling", "orders_eos", "ceiling_orders")
	if res := r.samples["orders_eos_changelog_records"]; res != nil && res.Records > 0 {
		ratios["changelog_records_per_input"] = round(r.median("orders_eos_changelog_records")/float64(res.Records), 3)
	}
	// The same comparison by CPU time per record (the in-process broker's
	// included on both sides): what the throughput ratio would be if both
	// were bound by CPU alone, less sensitive to other load on the machine.
	ratio("orders_eos_over_ceiling_by_cpu", "ceiling_orders_cpu", "orders_eos_cpu")
	ratio("orders_alos_over_ceiling", "orders_alos", "ceiling_orders")
	ratio("orders_eos_over_alos", "orders_eos", "orders_alos")
	for _, iv := range intervals {
		for _, s := range sizes {
			ratio("eos_over_alos_"+iv.name+"_"+s.name, "counting_eos_"+iv.name+"_"+s.name, "counting_alos_"+iv.name+"_"+s.name)
		}
	}
	for _, s := range sizes {
		ratio("counting_eos_100ms_over_ceiling_"+s.name, "counting_eos_100ms_"+s.name, "ceiling_"+s.name)
	}
	ratio("exactly_eos_over_goka_alos", "orders_eos", "goka_orders_alos")
	ratio("exactly_alos_over_goka_alos", "orders_alos", "goka_orders_alos")
	ratio("state_10x_over_1x", "state_entries_10x", "state_entries_1x")
	ratio("rss_10x_over_1x", "state_rss_10x", "state_rss_1x")
	ratio("peak_rss_10x_over_1x", "state_peak_rss_10x", "state_peak_rss_1x")
	ratio("heap_10x_over_1x", "state_heap_10x", "state_heap_1x")
	ratio("restore_delta_over_full_seconds", "restore_delta_seconds", "restore_full_seconds")
	ratio("failover_standby_over_none", "failover_standby_seconds", "failover_none_seconds")
	ratio("inbox_batch_over_per_event", "inbox_bulk_100", "inbox_per_event")
	rep.Ratios = ratios
	target := func(name, want string, ok func(float64) bool) {
		if v, found := ratios[name]; found {
			rep.Targets = append(rep.Targets, Target{Ratio: name, Want: want, Value: v, Met: ok(v)})
		}
	}
	target("orders_eos_over_ceiling", ">= 0.25", func(v float64) bool { return v >= 0.25 })
	target("eos_over_alos_100ms_100B", ">= 0.9", func(v float64) bool { return v >= 0.9 })
	target("eos_over_alos_100ms_1KB", ">= 0.9", func(v float64) bool { return v >= 0.9 })
	target("exactly_eos_over_goka_alos", ">= 3", func(v float64) bool { return v >= 3 })
	target("state_10x_over_1x", "<= 1.1", func(v float64) bool { return v <= 1.1 })
	target("rss_10x_over_1x", "<= 1.1", func(v float64) bool { return v <= 1.1 })
	target("failover_standby_over_none", "<= 0.2", func(v float64) bool { return v <= 0.2 })
	if p99 := r.median("latency_eos_100ms_p99"); p99 > 0 {
		rep.Targets = append(rep.Targets, Target{Ratio: "latency_eos_100ms_p99_ms", Want: "<= 150", Value: round(p99, 1), Met: p99 <= 150})
	}
	rep.Seconds = round(time.Since(rep.Started).Seconds(), 1)
}

type summary struct{ Median, Min, Max float64 }

func summarize(xs []float64) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{Median: med, Min: s[0], Max: s[len(s)-1]}
}

func round(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(v*p+0.5)) / p
}

// WriteTable prints the report for a person: one line per result, then
// the ratios and the targets.
func (rep *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "exactly bench (%s): %d cpus, %s, %s/%s; %d repetitions; %.0f s\n",
		map[bool]string{true: "quick", false: "full"}[rep.Quick], rep.Machine.CPUs, rep.Machine.GoVersion, rep.Machine.GOOS, rep.Machine.GOARCH, rep.Repetitions, rep.Seconds)
	fmt.Fprintf(w, "\n%-34s %12s %12s %12s  %-10s %s\n", "scenario", "median", "min", "max", "unit", "note")
	for _, res := range rep.Results {
		fmt.Fprintf(w, "%-34s %12s %12s %12s  %-10s %s\n", res.Name, num(res.Median), num(res.Min), num(res.Max), res.Unit, res.Note)
	}
	fmt.Fprintf(w, "\n%-40s %10s\n", "ratio", "value")
	for _, k := range slices.Sorted(maps.Keys(rep.Ratios)) {
		fmt.Fprintf(w, "%-40s %10.3f\n", k, rep.Ratios[k])
	}
	if len(rep.Targets) > 0 {
		fmt.Fprintf(w, "\n%-40s %10s %8s  %s\n", "target", "value", "want", "met")
		for _, t := range rep.Targets {
			fmt.Fprintf(w, "%-40s %10.3f %8s  %v\n", t.Ratio, t.Value, t.Want, t.Met)
		}
	}
	if len(rep.Checks) > 0 {
		fmt.Fprintln(w)
		for _, k := range slices.Sorted(maps.Keys(rep.Checks)) {
			fmt.Fprintf(w, "check %-28s %s\n", k, rep.Checks[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(rep.Unavailable)) {
		fmt.Fprintf(w, "unavailable %-22s %s\n", k, rep.Unavailable[k])
	}
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
