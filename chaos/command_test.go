package chaos_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// userProgram is a user's application built on examples/counting: it
// takes the brokers and its state directory from flags, and its instance
// id and session timeout from the environment exactly chaos sets.
const userProgram = `package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/counting"
)

func main() {
	brokers := flag.String("brokers", "", "seed brokers")
	stateDir := flag.String("state-dir", "", "state directory")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	top, err := counting.Topology("input", "output", true)
	if err != nil {
		log.Error("topology", "err", err)
		os.Exit(1)
	}
	session, _ := time.ParseDuration(os.Getenv("EXACTLY_SESSION_TIMEOUT"))
	app, err := exactly.New(top, exactly.Config{
		Brokers:        strings.Split(*brokers, ","),
		ApplicationID:  "counting",
		StateDir:       *stateDir,
		InstanceID:     os.Getenv("EXACTLY_INSTANCE_ID"),
		SessionTimeout: session,
		CreateTopics:   true,
		Logger:         log,
	})
	if err != nil {
		log.Error("config", "err", err)
		os.Exit(1)
	}
	if err := app.Run(ctx); err != nil {
		log.Error("run", "err", err)
		os.Exit(1)
	}
}
`

// buildUserProgram builds userProgram in a module of its own that
// requires this one through a replace directive, offline.
func buildUserProgram(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	goMod := "module example.com/mycounter\n\ngo 1.26.8\n\nrequire github.com/exactly-go/exactly v0.0.0\n\nreplace github.com/exactly-go/exactly => " + root + "\n"
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"go.mod": []byte(goMod), "go.sum": sum, "main.go": []byte(userProgram)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "mycounter")
	if err := goBuild(dir, bin, ".", "GOSUMDB=off"); err != nil {
		t.Fatal(err)
	}
	return bin
}

// runCommand runs the exactly command with args, with the built binaries'
// directories first on PATH, and returns its output and exit error.
func runCommand(t *testing.T, pathDirs []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exactlyBinary(t), args...)
	cmd.Env = append(os.Environ(), "PATH="+strings.Join(append(pathDirs, os.Getenv("PATH")), string(os.PathListSeparator)))
	out, err := cmd.CombinedOutput()
	t.Logf("exactly %s\n%s", strings.Join(args, " "), out)
	return string(out), err
}

// TestChaosCommandOnRunOrdersHolds runs, as the README shows it, `exactly
// chaos -- exactly run orders` with kills, a zombie and a broker restart:
// it exits 0 and reports each of them and both verifiers passing.
func TestChaosCommandOnRunOrdersHolds(t *testing.T) {
	dir := t.TempDir()
	out, err := runCommand(t, []string{filepath.Dir(exactlyBinary(t))}, "chaos",
		"--orders", "300", "--kills", "3", "--zombies", "1", "--broker-restarts", "1", "--duration", "20s", "--seed", "3",
		"--dir", dir, "--", "exactly", "run", "orders")
	if err != nil {
		t.Fatalf("exactly chaos: %v\n%s", err, logs(dir))
	}
	for _, want := range []string{
		"instances killed (SIGKILL)             3\n",
		"zombies (SIGSTOP past the session)     1\n",
		"broker restarts (SIGKILL)              1 (0 with transactions open)\n",
		"replay                                 PASS: records out",
		"duplicates 0, lost 0, different 0, unexpected 0, out of order 0\n",
		"orders audit                           PASS",
		"OK: every verifier holds",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestChaosCommandOnAUserProgramHolds builds a user's program on
// examples/counting in a module of its own, runs exactly chaos over it
// with kills, and the replay verifier passes.
func TestChaosCommandOnAUserProgramHolds(t *testing.T) {
	bin := buildUserProgram(t)
	dir := t.TempDir()
	out, err := runCommand(t, nil, "chaos", "--topology", "counting",
		"--records", "6000", "--keys", "60", "--kills", "3", "--zombies", "0", "--broker-restarts", "0", "--duration", "15s",
		"--dir", dir, "--", bin, "-brokers", "{brokers}", "-state-dir", "{state-dir}")
	if err != nil {
		t.Fatalf("exactly chaos: %v\n%s", err, logs(dir))
	}
	for _, want := range []string{
		"instances killed (SIGKILL)             3\n",
		"records in                             6000 (6000 committed by the group)",
		"replay                                 PASS: records out 6000, duplicates 0, lost 0, different 0, unexpected 0, out of order 0\n",
		"OK: every verifier holds",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
