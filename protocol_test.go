package exactly_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/fleet"
	"github.com/exactly-go/exactly/internal/kafkatest"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ticker emits, on a wall-clock punctuator and without any input, the next
// number of a per-task counter kept in a logged store: committed output per
// task must read 1, 2, 3 … with no number twice, whoever owned the task.
type ticker struct {
	ctx   exactly.ProcessorContext[string, int64]
	ticks store.KeyValueStore[string, int64]
}

func (t *ticker) Init(ctx exactly.ProcessorContext[string, int64]) (err error) {
	t.ctx = ctx
	if t.ticks, err = exactly.GetKeyValueStore[string, int64](ctx, "ticks"); err != nil {
		return err
	}
	_, err = ctx.Schedule(20*time.Millisecond, exactly.WallClockTime, func(time.Time) error {
		key := fmt.Sprint("p", ctx.TaskID().Partition)
		n, _, err := t.ticks.Get(key)
		if err != nil {
			return err
		}
		if err := t.ticks.Put(key, n+1); err != nil {
			return err
		}
		t.ctx.Forward(exactly.Record[string, int64]{Key: key, Value: n + 1})
		return nil
	})
	return err
}

func (t *ticker) Process(exactly.Record[string, string]) error { return nil }
func (t *ticker) Close() error                                 { return nil }

func tickerApp(t testing.TB) *exactly.Topology {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"input"}, Keys: serde.String, Values: serde.String})
	exactly.AddProcessor(b, "tick", func() exactly.Processor[string, string, string, int64] { return &ticker{} }, "in")
	exactly.AddStore(b, exactly.Store[string, int64]{Name: "ticks", Keys: serde.String, Values: serde.Int64, Persistent: true}, "tick")
	exactly.AddSink(b, "out", exactly.Sink[string, int64]{Topic: "output", Keys: serde.String, Values: serde.Int64}, "tick")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// readTicks reads the committed ticks per key, in offset order.
func readTicks(t testing.TB, brokers []string) map[string][]int64 {
	out := map[string][]int64{}
	for _, r := range readAllCommitted(t, brokers, "output") {
		v, err := serde.Int64.Deserialize(r.Value)
		if err != nil {
			t.Fatalf("bad tick %q: %v", r.Value, err)
		}
		out[string(r.Key)] = append(out[string(r.Key)], v)
	}
	return out
}

// TestMemberOutOfTheGroupCommitsNothingWithoutInput makes the broker expel
// a member while the member's heartbeats are answered as if all were well
// (the member cannot know, as after a long pause), so it keeps running a
// wall-clock punctuator on tasks another member now owns. A transaction of
// such a member carries no input offsets, yet it must not commit: the
// group has not confirmed the member may write for those tasks.
func TestMemberOutOfTheGroupCommitsNothingWithoutInput(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()

	var expelled atomic.Bool
	c.ControlKey(int16(kmsg.Heartbeat), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		hb := req.(*kmsg.HeartbeatRequest)
		if !expelled.Load() || hb.InstanceID == nil || *hb.InstanceID != "stalled-0" {
			return nil, nil, false
		}
		resp := hb.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.Version = hb.Version
		return resp, nil, true // the broker never sees it; the member believes it is alive
	})

	top := tickerApp(t)
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.ApplicationID = "ticker"
	cfg.SessionTimeout = time.Second
	cfg.InstanceID = "stalled"
	stopStalled := startApp(t, top, cfg)
	defer stopStalled()
	time.Sleep(time.Second)

	cfg.StateDir, cfg.InstanceID = t.TempDir(), ""
	stopSurvivor := startApp(t, top, cfg)
	defer stopSurvivor()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.WaitGroupStable(ctx, "ticker", 2); err != nil {
		t.Fatalf("two members never formed a stable group: %v", err)
	}
	time.Sleep(500 * time.Millisecond)

	expelled.Store(true)
	if _, err := c.WaitGroupStable(ctx, "ticker", 1); err != nil {
		t.Fatalf("the stalled member was never expelled: %v", err)
	}
	time.Sleep(2 * time.Second) // both believe they own the expelled member's tasks
	stopSurvivor()
	stopStalled()

	ticks := readTicks(t, brokers)
	if len(ticks) != 4 {
		t.Fatalf("ticks of %d tasks committed, want 4", len(ticks))
	}
	for key, ns := range ticks {
		for i, n := range ns {
			if n != int64(i+1) {
				t.Fatalf("task %s: committed tick %d at position %d (ticks %v…): a member outside the group committed", key, n, i+1, ns[:min(len(ns), i+3)])
			}
		}
	}
}

// countingThenStop runs the counting application over inputs [from, to)
// until all are committed, then stops it cleanly.
func countingThenStop(t *testing.T, brokers []string, dir string, from, to, keys int) {
	t.Helper()
	produceInputs(t, brokers, from, to, keys)
	stop := startApp(t, countingApp(t, false), appConfig(brokers, dir, exactly.ExactlyOnceV2))
	out := readCommitted(t, brokers, to, 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, out, to, keys)
}

// changelogRecords returns a changelog partition's records, control records
// and aborted ones included, in offset order.
func changelogRecords(t testing.TB, brokers []string, partition int32) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.KeepControlRecords(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"counting-counts-changelog": {partition: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	readUntilQuiet(cl, func(r *kgo.Record) { recs = append(recs, r) })
	return recs
}

// TestRestoreWaitsForCommitMarkersOfTheChangelog models a real cluster where
// the transaction coordinator's markers land on each partition on their
// own: the previous owner's last commit is visible in the group's offsets
// while the changelog's commit marker has not been written yet (the last
// stable offset still stands before that transaction's records, and nothing
// of it can be fetched). The new owner must not process against a store
// that misses those writes.
func TestRestoreWaitsForCommitMarkersOfTheChangelog(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	const keys = 5
	countingThenStop(t, brokers, t.TempDir(), 0, 500, keys)

	// The last transaction's records on the changelog: after the previous
	// control record, up to the final commit marker.
	recs := changelogRecords(t, brokers, 0)
	last := recs[len(recs)-1]
	if !last.Attrs.IsControl() {
		t.Fatalf("the changelog does not end with a commit marker")
	}
	lastTxnStart := int64(0)
	for _, r := range recs[:len(recs)-1] {
		if r.Attrs.IsControl() {
			lastTxnStart = r.Offset + 1
		}
	}
	if lastTxnStart >= last.Offset {
		t.Fatalf("the last transaction wrote no changelog record")
	}

	// Until markerLands, the changelog's commit marker is "in flight":
	// read_committed offsets stop before the last transaction and its
	// records cannot be fetched.
	markerLands := time.Now().Add(3 * time.Second)
	inFlight := func() bool { return time.Now().Before(markerLands) }
	c.ControlKey(int16(kmsg.ListOffsets), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		lo := req.(*kmsg.ListOffsetsRequest)
		if !inFlight() || lo.IsolationLevel != 1 || len(lo.Topics) != 1 || lo.Topics[0].Topic != "counting-counts-changelog" {
			return nil, nil, false
		}
		resp := lo.ResponseKind().(*kmsg.ListOffsetsResponse)
		resp.Version = lo.Version
		for _, rt := range lo.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition, sp.Offset, sp.Timestamp, sp.LeaderEpoch = rp.Partition, lastTxnStart, -1, 0
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		f := req.(*kmsg.FetchRequest)
		for _, rt := range f.Topics {
			if rt.Topic == "counting-counts-changelog" || rt.TopicID == c.TopicInfo("counting-counts-changelog").TopicID {
				c.SleepControl(func() { time.Sleep(time.Until(markerLands)) })
			}
		}
		return nil, nil, false
	})

	// A new owner with no local state restores, then processes more input.
	countingThenStop(t, brokers, t.TempDir(), 500, 1000, keys)
}

// TestRestoreEndsWhereAbortedRecordsAndOpenTransactionsInterleave leaves
// on a changelog what interleaved producers leave: a transaction that is
// later aborted, and after its record one that is still open. Restore must
// not wait for a record read_committed never returns; it ends once every
// transaction it read into has ended.
func TestRestoreEndsWhereAbortedRecordsAndOpenTransactionsInterleave(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	const keys = 5
	countingThenStop(t, brokers, t.TempDir(), 0, 300, keys)

	txn := func(id string) *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(id), kgo.TransactionTimeout(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		rec := &kgo.Record{Topic: "counting-counts-changelog", Partition: 0, Key: []byte("k0"), Value: []byte{0, 0, 0, 0, 0, 0, 3, 0xe7}}
		if err := cl.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	zombie := txn("zombie")   // its record first …
	pending := txn("pending") // … then one of a transaction still open
	if err := zombie.EndTransaction(context.Background(), kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	go func() { // the open transaction ends a while later, aborted too
		time.Sleep(2 * time.Second)
		pending.EndTransaction(context.Background(), kgo.TryAbort)
	}()

	done := make(chan struct{})
	go func() { defer close(done); countingThenStop(t, brokers, t.TempDir(), 300, 600, keys) }()
	select {
	case <-done:
	case <-time.After(45 * time.Second):
		t.Fatal("the new owner never finished restoring")
	}
}

// TestTaskStartFetchesOnlyItsOwnOffsets: on a real broker a stable offset
// fetch answers UNSTABLE_OFFSET_COMMIT for every partition with a pending
// transactional commit, and a busy group nearly always has one somewhere.
// The broker here plays that group: a fetch of the whole group always finds
// another member's partition unsettled. Starting a task must ask only for
// the partitions it starts.
func TestTaskStartFetchesOnlyItsOwnOffsets(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	var wholeGroup atomic.Int64
	unsettled := func() kmsg.OffsetFetchResponseTopic {
		st := kmsg.NewOffsetFetchResponseTopic()
		st.Topic = "elsewhere"
		sp := kmsg.NewOffsetFetchResponseTopicPartition()
		sp.Partition, sp.Offset, sp.LeaderEpoch, sp.ErrorCode = 0, -1, -1, kerr.UnstableOffsetCommit.Code
		st.Partitions = append(st.Partitions, sp)
		return st
	}
	c.ControlKey(int16(kmsg.OffsetFetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		of := req.(*kmsg.OffsetFetchRequest)
		resp := of.ResponseKind().(*kmsg.OffsetFetchResponse)
		resp.Version = of.Version
		switch {
		case !of.RequireStable:
			return nil, nil, false
		case of.Version < 8 && of.Topics == nil:
			resp.Topics = append(resp.Topics, unsettled())
		case of.Version >= 8 && len(of.Groups) == 1 && of.Groups[0].Topics == nil:
			g := kmsg.NewOffsetFetchResponseGroup()
			g.Group = of.Groups[0].Group
			u := unsettled()
			gt := kmsg.NewOffsetFetchResponseGroupTopic()
			gt.Topic = u.Topic
			for _, p := range u.Partitions {
				gp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
				gp.Partition, gp.Offset, gp.LeaderEpoch, gp.ErrorCode = p.Partition, p.Offset, p.LeaderEpoch, p.ErrorCode
				gt.Partitions = append(gt.Partitions, gp)
			}
			g.Topics = append(g.Topics, gt)
			resp.Groups = append(resp.Groups, g)
		default:
			return nil, nil, false
		}
		wholeGroup.Add(1)
		return resp, nil, true
	})

	const keys = 7
	produceInputs(t, brokers, 0, 500, keys)
	stop := startApp(t, countingApp(t, true), appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2))
	out := readCommitted(t, brokers, 500, 20*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stable fetches of the whole group: %d", wholeGroup.Load())
	checkExactlyOnce(t, out, 500, keys)
}

// TestScrapesAndQueriesWhileTasksMove scrapes the metrics (which count the
// entries of every local store) and queries keys in a loop while instances
// join and leave and the tasks with their persistent stores move: no scrape
// or query may fail on a store closed under it.
func TestScrapesAndQueriesWhileTasksMove(t *testing.T) {
	brokers := newCluster(t, 4)
	top := countingApp(t, true)
	const keys = 2000
	produceInputs(t, brokers, 0, 20_000, keys)
	reg := prometheus.NewRegistry()
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.Registerer = reg
	app, err := exactly.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go app.Run(context.Background())
	defer app.Close()
	readCommitted(t, brokers, 20_000, 60*time.Second)

	stop := make(chan struct{})
	var scrapes, queries, local atomic.Int64
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := reg.Gather(); err != nil {
				select {
				case errs <- fmt.Errorf("scrape: %w", err):
				default:
				}
			}
			scrapes.Add(1)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, found, err := exactly.Query[string, int64](context.Background(), app, "counts", fmt.Sprint("k", i%keys))
			var notLocal *exactly.NotLocalError
			if err != nil && !errors.As(err, &notLocal) && !errors.Is(err, exactly.ErrRestoring) {
				select {
				case errs <- fmt.Errorf("query: %w", err):
				default:
				}
			}
			if found {
				local.Add(1)
			}
			queries.Add(1)
		}
	}()
	for round := range 3 {
		cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
		other := startApp(t, top, cfg)
		time.Sleep(1500 * time.Millisecond)
		if err := other(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		time.Sleep(1500 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	t.Logf("%d scrapes, %d queries (%d answered locally) while tasks moved 6 times", scrapes.Load(), queries.Load(), local.Load())
	if local.Load() == 0 || scrapes.Load() == 0 {
		t.Fatal("the loops did not run against local stores")
	}
}

// proxiedCluster starts a broker with topics input and output and a proxy
// in front of it.
func proxiedCluster(t *testing.T, partitions int32) (*kfake.Cluster, *kafkatest.Proxy) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	proxy, err := kafkatest.NewProxy(c.ListenAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	return c, proxy
}

// TestUnconfirmedCommitRestartsFromTheGroupsState: the broker commits a
// transaction but answers EndTxn with UNKNOWN_SERVER_ERROR, after which the
// client cannot tell whether it committed (franz-go retries it as an abort
// and reports "not committed"). Processing must go on from what the group
// and the changelog hold, not from the consumer's own idea of it.
func TestUnconfirmedCommitRestartsFromTheGroupsState(t *testing.T) {
	_, proxy := proxiedCluster(t, 2)
	var commits, unconfirmed atomic.Int64
	proxy.SetHook(kmsg.EndTxn, func(req kmsg.Request, resp kmsg.Response) {
		r := resp.(*kmsg.EndTxnResponse)
		if !req.(*kmsg.EndTxnRequest).Commit || r.ErrorCode != 0 {
			return
		}
		if n := commits.Add(1); n%4 == 3 { // committed, but the client is told otherwise
			r.ErrorCode = kerr.UnknownServerError.Code
			unconfirmed.Add(1)
		}
	})
	brokers := []string{proxy.Addr()}
	const keys = 13
	stop := startApp(t, countingApp(t, true), appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2))
	for i := range 10 {
		produceInputs(t, brokers, i*300, (i+1)*300, keys)
		time.Sleep(150 * time.Millisecond)
	}
	out := readCommitted(t, brokers, 3000, 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d commits, %d of them reported to the client as failed", commits.Load(), unconfirmed.Load())
	if unconfirmed.Load() == 0 {
		t.Fatal("no commit was made unconfirmed")
	}
	checkExactlyOnce(t, out, 3000, keys)
}

// amplifierApp writes each input value three times over; an input of a
// third of the producer's limit makes an output no broker takes.
func amplifierApp(t testing.TB, onProduction exactly.ErrorAction) *exactly.Topology {
	b := exactly.NewBuilder()
	b.OnProductionError(onProduction)
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"input"}, Keys: serde.String, Values: serde.String})
	exactly.AddProcessor(b, "triple", exactly.ProcessorFunc[string, string, string, string](
		func(ctx exactly.ProcessorContext[string, string], rec exactly.Record[string, string]) error {
			ctx.Forward(exactly.Record[string, string]{Key: rec.Key, Value: strings.Repeat(rec.Value, 3)})
			return nil
		}).Supplier(), "in")
	exactly.AddSink(b, "out", exactly.Sink[string, string]{Topic: "output", Keys: serde.String, Values: serde.String}, "triple")
	exactly.AddDeadLetterSink(b, "dlq", "input-dlq", "in")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// readTopic reads a topic read_committed until it holds want records or
// the deadline passes, then a little longer so that extra records show.
func readTopic(t testing.TB, brokers []string, topic string, want int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	poll := func(wait time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	for deadline := time.Now().Add(timeout); len(out) < want && time.Now().Before(deadline); {
		poll(300 * time.Millisecond)
	}
	poll(300 * time.Millisecond)
	return out
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// poisonInputs writes 300 small records over two partitions and, as the
// 151st, one whose output the producer refuses (about 1.2 MB).
func poisonInputs(t *testing.T, brokers []string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := range 300 {
		v := fmt.Sprint("r", i)
		if i == 150 {
			v = strings.Repeat("x", 400_000)
		}
		recs = append(recs, &kgo.Record{Topic: "input", Partition: int32(i % 2), Key: []byte(fmt.Sprint("k", i)), Value: []byte(v)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestRefusedOutputIsDeadLetteredAndStopsNothingElse: one input whose
// output the broker refuses (too large) used to abort the worker's shared
// transaction every commit, forever, stopping every partition. With
// OnProductionError(DeadLetterOnError) the input goes to the dead-letter
// topic and everything else is committed exactly once.
func TestRefusedOutputIsDeadLetteredAndStopsNothingElse(t *testing.T) {
	brokers := newCluster(t, 2)
	poisonInputs(t, brokers)
	reg := prometheus.NewRegistry()
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.Registerer = reg
	stop := startApp(t, amplifierApp(t, exactly.DeadLetterOnError), cfg)
	out := readTopic(t, brokers, "output", 299, 30*time.Second)
	dlq := readTopic(t, brokers, "input-dlq", 1, 10*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range out {
		seen[string(r.Key)]++
	}
	for i := range 300 {
		if want := 1 - btoi(i == 150); seen[fmt.Sprint("k", i)] != want {
			t.Fatalf("k%d: %d outputs, want %d (%d outputs in all)", i, seen[fmt.Sprint("k", i)], want, len(out))
		}
	}
	if len(dlq) != 1 || string(dlq[0].Key) != "k150" || header(dlq[0], exactly.HeaderErrorReason) != "production-error" || header(dlq[0], exactly.HeaderSourcePartition) != "0" {
		t.Fatalf("dead letters: %d, want the record k150 with reason production-error", len(dlq))
	}
	t.Logf("dead letter: %s", header(dlq[0], exactly.HeaderErrorMessage))
	if n := countWithLabel(t, reg, "exactly_produce_errors_total", "kind", "refused"); n < 1 {
		t.Fatalf("exactly_produce_errors_total{kind=refused} = %v", n)
	}
	if n := metricSum(t, reg, "exactly_dead_letter_records_total"); n != 1 {
		t.Fatalf("exactly_dead_letter_records_total = %v, want 1 (committed dead letters only)", n)
	}
}

// TestRefusedOutputFailsTheTaskNamingTheRecord: with the default
// OnProductionError the application stops with an error that names the
// input record, instead of retrying forever.
func TestRefusedOutputFailsTheTaskNamingTheRecord(t *testing.T) {
	brokers := newCluster(t, 2)
	poisonInputs(t, brokers)
	app, err := exactly.New(amplifierApp(t, exactly.FailOnError), appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = app.Run(ctx)
	if ctx.Err() != nil || err == nil || !strings.Contains(err.Error(), "input/0@75") || !strings.Contains(err.Error(), "production-error") {
		t.Fatalf("run ended with %v; want an error naming input/0@75 and production-error", err)
	}
	t.Log(err)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// failingTickerApp has a wall-clock punctuator that fails in the task of
// input partition 0, every time.
func failingTickerApp(t testing.TB) *exactly.Topology {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"input"}, Keys: serde.String, Values: serde.String})
	exactly.AddProcessor(b, "fail", func() exactly.Processor[string, string, string, string] { return &failingTicker{} }, "in")
	exactly.AddSink(b, "out", exactly.Sink[string, string]{Topic: "output", Keys: serde.String, Values: serde.String}, "fail")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

type failingTicker struct{}

func (*failingTicker) Init(ctx exactly.ProcessorContext[string, string]) error {
	_, err := ctx.Schedule(50*time.Millisecond, exactly.WallClockTime, func(time.Time) error {
		if ctx.TaskID().Partition == 0 {
			return errors.New("the downstream service refuses")
		}
		return nil
	})
	return err
}
func (*failingTicker) Process(exactly.Record[string, string]) error { return nil }
func (*failingTicker) Close() error                                 { return nil }

// runUntil runs app until it returns or the deadline passes.
func runUntil(t *testing.T, app *exactly.App, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := app.Run(ctx)
	if ctx.Err() != nil {
		t.Fatalf("still running after %v (last error: %v)", d, err)
	}
	return err
}

// TestFatalErrorsFollowThePolicy: a punctuator that keeps failing used to
// make the worker rejoin every 500 ms forever. Now the instance stops
// (default), replaces the worker a bounded number of times, or shuts the
// whole application down, and Run returns why.
func TestFatalErrorsFollowThePolicy(t *testing.T) {
	t.Run("shutdown instance", func(t *testing.T) {
		brokers := newCluster(t, 2)
		var mu sync.Mutex
		var states []string
		cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
		cfg.StateListener = func(old, new exactly.State) {
			mu.Lock()
			defer mu.Unlock()
			states = append(states, new.String())
		}
		app, err := exactly.New(failingTickerApp(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = runUntil(t, app, 20*time.Second)
		var pe *exactly.PunctuatorError
		if !errors.As(err, &pe) || pe.Task.Partition != 0 {
			t.Fatalf("Run returned %v; want the punctuator's error", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if got := strings.Join(states, " "); !strings.HasPrefix(got, "rebalancing") || !strings.HasSuffix(got, "running error") || app.State() != exactly.StateError {
			t.Fatalf("states %q, now %v; want rebalancing … running error", got, app.State())
		}
	})
	t.Run("replace worker", func(t *testing.T) {
		brokers := newCluster(t, 2)
		reg := prometheus.NewRegistry()
		cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
		cfg.OnFatalError, cfg.MaxWorkerReplacements, cfg.Registerer = exactly.ReplaceWorker, 2, reg
		app, err := exactly.New(failingTickerApp(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = runUntil(t, app, 30*time.Second)
		var pe *exactly.PunctuatorError
		if !errors.As(err, &pe) || !strings.Contains(err.Error(), "after 2 replacements") {
			t.Fatalf("Run returned %v; want the punctuator's error after 2 replacements", err)
		}
		if n := metricSum(t, reg, "exactly_worker_replacements_total"); n != 2 {
			t.Fatalf("exactly_worker_replacements_total = %v, want 2", n)
		}
	})
	t.Run("shutdown application", func(t *testing.T) {
		brokers := newCluster(t, 2)
		errs := make(chan error, 2)
		for range 2 {
			cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
			cfg.OnFatalError = exactly.ShutdownApplication
			app, err := exactly.New(failingTickerApp(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			go func() { errs <- runUntil(t, app, 30*time.Second) }()
		}
		asked := 0
		for range 2 {
			err := <-errs
			var se *exactly.ApplicationShutdownError
			if !errors.As(err, &se) {
				t.Fatalf("Run returned %v; want an application shutdown", err)
			}
			if se.Cause != nil {
				asked++
			}
		}
		if asked == 0 {
			t.Fatal("no instance says it asked for the shutdown") // (both may: the task moves before the grant arrives)
		}
	})
}

// TestFullStateDiskStopsWithTheReason runs an instance whose state
// directory is on a file system with almost no space: it must stop with an
// error that says so, not hang in the store or panic in it.
func TestFullStateDiskStopsWithTheReason(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tiny tmpfs for the state directory")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s)", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	// Fill it up but for 200 KB.
	if err := os.WriteFile(filepath.Join(dir, "filler"), make([]byte, 64<<20-200<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	brokers := newCluster(t, 2)
	produceInputs(t, brokers, 0, 100, 5)
	app, err := exactly.New(countingApp(t, true), appConfig(brokers, dir, exactly.ExactlyOnceV2))
	if err != nil {
		t.Fatal(err)
	}
	err = runUntil(t, app, 30*time.Second)
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("Run returned %v; want an error saying no space left on device", err)
	}
	t.Log(err)
}

// TestStalledInstanceReportsItselfAndRecovers: the broker stops answering
// produce requests. Every commit then times out; nothing is lost, but
// nothing moves either, and that must not be silent: the instance reports
// itself unhealthy (and counts it) until it commits again.
func TestStalledInstanceReportsItselfAndRecovers(t *testing.T) {
	c, proxy := proxiedCluster(t, 2)
	var silent atomic.Bool
	proxy.Silence(kmsg.Produce, silent.Load)
	brokers := []string{proxy.Addr()}
	const keys = 7
	produceInputs(t, brokers, 0, 200, keys)
	reg := prometheus.NewRegistry()
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.Registerer, cfg.TransactionTimeout, cfg.StallTimeout = reg, 2*time.Second, 3*time.Second
	app, err := exactly.New(countingApp(t, true), cfg)
	if err != nil {
		t.Fatal(err)
	}
	go app.Run(context.Background())
	defer app.Close()
	readCommitted(t, brokers, 200, 30*time.Second)

	silent.Store(true)
	produceInputs(t, c.ListenAddrs(), 200, 400, keys) // around the proxy
	deadline := time.Now().Add(30 * time.Second)
	for app.Healthy() == nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if err := app.Healthy(); err == nil {
		t.Fatal("the instance never reported the stall")
	} else {
		t.Logf("while the broker is silent: %v", err)
	}
	if n := metricSum(t, reg, "exactly_stalled_workers"); n != 1 {
		t.Fatalf("exactly_stalled_workers = %v, want 1", n)
	}
	if n := countWithLabel(t, reg, "exactly_commit_failures_total", "stage", "produce"); n < 1 {
		t.Fatalf("exactly_commit_failures_total{stage=produce} = %v after commits timed out waiting for the broker", n)
	}
	if lag := metricSum(t, reg, "exactly_consumer_lag"); lag < 100 {
		t.Fatalf("exactly_consumer_lag = %v while 200 records wait uncommitted; it must count from the committed offset", lag)
	}

	silent.Store(false)
	out := readCommitted(t, c.ListenAddrs(), 400, 60*time.Second)
	checkExactlyOnce(t, out, 400, keys)
	for deadline := time.Now().Add(10 * time.Second); app.Healthy() != nil && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	if err := app.Healthy(); err != nil {
		t.Fatalf("still unhealthy after committing again: %v", err)
	}
}

// TestAtLeastOnceRevocationWithAFailedCommitLosesNothing: under
// at_least_once a member commits before it gives partitions away; when that
// commit fails (the broker stops answering produce requests), the work of
// the partitions it keeps must be redone, not skipped.
func TestAtLeastOnceRevocationWithAFailedCommitLosesNothing(t *testing.T) {
	c, proxy := proxiedCluster(t, 4)
	var silent atomic.Bool
	proxy.Silence(kmsg.Produce, silent.Load)
	const keys = 11
	cfg := appConfig([]string{proxy.Addr()}, t.TempDir(), exactly.AtLeastOnce)
	cfg.CommitInterval, cfg.TransactionTimeout = time.Hour, 2*time.Second // commits only on revocation and stop
	stopA := startApp(t, countingApp(t, true), cfg)
	defer stopA()
	time.Sleep(time.Second)
	silent.Store(true) // A's outputs never reach the broker
	produceInputs(t, c.ListenAddrs(), 0, 1000, keys)
	time.Sleep(time.Second) // A has processed everything, committed nothing
	cfgB := appConfig(c.ListenAddrs(), t.TempDir(), exactly.AtLeastOnce)
	stopB := startApp(t, countingApp(t, true), cfgB) // A gives partitions away; its commit times out
	time.Sleep(4 * time.Second)
	silent.Store(false)
	produceInputs(t, c.ListenAddrs(), 1000, 1000+keys, keys) // one more per key
	seen := map[string]bool{}
	final := map[string]int64{}
	for _, o := range readCommitted(t, c.ListenAddrs(), 1000+keys, 60*time.Second) {
		seen[o.ID] = true
		var i int
		fmt.Sscanf(o.ID, "r%d", &i)
		if i >= 1000 {
			final[o.ID] = o.Count
		}
	}
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 + keys {
		if !seen[fmt.Sprint("r", i)] {
			t.Fatalf("input r%d never reached the output (%d of %d did)", i, len(seen), 1000+keys)
		}
	}
	// The last input of each key says whether every earlier input of the
	// key was counted: input skipped after the failed commit shows as a
	// smaller count.
	for i := 1000; i < 1000+keys; i++ {
		if want := int64((i)/keys + 1); final[fmt.Sprint("r", i)] != want {
			t.Fatalf("r%d counted as %d of its key, want %d: inputs before it were skipped", i, final[fmt.Sprint("r", i)], want)
		}
	}
}

// TestInstanceStartedBeforeItsBrokerWaitsForIt: an instance started while
// the cluster is not up yet waits for it instead of exiting.
func TestInstanceStartedBeforeItsBrokerWaitsForIt(t *testing.T) {
	addr, err := fleet.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	cfg := appConfig([]string{addr}, t.TempDir(), exactly.ExactlyOnceV2)
	stop := startApp(t, countingApp(t, true), cfg)
	defer stop()
	time.Sleep(1500 * time.Millisecond)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(p), kfake.SeedTopics(2, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const keys = 5
	produceInputs(t, []string{addr}, 0, 100, keys)
	out := readCommitted(t, []string{addr}, 100, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkExactlyOnce(t, out, 100, keys)
}

// TestStaticMemberLeavingOnCloseHandsItsTasksOver closes a static member
// that has LeaveGroupOnClose set: the other instance must hold every task
// long before the session timeout would have expired the member (franz-go
// alone keeps a static member in the group when it leaves).
func TestStaticMemberLeavingOnCloseHandsItsTasksOver(t *testing.T) {
	brokers := newCluster(t, 4)
	top := countingApp(t, false)
	apps := make([]*exactly.App, 2)
	done := make([]chan error, 2)
	for i := range apps {
		cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
		cfg.InstanceID = fmt.Sprint("static-", i)
		cfg.SessionTimeout = time.Minute
		cfg.RebalanceTimeout = 10 * time.Second
		cfg.LeaveGroupOnClose = true
		app, err := exactly.New(top, cfg)
		if err != nil {
			t.Fatal(err)
		}
		apps[i], done[i] = app, make(chan error, 1)
		go func() { done[i] <- app.Run(context.Background()) }()
		defer app.Close()
	}
	holds := func(app *exactly.App) int {
		n := 0
		for _, task := range app.LocalTasks() {
			if !task.Restoring {
				n++
			}
		}
		return n
	}
	waitFor := func(what string, limit time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v", what, limit)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("the two instances share the 4 tasks", 30*time.Second, func() bool {
		return holds(apps[0]) > 0 && holds(apps[1]) > 0 && holds(apps[0])+holds(apps[1]) == 4
	})
	if err := apps[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done[0]; err != nil {
		t.Fatal(err)
	}
	// Well inside the one-minute session timeout.
	waitFor("the remaining instance holds all 4 tasks", 20*time.Second, func() bool { return holds(apps[1]) == 4 })
}

// TestIdleLagOnATransactionalInputReadsZero: an input written in
// transactions ends each one with a commit marker, which takes an offset.
// Once everything is processed and committed the lag must read 0, not the
// markers' count.
func TestIdleLagOnATransactionalInputReadsZero(t *testing.T) {
	brokers := newCluster(t, 3)
	const keys, n = 7, 90
	producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("upstream"))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for txn := range 3 { // three transactions: three markers per partition
		if err := producer.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := txn * n / 3; i < (txn+1)*n/3; i++ {
			producer.Produce(ctx, &kgo.Record{Topic: "input", Key: []byte(fmt.Sprint("k", i%keys)), Value: []byte(fmt.Sprint("r", i)), Timestamp: time.UnixMilli(int64(i))}, nil)
		}
		if err := producer.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := producer.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.Registerer = reg
	app, err := exactly.New(countingApp(t, false), cfg)
	if err != nil {
		t.Fatal(err)
	}
	go app.Run(context.Background())
	defer app.Close()
	checkExactlyOnce(t, readCommitted(t, brokers, n, 30*time.Second), n, keys)
	var lag float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if lag = metricSum(t, reg, "exactly_consumer_lag"); lag == 0 {
			return
		}
	}
	t.Fatalf("exactly_consumer_lag = %v with every record processed and committed; the commit markers are not lag", lag)
}
