package relay

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/internal/pgtest"
)

// helperEnv makes the test binary run a relay instead of the tests, so a
// test can kill a real relay process with SIGKILL.
const helperEnv = "EXACTLY_RELAY_TEST_HELPER"

func runHelperRelay() int {
	r, err := New(Config{
		DSN:             os.Getenv("EXACTLY_RELAY_TEST_DSN"),
		Mode:            Mode(strings.TrimSuffix(os.Getenv("EXACTLY_RELAY_TEST_MODE"), "-transactional")),
		TransactionalID: transactionalID(os.Getenv("EXACTLY_RELAY_TEST_MODE")),
		Kafka:           []kgo.Opt{kgo.SeedBrokers(strings.Split(os.Getenv("EXACTLY_RELAY_TEST_BROKERS"), ",")...)},
		StatusInterval:  50 * time.Millisecond,
	})
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 2
	}
	// Runs until killed; the parent's death ends it too.
	r.Run(context.Background())
	return 1
}

func transactionalID(mode string) string {
	if strings.HasSuffix(mode, "-transactional") {
		return "relay-under-test"
	}
	return ""
}

func startHelper(t *testing.T, dsn, mode string, brokers []string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "EXACTLY_RELAY_TEST_DSN="+dsn,
		"EXACTLY_RELAY_TEST_MODE="+mode, "EXACTLY_RELAY_TEST_BROKERS="+strings.Join(brokers, ","))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func TestRelayKilledWithSIGKILLMidStreamLosesNothing(t *testing.T) {
	for _, mode := range []string{"cdc", "poll", "cdc-transactional"} {
		t.Run(mode, func(t *testing.T) {
			total := 10000
			if strings.HasSuffix(mode, "-transactional") {
				total = 3000
			}
			ctx := context.Background()
			dsn := pgtest.NewDatabase(t)
			migrated(t, dsn)
			brokers := newKafka(t)
			got := consume(ctx, t, brokers)
			relay := startHelper(t, dsn, mode, brokers)

			writersDone := make(chan struct{})
			var w written
			go func() {
				defer close(writersDone)
				writeEvents(ctx, t, dsn, 4, total, &w)
			}()
			for _, at := range []int{total / 4, total / 2} {
				got.waitFor(t, at, 90*time.Second)
				relay.Process.Signal(syscall.SIGKILL)
				relay.Wait()
				relay = startHelper(t, dsn, mode, brokers)
			}
			<-writersDone
			got.waitFor(t, total, 90*time.Second)
			dups := got.check(t, &w)
			waitEmpty(t, dsn)
			t.Logf("%s relay killed twice: %d events, %d duplicate deliveries, none lost", mode, total, dups)

			// A consumer deduplicating by id through the inbox runs each
			// effect once.
			effects, skipped := effectsThroughInbox(t, dsn, brokers, total)
			if effects != total {
				t.Fatalf("inbox consumer: %d effects for %d events (%d duplicates skipped)", effects, total, skipped)
			}
		})
	}
}

func TestRelayLosesNothingWhenPostgreSQLCrashesMidStream(t *testing.T) {
	for _, mode := range []Mode{ModeCDC, ModePoll} {
		t.Run(string(mode), func(t *testing.T) {
			const total = 4000
			ctx := context.Background()
			cluster := pgtest.Start(t)
			dsn := cluster.NewDatabase(t)
			migrated(t, dsn)
			brokers := newKafka(t)
			got := consume(ctx, t, brokers)
			startRelay(t, Config{DSN: dsn, Mode: mode, Kafka: []kgo.Opt{kgo.SeedBrokers(brokers...)}, StatusInterval: 50 * time.Millisecond})

			writersDone := make(chan struct{})
			var w written
			go func() {
				defer close(writersDone)
				writeEvents(ctx, t, dsn, 4, total, &w)
			}()
			got.waitFor(t, total/3, 90*time.Second)
			if err := cluster.Restart(pgtest.Immediate); err != nil {
				t.Fatal(err)
			}
			<-writersDone
			got.waitFor(t, total, 90*time.Second)
			dups := got.check(t, &w)
			waitEmpty(t, dsn)
			t.Logf("%s relay through an immediate PostgreSQL restart: %d events, %d duplicate deliveries, none lost", mode, total, dups)
		})
	}
}
