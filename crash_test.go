package exactly_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/exposure"
	"github.com/exactly-go/exactly/internal/crashpoint"
	"github.com/exactly-go/exactly/verify"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCrashChildInstance is the body of one instance process of the crash
// tests; it runs only when a crash test starts it.
func TestCrashChildInstance(t *testing.T) {
	brokers := os.Getenv("EXACTLY_CHILD_BROKERS")
	if brokers == "" {
		t.Skip("runs only as a child of the crash tests")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg := exactly.Config{
		Brokers:            strings.Split(brokers, ","),
		ApplicationID:      "crash",
		Guarantee:          exactly.Guarantee(os.Getenv("EXACTLY_CHILD_GUARANTEE")),
		CommitInterval:     100 * time.Millisecond,
		StateDir:           os.Getenv("EXACTLY_CHILD_STATE"),
		InstanceID:         os.Getenv("EXACTLY_CHILD_INSTANCE"),
		SessionTimeout:     childSessionTimeout,
		RebalanceTimeout:   4 * time.Second,
		TransactionTimeout: 3 * time.Second,
		CreateTopics:       true,
		Logger:             testLogger(),
	}
	if cfg.Guarantee == exactly.AtLeastOnce {
		cfg.CommitInterval = 300 * time.Millisecond
	}
	if n, err := strconv.Atoi(os.Getenv("EXACTLY_CHILD_STANDBYS")); err == nil {
		cfg.StandbyReplicas = n
	}
	top := countingApp(t, true)
	if os.Getenv("EXACTLY_CHILD_APP") == "exposure" {
		cfg.ApplicationID = "risk"
		var err error
		if top, err = exposure.CustomerExposure("risk", exposureThreshold); err != nil {
			t.Fatal(err)
		}
	}
	var reg *prometheus.Registry
	if os.Getenv("EXACTLY_CHILD_HTTP") != "" {
		reg = prometheus.NewRegistry()
		cfg.Registerer = reg
	}
	app, err := exactly.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if path := os.Getenv("EXACTLY_CHILD_HTTP"); path != "" {
		serveChildStatus(t, app, reg, path)
	}
	if err := app.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// childStatus is what a crash test's instance process tells its parent at
// /tasks.
type childStatus struct {
	Active  []exactly.TaskMetadata        `json:"active"`
	Standby []exactly.StandbyTaskMetadata `json:"standby"`
}

// serveChildStatus serves the child's /metrics and /tasks on a loopback
// port, and writes its address to path.
func serveChildStatus(t *testing.T, app *exactly.App, reg *prometheus.Registry, path string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /tasks", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(childStatus{Active: app.LocalTasks(), Standby: app.StandbyTasks()})
	})
	go http.Serve(ln, mux)
	if err := os.WriteFile(path+".tmp", []byte(ln.Addr().String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// childSessionTimeout is the session timeout of the crash tests' instance
// processes.
const childSessionTimeout = 2 * time.Second

type child struct {
	slot int
	cmd  *exec.Cmd
}

func startChild(t *testing.T, brokers []string, dir string, slot int, g exactly.Guarantee, env ...string) *child {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChildInstance$")
	cmd.Env = append(append(os.Environ(), env...),
		"EXACTLY_CHILD_BROKERS="+strings.Join(brokers, ","),
		"EXACTLY_CHILD_GUARANTEE="+string(g),
		"EXACTLY_CHILD_STATE="+filepath.Join(dir, fmt.Sprint("instance-", slot)),
		fmt.Sprintf("EXACTLY_CHILD_INSTANCE=instance-%d", slot),
	)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &child{slot: slot, cmd: cmd}
}

// TestSigkilledInstancesKeepExactlyOnce runs three instance processes over
// 200,000 records while killing them with SIGKILL at random moments and
// restarting them; the committed output must hold every input exactly once
// (at-least-once: at least once) and the final store values must equal the
// counts of the input.
func TestSigkilledInstancesKeepExactlyOnce(t *testing.T) {
	for _, g := range []exactly.Guarantee{exactly.ExactlyOnceV2, exactly.AtLeastOnce} {
		t.Run(string(g), func(t *testing.T) { sigkillRun(t, g) })
	}
}

func sigkillRun(t *testing.T, g exactly.Guarantee) {
	const (
		records   = 200_000
		keys      = 101
		instances = 3
		kills     = 10
	)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	produceInputs(t, brokers, 0, records, keys)
	dir := t.TempDir()
	children := make([]*child, instances)
	for i := range children {
		children[i] = startChild(t, brokers, dir, i, g)
	}
	defer func() {
		for _, ch := range children {
			if ch != nil && ch.cmd.ProcessState == nil {
				ch.cmd.Process.Kill()
				ch.cmd.Wait()
			}
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for k := range kills {
		time.Sleep(time.Duration(200+rng.IntN(1200)) * time.Millisecond)
		victim := children[rng.IntN(instances)]
		victim.cmd.Process.Signal(syscall.SIGKILL)
		victim.cmd.Wait()
		t.Logf("kill %d: instance %d", k+1, victim.slot)
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		children[victim.slot] = startChild(t, brokers, dir, victim.slot, g)
	}
	out := readCommitted(t, brokers, records, 240*time.Second)
	for _, ch := range children {
		ch.cmd.Process.Signal(syscall.SIGTERM)
		ch.cmd.Wait()
	}
	checkCrashRun(t, brokers, out, records, keys, g)
}

// checkCrashRun checks the committed output of a run of the counting
// application that crashed: every input once (at least once under
// at_least_once), the store values equal to the input's counts, and the
// output equal to a replay of the committed input.
func checkCrashRun(t *testing.T, brokers []string, out []countOut, records, keys int, g exactly.Guarantee) {
	t.Helper()
	seen := map[string]int{}
	for _, o := range out {
		seen[o.ID]++
	}
	missing, dups := 0, 0
	for i := range records {
		switch n := seen[fmt.Sprint("r", i)]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	t.Logf("%s: %d outputs for %d inputs, %d missing, %d duplicates", g, len(out), records, missing, dups)
	if missing > 0 {
		t.Fatalf("%d inputs lost", missing)
	}
	if g == exactly.AtLeastOnce {
		return
	}
	if dups > 0 {
		t.Fatalf("%d duplicate outputs under exactly_once_v2", dups)
	}
	final := changelogFinal(t, brokers, "crash-counts-changelog")
	for k := range keys {
		want := int64((records - k + keys - 1) / keys)
		if got := final[fmt.Sprint("k", k)]; got != want {
			t.Fatalf("store value of k%d = %d, want %d (counts of the input)", k, got, want)
		}
	}
	// Per key, the counts come in the order of the input, as an
	// uninterrupted run would have them.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := verify.Replay(ctx, countingApp(t, true), verify.ReplayConfig{Brokers: brokers, ApplicationID: "crash", Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if !rep.OK() {
		t.Fatal("the killed run's committed output differs from the replay of its committed input")
	}
}

// changelogFinal reads a changelog read_committed, up to its last stable
// offset, and returns each key's last value.
func changelogFinal(t *testing.T, brokers []string, topic string) map[string]int64 {
	t.Helper()
	final := map[string]int64{}
	for _, r := range readAllCommitted(t, brokers, topic) {
		if len(r.Value) == 8 {
			final[string(r.Key)] = int64(binary.BigEndian.Uint64(r.Value))
		}
	}
	return final
}

// readAllCommitted returns topic's records as a read_committed consumer
// sees them, up to each partition's last stable offset: unlike reading
// until the fetches fall quiet, a slow first fetch cannot cut it short.
func readAllCommitted(t testing.TB, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	recs, err := verify.ReadCommitted(ctx, []kgo.Opt{kgo.SeedBrokers(brokers...)}, topic)
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	return recs
}

// readUntilQuiet hands each record cl fetches to f until three polls of
// half a second in a row bring nothing.
func readUntilQuiet(cl *kgo.Client, f func(*kgo.Record)) {
	for idle := 0; idle < 3; {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fetches := cl.PollFetches(ctx)
		cancel()
		n := 0
		fetches.EachRecord(func(r *kgo.Record) { n++; f(r) })
		if n == 0 {
			idle++
		}
	}
}

// TestNamedCrashPointsKeepExactlyOnce kills instance processes at each
// named point of the protocol (package crashpoint), several times per
// point across three instances while input flows, and checks the committed
// result as the SIGKILL test does, ending with the replay verifier.
func TestNamedCrashPointsKeepExactlyOnce(t *testing.T) {
	points := []struct {
		name    string
		maxHits int // the crash comes at a random hit up to this
	}{
		{crashpoint.AfterProcess, 20},
		{crashpoint.AfterProduce, 20},
		{crashpoint.AfterAddOffsets, 20},
		{crashpoint.DuringEndTxn, 20},
		{crashpoint.AfterEndTxn, 20},
		{crashpoint.MidRestore, 2},
		{crashpoint.InRebalance, 3},
		{crashpoint.AfterStandbyRead, 20},
	}
	for _, p := range points {
		t.Run(p.name, func(t *testing.T) { crashPointRun(t, p.name, p.maxHits) })
	}
}

func crashPointRun(t *testing.T, point string, maxHits int) {
	const (
		batchSize  = 200
		minRecords = 4_000
		maxRecords = 100_000
		keys       = 31
		instances  = 3
		crashes    = 3
	)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	var mu sync.Mutex
	crashed := 0
	running := make([]*child, instances)
	exited := make([]chan struct{}, instances)
	var start func(slot int)
	start = func(slot int) {
		mu.Lock()
		defer mu.Unlock()
		var env []string
		if crashed < crashes {
			hit := 1 + rng.IntN(maxHits)
			if point == crashpoint.InRebalance {
				// Not the first assignment of a new process, which has no
				// work open: a later rebalance, while input flows.
				hit = 2 + rng.IntN(maxHits-1)
			}
			env = []string{"EXACTLY_CRASH_POINT=" + point, fmt.Sprint("EXACTLY_CRASH_AFTER=", hit)}
		}
		if point == crashpoint.AfterStandbyRead {
			env = append(env, "EXACTLY_CHILD_STANDBYS=1")
		}
		ch, done := startChild(t, brokers, dir, slot, exactly.ExactlyOnceV2, env...), make(chan struct{})
		running[slot], exited[slot] = ch, done
		go func() {
			defer close(done)
			ch.cmd.Wait()
			if ch.cmd.ProcessState.ExitCode() != crashpoint.ExitCode {
				return
			}
			mu.Lock()
			crashed++
			mu.Unlock()
			t.Logf("instance %d died at %s", slot, point)
			start(slot)
		}()
	}
	stopAll := func(sig syscall.Signal) {
		mu.Lock()
		chs, dones := slices.Clone(running), slices.Clone(exited)
		mu.Unlock()
		for i, ch := range chs {
			ch.cmd.Process.Signal(sig)
			<-dones[i]
		}
	}
	for i := range instances {
		start(i)
	}
	defer stopAll(syscall.SIGKILL)
	var rejoins sync.WaitGroup // instances coming back after the group expired them
	// Input flows in small batches until the point was reached often
	// enough, so that commits, restores and rebalances keep happening.
	deadline := time.Now().Add(90 * time.Second)
	records := 0
	for batch := 0; ; batch++ {
		produceInputs(t, brokers, records, records+batchSize, keys)
		records += batchSize
		time.Sleep(150 * time.Millisecond)
		mu.Lock()
		done := crashed >= crashes
		mu.Unlock()
		if done && records >= minRecords {
			break
		}
		if time.Now().After(deadline) || records >= maxRecords {
			t.Fatalf("reached %s %d times (%d records, %v), want %d", point, crashed, records, 90*time.Second-time.Until(deadline), crashes)
		}
		if (point == crashpoint.InRebalance || point == crashpoint.MidRestore || point == crashpoint.AfterStandbyRead) && batch%10 == 9 {
			// Tasks move, and are restored, when an instance leaves (from
			// their standbys, where there are some).
			slot := rng.IntN(instances)
			mu.Lock()
			victim, gone := running[slot], exited[slot]
			mu.Unlock()
			if victim.cmd.ProcessState != nil {
				continue // away until its rejoin
			}
			victim.cmd.Process.Signal(syscall.SIGKILL)
			<-gone
			if victim.cmd.ProcessState.ExitCode() == crashpoint.ExitCode {
				continue // restarted already
			}
			if point == crashpoint.MidRestore {
				start(slot)
				continue
			}
			// Back after the session timeout: the group moves the
			// victim's tasks to the others (their standbys' instances),
			// then some back to it, so that live members with
			// transactions open are called back.
			rejoins.Go(func() {
				time.Sleep(childSessionTimeout + 500*time.Millisecond)
				start(slot)
			})
		}
	}
	rejoins.Wait()
	out := readCommitted(t, brokers, records, 120*time.Second)
	stopAll(syscall.SIGTERM)
	checkCrashRun(t, brokers, out, records, keys, exactly.ExactlyOnceV2)
}
