package exactly_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/counting"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

type countOut = counting.Output

func countingApp(t testing.TB, persistent bool) *exactly.Topology {
	top, err := counting.Topology("input", "output", persistent)
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func newCluster(t testing.TB, partitions int32) []string {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func produceInputs(t testing.TB, brokers []string, from, to int, keys int) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := from; i < to; i++ {
		recs = append(recs, &kgo.Record{Topic: "input", Key: []byte(fmt.Sprint("k", i%keys)), Value: []byte(fmt.Sprint("r", i)), Timestamp: time.UnixMilli(int64(i))})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// readCommitted reads the output topic read_committed until it holds want
// distinct input ids or the deadline passes, then reads a little longer so
// that duplicates beyond them would show.
func readCommitted(t testing.TB, brokers []string, want int, timeout time.Duration) []countOut {
	return readCommittedWith(t, brokers, want, timeout)
}

func readCommittedWith(t testing.TB, brokers []string, want int, timeout time.Duration, opts ...kgo.Opt) []countOut {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("output"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []countOut
	distinct := map[string]bool{}
	poll := func(wait time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var v countOut
			if err := json.Unmarshal(r.Value, &v); err != nil {
				t.Errorf("bad output %q: %v", r.Value, err)
			}
			out = append(out, v)
			distinct[v.ID] = true
		})
	}
	deadline := time.Now().Add(timeout)
	for len(distinct) < want && time.Now().Before(deadline) {
		poll(500 * time.Millisecond)
	}
	poll(300 * time.Millisecond)
	return out
}

// checkExactlyOnce asserts every input id 0..n-1 appears once and the
// counts per key are 1..m in some order.
func checkExactlyOnce(t testing.TB, out []countOut, n, keys int) {
	t.Helper()
	seen := map[string]int{}
	maxCount := map[int]int64{}
	for _, o := range out {
		seen[o.ID]++
		var i int
		fmt.Sscanf(o.ID, "r%d", &i)
		maxCount[i%keys] = max(maxCount[i%keys], o.Count)
	}
	for i := range n {
		if c := seen[fmt.Sprint("r", i)]; c != 1 {
			t.Fatalf("input r%d appears %d times in the committed output (of %d outputs)", i, c, len(out))
		}
	}
	if len(out) != n {
		t.Fatalf("%d outputs for %d inputs", len(out), n)
	}
	for k := range keys {
		if want := int64((n - k + keys - 1) / keys); maxCount[k] != want {
			t.Fatalf("key k%d: final count %d, want %d", k, maxCount[k], want)
		}
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("EXACTLY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func appConfig(brokers []string, dir string, g exactly.Guarantee) exactly.Config {
	return exactly.Config{
		Brokers:          brokers,
		ApplicationID:    "counting",
		Guarantee:        g,
		CommitInterval:   50 * time.Millisecond,
		StateDir:         dir,
		SessionTimeout:   3 * time.Second,
		RebalanceTimeout: 5 * time.Second,
		CreateTopics:     true,
		Logger:           testLogger(),
	}
}

func startApp(t testing.TB, top *exactly.Topology, cfg exactly.Config) (stop func() error) {
	app, err := exactly.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() { defer wg.Done(); runErr = app.Run(context.Background()) }()
	return func() error { app.Close(); wg.Wait(); return runErr }
}

func TestKafkaExactlyOnceAcrossRestartsAndRebalances(t *testing.T) {
	for _, persistent := range []bool{false, true} {
		t.Run(fmt.Sprintf("persistent=%v", persistent), func(t *testing.T) {
			brokers := newCluster(t, 3)
			top := countingApp(t, persistent)
			dirA, dirB := t.TempDir(), t.TempDir()
			const keys = 17
			produceInputs(t, brokers, 0, 3000, keys)
			stopA := startApp(t, top, appConfig(brokers, dirA, exactly.ExactlyOnceV2))
			time.Sleep(300 * time.Millisecond)
			// A second instance joins mid-stream: partitions move.
			stopB := startApp(t, top, appConfig(brokers, dirB, exactly.ExactlyOnceV2))
			produceInputs(t, brokers, 3000, 6000, keys)
			time.Sleep(500 * time.Millisecond)
			if err := stopA(); err != nil {
				t.Fatal(err)
			}
			produceInputs(t, brokers, 6000, 9000, keys)
			// A restarts on its old state directory.
			stopA = startApp(t, top, appConfig(brokers, dirA, exactly.ExactlyOnceV2))
			out := readCommitted(t, brokers, 9000, 60*time.Second)
			checkExactlyOnce(t, out, 9000, keys)
			if err := stopA(); err != nil {
				t.Fatal(err)
			}
			if err := stopB(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestKafkaStateDirectoryInUseFailsWithErrStateDirLocked: a second instance
// on a directory a running one holds stops at once, naming the directory,
// with an error callers can recognise.
func TestKafkaStateDirectoryInUseFailsWithErrStateDirLocked(t *testing.T) {
	brokers := newCluster(t, 1)
	top := countingApp(t, true)
	dir := t.TempDir()
	first, err := exactly.New(top, appConfig(brokers, dir, exactly.ExactlyOnceV2))
	if err != nil {
		t.Fatal(err)
	}
	firstErr := make(chan error, 1)
	go func() { firstErr <- first.Run(context.Background()) }()
	defer func() {
		first.Close()
		if err := <-firstErr; err != nil {
			t.Errorf("first instance: %v", err)
		}
	}()
	select {
	case <-first.Ready():
	case err := <-firstErr:
		firstErr <- nil // reported here, not again when the deferred Close waits
		t.Fatalf("first instance stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("first instance not ready after 30s")
	}
	app, err := exactly.New(top, appConfig(brokers, dir, exactly.ExactlyOnceV2))
	if err != nil {
		t.Fatal(err)
	}
	err = app.Run(context.Background())
	if !errors.Is(err, exactly.ErrStateDirLocked) || !contains(err.Error(), dir) {
		t.Fatalf("second instance on %s: %v, want ErrStateDirLocked naming the directory", dir, err)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || (len(s) >= len(sub) && indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

var _ = kadm.NewClient

func saslMechanism(mech string) sasl.Mechanism {
	switch mech {
	case "PLAIN":
		return plain.Auth{User: "app", Pass: "s3cret"}.AsMechanism()
	case "SCRAM-SHA-256":
		return scram.Auth{User: "app", Pass: "s3cret"}.AsSha256Mechanism()
	default:
		return scram.Auth{User: "app", Pass: "s3cret"}.AsSha512Mechanism()
	}
}

func TestInteractiveQueryReadsCommittedLocalState(t *testing.T) {
	brokers := newCluster(t, 2)
	top := countingApp(t, false)
	produceInputs(t, brokers, 0, 700, 7)
	reg := prometheus.NewRegistry()
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.Registerer = reg
	app, err := exactly.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go app.Run(context.Background())
	defer app.Close()
	readCommitted(t, brokers, 700, 30*time.Second)
	defer func() {
		if n := metricSum(t, reg, "exactly_store_entries"); n != 7 {
			t.Errorf("exactly_store_entries = %.0f, want 7", n)
		}
	}()
	time.Sleep(200 * time.Millisecond) // the stores apply right after the commit
	for k := range 7 {
		n, found, err := exactly.Query[string, int64](context.Background(), app, "counts", fmt.Sprint("k", k))
		if err != nil || !found || n != 100 {
			t.Fatalf("query k%d = %d, %v, %v; want 100", k, n, found, err)
		}
	}
	if _, found, err := exactly.Query[string, int64](context.Background(), app, "counts", "never-seen"); found || err != nil {
		t.Fatalf("unknown key: found=%v err=%v", found, err)
	}
}

func TestKafkaWithSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "input", "output"),
				kfake.GroupMinSessionTimeout(100*time.Millisecond), kfake.EnableSASL(), kfake.Superuser(mech, "app", "s3cret"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			brokers := c.ListenAddrs()
			admin := kgo.SASL(saslMechanism(mech))
			cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), admin)
			if err != nil {
				t.Fatal(err)
			}
			if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "input", Key: []byte("k0"), Value: []byte("r0")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			cl.Close()
			cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
			cfg.SASL = &exactly.SASL{Mechanism: mech, User: "app", Password: "s3cret"}
			stop := startApp(t, countingApp(t, false), cfg)
			defer stop()
			out := readCommittedWith(t, brokers, 1, 20*time.Second, admin)
			checkExactlyOnce(t, out, 1, 1)

			bad := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
			bad.SASL = &exactly.SASL{Mechanism: mech, User: "app", Password: "wrong"}
			app, _ := exactly.New(countingApp(t, false), bad)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := app.Run(ctx); err == nil || contains(err.Error(), "wrong") {
				t.Fatalf("wrong password: %v (want an error that does not show the password)", err)
			}
		})
	}
}

// TestKafkaCloseWithSeveralWorkersReturns: an instance running several
// workers closes, under either guarantee, while its workers' final commits
// have work to commit and meet the rebalance their leaving starts (a
// revocation callback of one worker arriving while it commits, which may
// abort it); an instance started after them brings the output to every
// input exactly once.
func TestKafkaCloseWithSeveralWorkersReturns(t *testing.T) {
	for _, g := range []exactly.Guarantee{exactly.ExactlyOnceV2, exactly.AtLeastOnce} {
		t.Run(fmt.Sprint(g), func(t *testing.T) {
			brokers := newCluster(t, 4)
			top := countingApp(t, false)
			const keys, rounds, perRound = 13, 4, 2000
			for round := range rounds {
				produceInputs(t, brokers, round*perRound, (round+1)*perRound, keys)
				cfg := appConfig(brokers, t.TempDir(), g)
				cfg.Workers = 2
				// Nothing commits before Close: the final commits do.
				cfg.CommitInterval = time.Minute
				cfg.TransactionTimeout = 2 * time.Minute
				app, err := exactly.New(top, cfg)
				if err != nil {
					t.Fatal(err)
				}
				runErr := make(chan error, 1)
				go func() { runErr <- app.Run(context.Background()) }()
				select {
				case <-app.Ready():
				case err := <-runErr:
					t.Fatalf("round %d: stopped before ready: %v", round, err)
				case <-time.After(30 * time.Second):
					t.Fatalf("round %d: not ready after 30s", round)
				}
				time.Sleep(200 * time.Millisecond)
				closed := make(chan struct{})
				go func() { app.Close(); close(closed) }()
				select {
				case <-closed:
				case <-time.After(30 * time.Second):
					t.Fatalf("round %d: Close has not returned after 30s", round)
				}
				if err := <-runErr; err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
			}
			stop := startApp(t, top, appConfig(brokers, t.TempDir(), g))
			out := readCommitted(t, brokers, rounds*perRound, 60*time.Second)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if g == exactly.ExactlyOnceV2 {
				checkExactlyOnce(t, out, rounds*perRound, keys)
			}
		})
	}
}
