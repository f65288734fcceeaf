package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPaymentsDemoUnderSIGKILL runs `exactly demo payments` end to end:
// real child processes, each of the 10 killed with SIGKILL right after the
// gateway charged for it and before it could commit, a real HTTP gateway and
// an embedded broker. With an idempotent gateway every order must be
// charged once, by both pipeline shapes; with a gateway that ignores keys
// the audit must see the double charges.
func TestPaymentsDemoUnderSIGKILL(t *testing.T) {
	t.Setenv("EXACTLYTEST_AS_COMMAND", "1")
	for _, tc := range []struct {
		name     string
		pipeline string
		caller   string
		ignore   bool
		want     []string
	}{
		{name: "direct", pipeline: pipelineDirect, want: []string{"duplicate charges              0\n", "(0 repeated)", "OK: every valid order charged exactly once",
			"metrics on /metrics during the run: " + strings.Join(paymentsDemoMetrics, ", ") + "\n"}},
		{name: "outbox-split", pipeline: pipelineOutbox, caller: "at_least_once", want: []string{"duplicate charges              0\n", "OK: every valid order charged exactly once",
			"pending-api-calls holds 200 records for 200 orders (0 repeated)"}},
		{name: "outbox-split-transactional-caller", pipeline: pipelineOutbox, caller: "exactly_once_v2", want: []string{"duplicate charges              0\n", "(0 repeated)"}},
		{name: "gateway-ignores-keys", pipeline: pipelineDirect, ignore: true, want: []string{"DOUBLE CHARGES", "(0 repeated)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err := runPaymentsDemo(ctx, &out, paymentsDemoOptions{
				orders: 200, partitions: 3, instances: 2, kills: 10, seed: 3, duration: 2 * time.Second,
				pipeline: tc.pipeline, callerGuarantee: tc.caller, ignoreKeys: tc.ignore,
				latency: 2 * time.Millisecond, transientRate: 0.05, declineRate: 0.03, concurrency: 4, timeout: 90 * time.Second,
			})
			t.Log("\n" + out.String())
			var exit *exitError
			switch {
			case tc.ignore && !errors.As(err, &exit):
				t.Fatalf("ignoring keys: %v, want an exit status naming the duplicate charges", err)
			case !tc.ignore && err != nil:
				t.Fatal(err)
			}
			report := out.String()
			for _, want := range append(tc.want, "processes killed with SIGKILL  10 ") {
				if !strings.Contains(report, want) {
					t.Errorf("report lacks %q", want)
				}
			}
			if tc.pipeline == pipelineOutbox && !regexp.MustCompile(`validator: killed [1-9][0-9]* times with SIGKILL`).MatchString(report) {
				t.Error("the validator was never killed")
			}
			if strings.Contains(report, "exited on their own") {
				t.Error("a pipeline process failed on its own")
			}
		})
	}
}
