package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the exactly program: the demo
// starts projection processes by running its own executable with
// "run orders ...", which here is this binary with EXACTLYTEST_AS_COMMAND set.
func TestMain(m *testing.M) {
	if os.Getenv("EXACTLYTEST_AS_COMMAND") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestDemoKillsProcessesAndVerifies runs a small demo end to end: real
// child processes killed with SIGKILL, then the audit, which must pass.
func TestDemoKillsProcessesAndVerifies(t *testing.T) {
	t.Setenv("EXACTLYTEST_AS_COMMAND", "1")
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := runDemo(ctx, &out, demoOptions{
		listen: "127.0.0.1:0", orders: 300, partitions: 3, instances: 2, kills: 3,
		seed: 5, duration: 4 * time.Second, guarantee: "exactly_once_v2",
	})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"processes killed with SIGKILL     3", "OK: every event reflected exactly once",
		"metrics on /metrics during the run: duplicates_skipped_total, events_buffered_total, buffer_size, events_expired_total, exactly_records_processed_total\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
