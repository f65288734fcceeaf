package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// postgres runs the inbox and relay Go benchmarks (their own code, against
// a throwaway PostgreSQL server started by internal/pgtest) as `go test`
// child processes and collects their metrics. They need the source tree,
// the Go toolchain and the PostgreSQL server binaries; without them the
// scenarios are reported unavailable. --quick runs the inbox benchmark
// briefly, for the ratio it gives, and the relay benchmark only when asked
// for by name.
func (r *runner) postgres(ctx context.Context) error {
	if r.opts.ModuleDir == "" {
		r.unavailable["postgres"] = "no source tree: run from the exactly checkout"
		return nil
	}
	r.progress("postgres: inbox and relay benchmarks")
	runs := []struct {
		pkg, bench, benchtime string
	}{
		{"./inbox", "BenchmarkInbox", "2s"},
		{"./outbox/relay", "BenchmarkRelay", "1x"},
	}
	count := r.reps
	if r.opts.Quick && len(r.opts.Only) == 0 {
		runs = runs[:1]
		runs[0].benchtime, count = "300ms", 1
		r.unavailable["BenchmarkRelay"] = "skipped by --quick (ask with --only postgres)"
	}
	for _, run := range runs {
		cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^"+run.bench+"$", "-benchtime", run.benchtime, "-count", strconv.Itoa(count), run.pkg)
		cmd.Dir = r.opts.ModuleDir
		cmd.Env = append(os.Environ(), "EXACTLY_SKIP_PG=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			r.unavailable[run.bench] = "go test failed: " + lastLine(string(out))
			continue
		}
		if !r.parseGoBench(string(out)) {
			r.unavailable[run.bench] = "no results (PostgreSQL server binaries missing?): " + lastLine(string(out))
		}
	}
	return nil
}

// pgNames maps Go benchmark names and units to result names.
var pgNames = map[string]string{
	"BenchmarkInbox/per-event events/s": "inbox_per_event",
	"BenchmarkInbox/batch=100 events/s": "inbox_batch_100",
	"BenchmarkInbox/bulk=100 events/s":  "inbox_bulk_100",
	"BenchmarkInbox/bulk=1000 events/s": "inbox_bulk_1000",
	"BenchmarkRelay/cdc rows/s":         "relay_cdc",
	"BenchmarkRelay/cdc p50-ms":         "relay_cdc_p50",
	"BenchmarkRelay/cdc p99-ms":         "relay_cdc_p99",
	"BenchmarkRelay/poll rows/s":        "relay_poll",
	"BenchmarkRelay/poll p50-ms":        "relay_poll_p50",
	"BenchmarkRelay/poll p99-ms":        "relay_poll_p99",
}

var pgUnits = map[string]string{"events/s": "events/s", "rows/s": "rows/s", "p50-ms": "ms", "p99-ms": "ms"}

// parseGoBench adds the metrics of `go test -bench` output lines such as
// "BenchmarkInbox/per-event-2  1500  700000 ns/op  1430 events/s".
func (r *runner) parseGoBench(out string) bool {
	found := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		name := fields[0]
		if i := strings.LastIndex(name, "-"); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			if res, ok := pgNames[name+" "+fields[i+1]]; ok {
				r.add(res, pgUnits[fields[i+1]], 0, v)
				found = true
			}
		}
	}
	return found
}
