package bench

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactly-go/exactly/examples/orders"
)

// TestCloseCommitsEverythingProcessed checks what every throughput scenario
// relies on: a graceful Close commits all processed input, under both
// guarantees and whatever the commit interval (the 30 s case ends in the
// final commit only).
func TestCloseCommitsEverythingProcessed(t *testing.T) {
	r := &runner{samples: map[string]*Result{}}
	for _, eos := range []bool{false, true} {
		for _, interval := range []time.Duration{50 * time.Millisecond, 30 * time.Second} {
			t.Run(fmt.Sprintf("eos=%v/interval=%s", eos, interval), func(t *testing.T) {
				// countingOnce fails unless the committed offsets cover the input.
				if _, err := r.countingOnce(context.Background(), countingRun{records: 3000, size: 100, eos: eos, interval: interval}); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestScenariosLogNothing: a scenario's app logs nowhere, so that `exactly
// bench` prints its report only (the runtime's default logger is
// slog.Default(), which writes to stderr).
func TestScenariosLogNothing(t *testing.T) {
	var logged atomic.Int64
	prev := slog.Default()
	slog.SetDefault(slog.New(countingHandler{&logged}))
	defer slog.SetDefault(prev)
	r := &runner{samples: map[string]*Result{}}
	if _, err := r.countingOnce(context.Background(), countingRun{records: 1000, size: 100, eos: true, interval: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if n := logged.Load(); n != 0 {
		t.Fatalf("a counting run logged %d records to slog.Default()", n)
	}
}

// countingHandler is a slog handler that counts the records it gets.
type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

func TestRatiosAndTargetsFromMedians(t *testing.T) {
	r := &runner{samples: map[string]*Result{}, report: &Report{Checks: map[string]string{}}, unavailable: map[string]string{}}
	for _, v := range []float64{100, 300, 200} {
		r.add("ceiling_orders", "records/s", 1, v)
	}
	for _, v := range []float64{90, 110, 100} {
		r.add("orders_eos", "records/s", 1, v)
	}
	r.add("counting_alos_100ms_100B", "records/s", 1, 100)
	r.add("counting_eos_100ms_100B", "records/s", 1, 95)
	r.finish()
	if got := r.report.Ratios["orders_eos_over_ceiling"]; got != 0.5 {
		t.Fatalf("orders_eos_over_ceiling = %v, want 0.5 (median 100 / median 200)", got)
	}
	if got := r.report.Ratios["eos_over_alos_100ms_100B"]; got != 0.95 {
		t.Fatalf("eos_over_alos_100ms_100B = %v, want 0.95", got)
	}
	met := map[string]bool{}
	for _, tg := range r.report.Targets {
		met[tg.Ratio] = tg.Met
	}
	if !met["orders_eos_over_ceiling"] || !met["eos_over_alos_100ms_100B"] {
		t.Fatalf("targets %+v", r.report.Targets)
	}
	var b strings.Builder
	r.report.WriteTable(&b)
	if !strings.Contains(b.String(), "orders_eos_over_ceiling") {
		t.Fatalf("table lacks the ratio:\n%s", b.String())
	}
}

func TestParseGoBench(t *testing.T) {
	r := &runner{samples: map[string]*Result{}}
	out := "goos: linux\nBenchmarkInbox/per-event-2   \t    2000\t    700000 ns/op\t      1430 events/s\n" +
		"BenchmarkRelay/cdc-2 1 3000000000 ns/op 0.9000 p50-ms 2.100 p99-ms 45000 rows/s\nPASS\n"
	if !r.parseGoBench(out) {
		t.Fatal("nothing parsed")
	}
	for name, want := range map[string]float64{"inbox_per_event": 1430, "relay_cdc": 45000, "relay_cdc_p99": 2.1} {
		if got := r.median(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// The benchmarks below run one scenario family each at a fixed size; `go
// test -bench . -benchtime 3x ./internal/bench` reports records/s. Compare
// ratios within one run.

func benchRunner() *runner {
	return &runner{samples: map[string]*Result{}, report: &Report{Checks: map[string]string{}}, unavailable: map[string]string{}}
}

func BenchmarkCeiling(b *testing.B) {
	for _, s := range sizes {
		b.Run(s.name, func(b *testing.B) {
			for b.Loop() {
				v, err := benchRunner().ceilingOnce(context.Background(), 50_000, s.bytes)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(v, "records/s")
			}
		})
	}
}

func BenchmarkCounting(b *testing.B) {
	for _, s := range sizes {
		for _, eos := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/eos=%v", s.name, eos), func(b *testing.B) {
				for b.Loop() {
					v, err := benchRunner().countingOnce(context.Background(), countingRun{records: 50_000, size: s.bytes, eos: eos, interval: 100 * time.Millisecond})
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(v, "records/s")
				}
			})
		}
	}
}

func BenchmarkOrders(b *testing.B) {
	r := benchRunner()
	r.opts.Only = []string{"orders"}
	r.reps = 1
	r.opts.Quick = true
	for b.Loop() {
		if err := r.orders(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	r.finish()
	for _, name := range []string{"ceiling_orders", "orders_alos", "orders_eos"} {
		b.ReportMetric(r.median(name), name+"-rec/s")
	}
}

func BenchmarkRestore(b *testing.B) {
	r := benchRunner()
	for b.Loop() {
		if err := r.restoreOnce(context.Background(), 50_000); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(r.median("restore_full"), "full-rec/s")
	b.ReportMetric(r.median("restore_delta_seconds"), "delta-s")
}

func BenchmarkLatency(b *testing.B) {
	for b.Loop() {
		lat, err := latencyOnce(context.Background(), 10000, 2)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
		b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
	}
}

// BenchmarkOrdersCore runs the orders projection's task core over the
// generated stream of the orders family without a broker, committing every
// 5000 records: the runtime's and the application's processing alone.
// Per-record figures: ns/record, allocs/record, B/record and the
// changelog records produced per input.
func BenchmarkOrdersCore(b *testing.B) {
	input := ordersRaw(12000)
	top, err := orders.Topology(orders.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var last coreStats
	for b.Loop() {
		if last, err = coreRun(top, orders.DefaultInputTopic, input, partitions, 5000); err != nil {
			b.Fatal(err)
		}
	}
	n := float64(last.Records)
	b.ReportMetric(float64(last.Elapsed.Nanoseconds())/n, "ns/record")
	b.ReportMetric(float64(last.CPU.Nanoseconds())/n, "cpu-ns/record")
	b.ReportMetric(float64(last.Allocs)/n, "allocs/record")
	b.ReportMetric(float64(last.Bytes)/n, "B/record")
	b.ReportMetric(last.ChangelogPerInput(), "changelog/input")
}
