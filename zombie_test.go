package exactly_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestStalledInstanceIsFencedAfterTakeover stops an instance with SIGSTOP
// past its session timeout while another takes over its partitions, then
// lets it continue: whatever it had in flight must never become visible to
// read_committed readers.
func TestStalledInstanceIsFencedAfterTakeover(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	const keys = 23
	produceInputs(t, brokers, 0, 40_000, keys)
	dir := t.TempDir()
	zombie := startChild(t, brokers, dir, 0, exactly.ExactlyOnceV2)
	survivor := startChild(t, brokers, dir, 1, exactly.ExactlyOnceV2)
	defer func() {
		for _, ch := range []*child{zombie, survivor} {
			ch.cmd.Process.Signal(syscall.SIGCONT)
			ch.cmd.Process.Kill()
			ch.cmd.Wait()
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	zombie.cmd.Process.Signal(syscall.SIGSTOP)
	produceInputs(t, brokers, 40_000, 80_000, keys)
	time.Sleep(5 * time.Second) // > session timeout (2 s): the survivor takes over
	zombie.cmd.Process.Signal(syscall.SIGCONT)
	time.Sleep(3 * time.Second)
	out := readCommitted(t, brokers, 80_000, 120*time.Second)
	checkExactlyOnce(t, out, 80_000, keys)
}

// TestStaticMemberRestartKeepsOthersUndisturbed restarts a static member
// within its session timeout: it gets its partitions back and the other
// instance loses none of its partitions. (The broker may still run a
// rebalance round; with cooperative-sticky it moves nothing.)
func TestStaticMemberRestartKeepsOthersUndisturbed(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	const keys = 7
	produceInputs(t, brokers, 0, 1000, keys)
	dir := t.TempDir()

	reg := prometheus.NewRegistry()
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.ApplicationID = "crash" // the group the child processes join
	cfg.InstanceID = "steady"
	cfg.SessionTimeout = 2 * time.Second
	cfg.Registerer = reg
	stop := startApp(t, countingApp(t, true), cfg)
	defer stop()
	other := startChild(t, brokers, dir, 0, exactly.ExactlyOnceV2)
	out := readCommitted(t, brokers, 1000, 30*time.Second)
	checkExactlyOnce(t, out, 1000, keys)
	time.Sleep(time.Second)
	before := metricSum(t, reg, "exactly_rebalances_total")
	abortedBefore := countWithLabel(t, reg, "exactly_transactions_total", "result", "aborted")

	other.cmd.Process.Signal(syscall.SIGKILL)
	other.cmd.Wait()
	other = startChild(t, brokers, dir, 0, exactly.ExactlyOnceV2)
	defer func() { other.cmd.Process.Signal(syscall.SIGTERM); other.cmd.Wait() }()
	produceInputs(t, brokers, 1000, 2000, keys)
	out = readCommitted(t, brokers, 2000, 30*time.Second)
	checkExactlyOnce(t, out, 2000, keys)
	if after := metricSum(t, reg, "exactly_rebalances_total"); after != before {
		t.Fatalf("the steady instance saw %.0f partition changes while its peer restarted within the session timeout", after-before)
	}
	// kfake bumps the group generation when a static member rejoins, so the
	// steady instance's open transaction may fail its offset commit and be
	// redone (KIP-447 fencing at work); Kafka itself keeps the generation.
	t.Logf("steady instance: transactions aborted during the restart: %.0f",
		countWithLabel(t, reg, "exactly_transactions_total", "result", "aborted")-abortedBefore)
}
