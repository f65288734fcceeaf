package chaos_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly-go/exactly/chaos"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/verify"
)

// The tests run real processes: a broker (exactly broker with a data
// directory) and application instances, built from this module.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// exactlyBinary builds the exactly command once per test binary.
func exactlyBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "exactly-chaos-bin-"); buildErr != nil {
			return
		}
		buildErr = goBuild(".", filepath.Join(binDir, "exactly"), "github.com/exactly-go/exactly/cmd/exactly")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "exactly")
}

// goTool is the go command that runs the tests: the one on PATH, or the
// toolchain's own when PATH has none.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go") //lint:ignore SA1019 a fallback for a PATH without go
}

// goBuild builds pkg into out, in dir, offline.
func goBuild(dir, out, pkg string, env ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool(), "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"GOPROXY=off", "GOFLAGS=-mod=mod"}, env...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return &buildError{pkg: pkg, err: err, out: stderr.String()}
	}
	return nil
}

type buildError struct {
	pkg, out string
	err      error
}

func (e *buildError) Error() string { return "go build " + e.pkg + ": " + e.err.Error() + "\n" + e.out }

// ordersRun is a run of `exactly run orders` instances on a broker the
// harness owns, verified by the replay and the orders audit.
func ordersRun(t *testing.T, seed uint64, ordersCount int) chaos.Config {
	exe := exactlyBinary(t)
	opts := orders.Options{InputTopic: orders.DefaultInputTopic, OutputTopic: orders.DefaultOutputTopic, DeadLetterTopic: orders.DefaultDeadLetterTopic}
	top, err := orders.Topology(opts)
	if err != nil {
		t.Fatal(err)
	}
	return chaos.Config{
		Command:       []string{exe, "run", "orders", "--commit-interval", "50ms"},
		ApplicationID: "orders",
		BrokerCommand: []string{exe, "broker", "--listen", "{listen}", "--data-dir", "{data-dir}"},
		Topics: []chaos.Topic{{Name: opts.InputTopic}, {Name: opts.OutputTopic, Configs: map[string]string{"cleanup.policy": "compact"}},
			{Name: opts.DeadLetterTopic}},
		Input:       chaos.OrdersInput(opts.InputTopic, seed, ordersCount, 4),
		InputTopics: []string{opts.InputTopic},
		Seed:        seed,
		CatchUp:     2 * time.Minute,
		// kfake loses abort markers when killed with transactions open.
		QuiesceBrokerKills: true,
		Verifiers: []chaos.Verifier{
			chaos.Replay(top, verify.Timeout(2*time.Minute)),
			chaos.OrdersAudit(verify.Config{Options: opts, Timeout: 2 * time.Minute}),
		},
		Dir: t.TempDir(),
	}
}

func runChaos(t *testing.T, cfg chaos.Config) *chaos.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Duration+cfg.CatchUp+5*time.Minute)
	defer cancel()
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if !rep.OK() {
		t.Errorf("the run did not hold; events and logs:\n%s", logs(cfg.Dir))
	}
	if rep.Exits+rep.BrokerExits > 0 {
		t.Errorf("%d instances and %d brokers exited on their own; want every process to ride out the chaos:\n%s", rep.Exits, rep.BrokerExits, logs(cfg.Dir))
	}
	return rep
}

// logs returns the harness's events and the warnings and errors of every
// process, for a failed test's output.
func logs(dir string) string {
	var b strings.Builder
	names, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, name := range names {
		data, _ := os.ReadFile(name)
		fmt.Fprintf(&b, "== %s\n", filepath.Base(name))
		for _, line := range strings.Split(string(data), "\n") {
			if filepath.Base(name) == "events.log" || strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				fmt.Fprintln(&b, line)
			}
		}
	}
	return b.String()
}

// TestBrokerKilledAndRestartedUnderOrdersKeepsExactlyOnce (SPEC R-RL4):
// the broker is SIGKILLed twice mid-stream and started again on the same
// port and data directory; the order projection's instances recover by
// themselves (none exits), and the committed output equals the replay of
// the committed input and the orders oracle's recomputation.
func TestBrokerKilledAndRestartedUnderOrdersKeepsExactlyOnce(t *testing.T) {
	cfg := ordersRun(t, 11, 600)
	cfg.Duration, cfg.BrokerRestarts, cfg.Kills = 30*time.Second, 2, 2
	rep := runChaos(t, cfg)
	if rep.BrokerRestarts != 2 || rep.Kills != 2 {
		t.Errorf("%d broker restarts and %d kills carried out; want 2 and 2", rep.BrokerRestarts, rep.Kills)
	}
}

// TestRebalanceStormUnderOrdersKeepsExactlyOnce (SPEC R-RL4): instances of
// the order projection join and leave every 1 to 3 s for 40 s under load;
// the committed output equals the replay and the oracle's recomputation.
func TestRebalanceStormUnderOrdersKeepsExactlyOnce(t *testing.T) {
	cfg := ordersRun(t, 12, 800)
	cfg.Duration, cfg.Churn, cfg.BrokerRestarts = 40*time.Second, 20, 0
	rep := runChaos(t, cfg)
	if rep.Added+rep.Removed != 20 {
		t.Errorf("%d instances added and %d removed; want 20 changes", rep.Added, rep.Removed)
	}
}
