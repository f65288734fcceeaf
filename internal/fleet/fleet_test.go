//go:build linux

package fleet

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// state returns a process's state letter from /proc (R, S, T, Z …), or ""
// when it no longer exists.
func state(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return fields[0]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shell defines a process running script, which writes the pid of its own
// child (sleep) to a file, and returns a function reading that pid.
func shell(t *testing.T, f *Fleet, name, script string) func() int {
	pidFile := filepath.Join(t.TempDir(), "pid")
	f.Set(name, Spec{Path: "sh", Args: []string{"-c", strings.ReplaceAll(script, "PIDFILE", pidFile)}})
	return func() int {
		var pid int
		waitFor(t, "the child's pid", func() bool {
			b, err := os.ReadFile(pidFile)
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			return err == nil && pid > 0
		})
		return pid
	}
}

// TestKillReachesTheCommandsOwnChildren: a SIGKILL goes to the process
// group, so a wrapper's child dies with it.
func TestKillReachesTheCommandsOwnChildren(t *testing.T) {
	var f Fleet
	defer f.Close(time.Second)
	childPid := shell(t, &f, "wrapper", "sleep 60 & echo $! > PIDFILE; wait")
	if err := f.Start("wrapper"); err != nil {
		t.Fatal(err)
	}
	pid := childPid()
	if !f.Kill("wrapper") {
		t.Fatal("Kill found nothing running")
	}
	waitFor(t, "the wrapper's child to die", func() bool { s := state(pid); return s == "" || s == "Z" })
	if f.Running("wrapper") || len(f.Exited()) != 0 {
		t.Fatalf("after Kill: running %v, exited on their own %v; want neither", f.Running("wrapper"), f.Exited())
	}
}

// TestFreezeThawAndStopOfAFrozenProcess: Freeze stops the process,
// Thaw resumes it, and Stop ends even a frozen one.
func TestFreezeThawAndStopOfAFrozenProcess(t *testing.T) {
	var f Fleet
	defer f.Close(time.Second)
	childPid := shell(t, &f, "sleeper", "sleep 60 & echo $! > PIDFILE; wait")
	if err := f.Start("sleeper"); err != nil {
		t.Fatal(err)
	}
	pid := childPid()
	if !f.Freeze("sleeper") || f.Freeze("sleeper") {
		t.Fatal("Freeze: want true once, then false while frozen")
	}
	waitFor(t, "the process to stop", func() bool { return state(pid) == "T" })
	if !f.Thaw("sleeper") || f.Thaw("sleeper") {
		t.Fatal("Thaw: want true once, then false")
	}
	waitFor(t, "the process to resume", func() bool { return state(pid) == "S" })
	f.Freeze("sleeper")
	start := time.Now()
	if !f.Stop("sleeper", 5*time.Second) {
		t.Fatal("Stop found nothing running")
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("stopping a frozen process took %s: SIGTERM did not reach it", took)
	}
}

// TestExitedListsOnlyProcessesThatEndedOnTheirOwn, in order, and Start
// runs a process again with its definition.
func TestExitedListsOnlyProcessesThatEndedOnTheirOwn(t *testing.T) {
	var f Fleet
	defer f.Close(time.Second)
	f.Set("quits", Spec{Path: "sh", Args: []string{"-c", "exit 3"}})
	f.Set("stays", Spec{Path: "sleep", Args: []string{"60"}})
	for range 2 {
		if err := f.Start("quits"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "quits to exit", func() bool { return !f.Running("quits") })
	}
	if err := f.Start("stays"); err != nil {
		t.Fatal(err)
	}
	f.Kill("stays")
	if got := f.Exited(); !slices.Equal(got, []string{"quits", "quits"}) {
		t.Fatalf("Exited() = %q; want quits twice", got)
	}
	if err := f.Start("nobody"); err == nil {
		t.Fatal("Start of an undefined process succeeded")
	}
}
