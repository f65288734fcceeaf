package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/orders"
)

// The bounded-state stream: orders arrive at a constant rate of
// stateOrdersPerDay, so that 10× the events is 10× the stream time, and
// the TTL'ed stores (dedup ids, reorder buffer) hold about a TTL's worth.
const (
	stateTTL          = time.Hour
	stateOrdersPerDay = 1500
)

// The bounds of the bounded-state child's buffers (see RunChild) for the
// full run's 1x of 3000 orders; --quick's smaller 1x gets them scaled down
// in proportion (stateBounds), so that its 1x run fills them too.
const (
	stateFetchBytes      = 1 << 20
	stateMemTableBytes   = 1 << 20
	stateBlockCacheBytes = 8 << 20
)

// stateBounds returns the child's fetch, memtable and block cache sizes
// for a 1x run of base orders.
func stateBounds(base int) (fetch, memtable, blockCache int64) {
	scale := func(full int64) int64 { return max(full*int64(base)/3000, 64<<10) }
	return scale(stateFetchBytes), scale(stateMemTableBytes), scale(stateBlockCacheBytes)
}

func stateOptions() orders.Options {
	return orders.Options{DedupTTL: stateTTL, BufferTTL: stateTTL, Persistent: true}
}

// stateChildResult is what a bounded-state child reports.
type stateChildResult struct {
	Records        int     `json:"records"`
	TTLEntries     float64 `json:"ttl_entries"`        // dedup + reorder buffer entries
	ProjectionKeys float64 `json:"projection_entries"` // one per order, no TTL by design
	PeakRSSBytes   int64   `json:"peak_rss_bytes"`
	RSSBytes       int64   `json:"rss_bytes"`
	HeapBytes      uint64  `json:"heap_bytes"`
	// Where the resident memory is, for EXACTLY_BENCH_DEBUG: the Go heap's
	// live bytes after a collection; the memory the Go runtime has mapped
	// and not returned to the OS (not all of it resident); RSS in
	// anonymous memory (the Go runtime's, and Pebble's memtables and block
	// cache, allocated outside the Go heap) and in files (the executable).
	LiveHeapBytes uint64 `json:"live_heap_bytes"`
	GoHeldBytes   uint64 `json:"go_held_bytes"`
	AnonRSSBytes  int64  `json:"anon_rss_bytes"`
	FileRSSBytes  int64  `json:"file_rss_bytes"`
}

func (r *runner) stateOrders() int {
	if r.opts.Quick {
		return 800
	}
	return 3000
}

// boundedState runs the orders projection (Pebble stores, TTLs of one hour
// of stream time) over 1× and 10× the events, each in a fresh child
// process, and compares the TTL'ed stores' entries and the child's RSS.
func (r *runner) boundedState(ctx context.Context) error {
	if r.opts.Executable == "" {
		r.unavailable["state"] = "no executable to run child processes"
		return nil
	}
	base := r.stateOrders()
	r.progress("bounded state: %d and %d orders", base, 10*base)
	for range r.lightReps() {
		for _, scale := range []int{1, 10} {
			res, err := r.stateOnce(ctx, base*scale)
			if err != nil {
				return fmt.Errorf("bounded state %dx: %w", scale, err)
			}
			sfx := fmt.Sprintf("%dx", scale)
			r.add("state_entries_"+sfx, "entries", res.Records, res.TTLEntries)
			r.add("state_rss_"+sfx, "MiB", res.Records, float64(res.RSSBytes)/(1<<20))
			r.add("state_peak_rss_"+sfx, "MiB", res.Records, float64(res.PeakRSSBytes)/(1<<20))
			r.add("state_heap_"+sfx, "MiB", res.Records, float64(res.HeapBytes)/(1<<20))
			r.add("state_projection_entries_"+sfx, "entries", res.Records, res.ProjectionKeys)
		}
	}
	r.note("state_entries_1x", "dedup + reorder buffer entries, TTL 1 h of stream time")
	r.note("state_rss_1x", "RSS of the child process after the events")
	r.note("state_peak_rss_1x", "peak RSS (VmHWM) of the child process")
	r.note("state_projection_entries_1x", "one per order: grows with orders by design (on disk)")
	return nil
}

func (r *runner) stateOnce(ctx context.Context, n int) (*stateChildResult, error) {
	c, err := newCluster(orders.DefaultInputTopic)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	gen := orders.DefaultGenerateOptions(7, n, partitions)
	gen.Span = time.Duration(n) * 24 * time.Hour / stateOrdersPerDay
	gen.CloseAfter = 0 // no jump of stream time at the end: measure the steady state
	in := orders.Generate(gen)
	var recs []*kgo.Record
	for _, rec := range in {
		recs = append(recs, recordOf(rec))
	}
	if err := c.produce(ctx, recs); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "exactly-bench-state-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	args := append(append([]string{}, r.opts.ChildArgs...), "state", "--brokers", strings.Join(c.brokers, ","),
		"--records", strconv.Itoa(len(recs)), "--state-dir", dir, "--base", strconv.Itoa(r.stateOrders()))
	cmd := exec.CommandContext(ctx, r.opts.Executable, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("child: %v: %s", err, lastLine(stderr.String()))
	}
	var res stateChildResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("child output %q: %w", out, err)
	}
	if os.Getenv("EXACTLY_BENCH_DEBUG") != "" {
		fmt.Fprintf(os.Stderr, "state child: %s", out)
	}
	return &res, nil
}

// RunChild is the child-process side of scenarios that need a process of
// their own; args name the scenario ("state") and its flags. It writes
// one JSON object to w.
func RunChild(ctx context.Context, args []string, w io.Writer) error {
	if len(args) == 0 || args[0] != "state" {
		return fmt.Errorf("unknown child scenario %v", args)
	}
	fs := flag.NewFlagSet("state", flag.ContinueOnError)
	brokers := fs.String("brokers", "", "seed brokers")
	records := fs.Int("records", 0, "input records to process")
	dir := fs.String("state-dir", "", "state directory")
	base := fs.Int("base", 3000, "orders of the 1x run, which the buffers' bounds are scaled to")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	top, err := orders.Topology(stateOptions())
	if err != nil {
		return err
	}
	cfg := appConfig(strings.Split(*brokers, ","), "state", true, 100*time.Millisecond)
	cfg.StateDir = *dir
	// Every buffer the process keeps is bounded below what the 1x run
	// fills, so that both runs hold theirs full and the comparison shows
	// what grows with the events: fetches of 1 MiB (256 KiB per partition;
	// the 1x input is about 1.5 MiB compressed, 9.6 MB decoded, so fetches
	// of 4 MiB took all of it at once, a smaller transient than each of the
	// 10x run's full fetches),
	// Pebble memtables of 1 MiB per task (Pebble starts a memtable small
	// and doubles it up to the configured size, so the 1x run of 4 MiB
	// ones was still growing them) and Pebble's own 8 MiB block cache (the
	// instance's default of 64 MiB fills with the projection's blocks, one
	// entry per order by design, as the orders grow).
	fetch, memtable, blockCache := stateBounds(*base)
	cfg.ClientOptions = []kgo.Opt{kgo.FetchMaxBytes(int32(fetch)), kgo.FetchMaxPartitionBytes(int32(fetch / 4))}
	cfg.StoreMemTableSize = memtable
	cfg.StoreBlockCacheSize = blockCache
	reg := prometheus.NewRegistry()
	counter := &processedCounter{Registerer: reg}
	cfg.Registerer = counter
	app, err := exactly.New(top, cfg)
	if err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- app.Run(ctx) }()
	deadline := time.After(3 * time.Minute)
	for counter.value() < float64(*records) {
		select {
		case err := <-runErr:
			return fmt.Errorf("app stopped: %v", err)
		case <-deadline:
			app.Close()
			return fmt.Errorf("processed %.0f of %d records", counter.value(), *records)
		case <-time.After(5 * time.Millisecond):
		}
	}
	// Let the last commit apply its writes to the stores.
	time.Sleep(300 * time.Millisecond)
	res := stateChildResult{Records: *records}
	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	for _, mf := range mfs {
		if mf.GetName() != "exactly_store_entries" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "store" {
					continue
				}
				switch l.GetValue() {
				case orders.ProjectionStore:
					res.ProjectionKeys += m.GetGauge().GetValue()
				default:
					res.TTLEntries += m.GetGauge().GetValue()
				}
			}
		}
	}
	res.PeakRSSBytes, res.RSSBytes = procStatus("VmHWM"), procStatus("VmRSS")
	res.AnonRSSBytes, res.FileRSSBytes = procStatus("RssAnon"), procStatus("RssFile")
	// The heap after a collection: what the process holds, not the garbage
	// that happens to be uncollected at the moment.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapBytes = ms.HeapInuse
	res.LiveHeapBytes = ms.HeapAlloc
	res.GoHeldBytes = ms.Sys - ms.HeapReleased
	if path := os.Getenv("EXACTLY_BENCH_HEAPPROFILE"); path != "" {
		// One profile per input size: heap.out gives heap-30754.out and
		// heap-308791.out.
		ext := filepath.Ext(path)
		path = fmt.Sprintf("%s-%d%s", strings.TrimSuffix(path, ext), *records, ext)
		if f, err := os.Create(path); err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	app.Close()
	if err := <-runErr; err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(res)
}

// procStatus reads a size field of /proc/self/status in bytes (0 where
// there is no /proc).
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
