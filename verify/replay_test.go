package verify_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/counting"
	"github.com/exactly-go/exactly/examples/exposure"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/verify"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testTimeout bounds every blocking step of these tests.
const testTimeout = 60 * time.Second

func deadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func newReplayCluster(t *testing.T, partitions int32, topics ...string) []string {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond), kfake.SeedTopics(partitions, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func client(t *testing.T, brokers []string, opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produce(t *testing.T, cl *kgo.Client, recs ...*kgo.Record) {
	t.Helper()
	if err := cl.ProduceSync(deadline(t), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// startApp runs top with the real runtime under exactly_once_v2 and returns
// a function that stops it gracefully.
func startApp(t *testing.T, top *exactly.Topology, brokers []string, applicationID string) (stop func()) {
	app, err := exactly.New(top, exactly.Config{
		Brokers: brokers, ApplicationID: applicationID, Guarantee: exactly.ExactlyOnceV2,
		CommitInterval: 50 * time.Millisecond, StateDir: t.TempDir(),
		SessionTimeout: 3 * time.Second, RebalanceTimeout: 5 * time.Second, CreateTopics: true,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() { defer wg.Done(); runErr = app.Run(context.Background()) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			app.Close()
			wg.Wait()
			if runErr != nil {
				t.Errorf("%s: %v", applicationID, runErr)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitConsumed waits until the group has committed offsets covering want
// records of topic (produced without transactions, so offsets count
// records), then until its committed offsets stop moving, so that whatever
// the input led to downstream is committed too.
func waitConsumed(t *testing.T, brokers []string, group, topic string, want int64) {
	t.Helper()
	adm := kadm.NewClient(client(t, brokers))
	ctx := deadline(t)
	var last string
	stableSince := time.Now()
	for {
		offs, err := adm.FetchOffsets(ctx, group)
		if ctx.Err() != nil {
			t.Fatalf("group %s did not consume %d records of %s in time (offsets %s)", group, want, topic, last)
		}
		var sum int64
		var state []string
		if err == nil {
			offs.Each(func(o kadm.OffsetResponse) {
				state = append(state, fmt.Sprintf("%s/%d=%d", o.Topic, o.Partition, o.At))
				if o.Topic == topic {
					sum += o.At
				}
			})
		}
		slices.Sort(state)
		now := strings.Join(state, " ")
		if now != last {
			last, stableSince = now, time.Now()
		}
		if sum >= want && time.Since(stableSince) > time.Second {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func replay(t *testing.T, top *exactly.Topology, brokers []string, applicationID string, inputTopics ...string) *verify.ReplayReport {
	t.Helper()
	rep, err := verify.Replay(deadline(t), top, verify.ReplayConfig{
		Brokers: brokers, ApplicationID: applicationID, Timeout: 30 * time.Second,
		WaitForTransactions: 300 * time.Millisecond, InputTopics: inputTopics,
	})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// replayHonestRun replays a run nobody tampered with and fails the test
// unless every check holds.
func replayHonestRun(t *testing.T, top *exactly.Topology, brokers []string, applicationID string) *verify.ReplayReport {
	t.Helper()
	rep := replay(t, top, brokers, applicationID)
	t.Logf("honest run:\n%s", rep)
	if !rep.OK() {
		t.Fatalf("an honest run failed the replay:\n%s", rep)
	}
	return rep
}

// differences returns the report's differences of kind on topic/partition
// for key.
func differences(rep *verify.ReplayReport, kind verify.DifferenceKind, topic string, partition int32, key []byte) []verify.Difference {
	var out []verify.Difference
	for _, d := range rep.Differences {
		if d.Kind == kind && d.Topic == topic && d.Partition == partition && string(d.Key) == string(key) {
			out = append(out, d)
		}
	}
	return out
}

func countKind(rep *verify.ReplayReport, kind verify.DifferenceKind) int {
	n := 0
	for _, d := range rep.Differences {
		if d.Kind == kind {
			n++
		}
	}
	return n
}

// readOutput reads the committed records of topic, per partition.
func readOutput(t *testing.T, brokers []string, topic string) map[int32][]*kgo.Record {
	t.Helper()
	adm := kadm.NewClient(client(t, brokers))
	ends, err := adm.ListEndOffsets(deadline(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset })
	cl := client(t, brokers, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	out := map[int32][]*kgo.Record{}
	ctx := deadline(t)
	for done := 0; done < len(want); {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("reading", topic, ctx.Err())
		}
		done = 0
		fs.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				out[r.Partition] = append(out[r.Partition], r)
			}
			if r.Offset+1 == want[r.Partition] {
				want[r.Partition] = -1
			}
		})
		for _, w := range want {
			if w <= 0 {
				done++
			}
		}
	}
	return out
}

// TestReplayPassesAnHonestRunAndNamesEachTamperedRecord runs the counting
// topology on a real broker through a rebalance and a restart, checks that
// the committed output equals the replay, then tampers with the committed
// output in each way the verifier exists to catch and checks that each is
// reported naming the record: a duplicate, a dropped record, a changed
// value, a foreign committed record (what aborted data made visible looks
// like to read_committed readers) and a transaction left open.
func TestReplayPassesAnHonestRunAndNamesEachTamperedRecord(t *testing.T) {
	brokers := newReplayCluster(t, 3, "input", "output")
	top, err := counting.Topology("input", "output", true)
	if err != nil {
		t.Fatal(err)
	}
	const app = "counting"
	in := client(t, brokers)
	// Keys seen once come first, fully committed before the rest, so that
	// every output partition starts with a key that has a single record.
	var unique []*kgo.Record
	for i := range 30 {
		unique = append(unique, &kgo.Record{Topic: "input", Key: fmt.Appendf(nil, "u%d", i), Value: fmt.Appendf(nil, "u%d", i), Timestamp: time.UnixMilli(int64(i))})
	}
	produce(t, in, unique...)
	stopA := startApp(t, top, brokers, app)
	waitConsumed(t, brokers, app, "input", 30)
	batch := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, &kgo.Record{Topic: "input", Key: fmt.Appendf(nil, "k%d", i%11), Value: fmt.Appendf(nil, "r%d", i), Timestamp: time.UnixMilli(int64(1000 + i))})
		}
		produce(t, in, recs...)
	}
	batch(0, 300)
	stopB := startApp(t, top, brokers, app) // a rebalance mid-stream
	batch(300, 600)
	time.Sleep(200 * time.Millisecond)
	stopA()
	batch(600, 900)
	stopA = startApp(t, top, brokers, app) // A again, on a fresh state directory: restores from the changelog
	waitConsumed(t, brokers, app, "input", 930)
	stopA()
	stopB()
	rep := replayHonestRun(t, top, brokers, app)
	if len(rep.Subtopologies) != 1 || rep.Subtopologies[0].Records != 930 || rep.Subtopologies[0].Tasks != 3 {
		t.Fatalf("replayed %+v, want 930 records in 3 tasks", rep.Subtopologies)
	}
	compared := map[string]verify.TopicComparison{}
	for _, tc := range rep.Topics {
		compared[tc.Topic] = tc
	}
	if tc := compared["output"]; tc.Committed != 930 || tc.Replayed != 930 {
		t.Fatalf("output compared %+v, want 930 records each side", tc)
	}
	if tc := compared["counting-counts-changelog"]; tc.Committed != 41 || tc.Skipped != "" {
		t.Fatalf("changelog compared %+v, want 41 keys", tc)
	}

	out := readOutput(t, brokers, "output")
	for p := int32(0); p < 3; p++ {
		if len(out[p]) == 0 || !strings.HasPrefix(string(out[p][0].Key), "u") {
			t.Fatalf("output/%d does not start with a single-record key: %v", p, out[p])
		}
	}
	plain := client(t, brokers, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	adm := kadm.NewClient(plain)
	copyOf := func(r *kgo.Record, value []byte) *kgo.Record {
		return &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: value, Timestamp: r.Timestamp, Headers: r.Headers}
	}
	dropFirst := func(p int32) {
		offs := kadm.Offsets{}
		offs.Add(kadm.Offset{Topic: "output", Partition: p, At: out[p][0].Offset + 1})
		resp, err := adm.DeleteRecords(deadline(t), offs)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	t.Run("duplicated record", func(t *testing.T) {
		orig := out[0][5]
		produce(t, plain, copyOf(orig, orig.Value))
		rep := replay(t, top, brokers, app)
		dups := differences(rep, verify.Duplicate, "output", 0, orig.Key)
		if rep.OK() || len(dups) != 1 || countKind(rep, verify.Duplicate) != 1 || string(dups[0].Committed.Value) != string(orig.Value) {
			t.Fatalf("the duplicate of output/0@%d (key %s) was not reported as such:\n%s", orig.Offset, orig.Key, rep)
		}
		t.Logf("%s", dups[0])
	})

	t.Run("dropped record", func(t *testing.T) {
		orig := out[1][0]
		dropFirst(1)
		rep := replay(t, top, brokers, app)
		missing := differences(rep, verify.Missing, "output", 1, orig.Key)
		if rep.OK() || len(missing) != 1 || countKind(rep, verify.Missing) != 1 || string(missing[0].Replayed.Value) != string(orig.Value) {
			t.Fatalf("the dropped output/1@%d (key %s) was not reported missing:\n%s", orig.Offset, orig.Key, rep)
		}
		t.Logf("%s", missing[0])
	})

	t.Run("changed value", func(t *testing.T) {
		orig := out[2][0]
		dropFirst(2)
		forged := []byte(strings.Replace(string(orig.Value), `"count":1`, `"count":7`, 1))
		produce(t, plain, copyOf(orig, forged))
		rep := replay(t, top, brokers, app)
		diff := differences(rep, verify.Different, "output", 2, orig.Key)
		if rep.OK() || len(diff) != 1 || countKind(rep, verify.Different) != 1 ||
			string(diff[0].Committed.Value) != string(forged) || string(diff[0].Replayed.Value) != string(orig.Value) {
			t.Fatalf("the changed output/2 record (key %s) was not reported different:\n%s", orig.Key, rep)
		}
		t.Logf("%s", diff[0])
	})

	t.Run("aborted record made visible", func(t *testing.T) {
		forged := &kgo.Record{Topic: "output", Partition: 1, Key: []byte("k3"), Value: []byte(`{"id":"forged","count":1}`), Timestamp: time.UnixMilli(5000)}
		tx := client(t, brokers, kgo.TransactionalID("foreign"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(time.Minute))
		write := func(commit kgo.TransactionEndTry) {
			if err := tx.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			produce(t, tx, forged)
			if err := tx.EndTransaction(deadline(t), commit); err != nil {
				t.Fatal(err)
			}
		}
		hidden := replay(t, top, brokers, app).AbortedHidden // the run's own aborted transactions
		write(kgo.TryAbort)
		rep := replay(t, top, brokers, app)
		if len(differences(rep, verify.Unexpected, "output", 1, forged.Key)) != 0 || rep.AbortedHidden != hidden+1 {
			t.Fatalf("an aborted record must stay hidden, and be counted as such:\n%s", rep)
		}
		write(kgo.TryCommit)
		rep = replay(t, top, brokers, app)
		extra := differences(rep, verify.Unexpected, "output", 1, forged.Key)
		if rep.OK() || len(extra) != 1 || countKind(rep, verify.Unexpected) != 1 || string(extra[0].Committed.Value) != string(forged.Value) {
			t.Fatalf("the foreign committed record was not reported unexpected:\n%s", rep)
		}
		t.Logf("%s", extra[0])
	})

	t.Run("open transaction", func(t *testing.T) {
		tx := client(t, brokers, kgo.TransactionalID("hanging"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(time.Minute))
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		produce(t, tx, &kgo.Record{Topic: "output", Partition: 0, Key: []byte("k1"), Value: []byte("never committed")})
		t.Cleanup(func() { tx.EndTransaction(context.Background(), kgo.TryAbort) })
		start := time.Now()
		rep := replay(t, top, brokers, app)
		if rep.OK() || len(rep.OpenTransactions) != 1 || rep.OpenTransactions[0].Topic != "output" || rep.OpenTransactions[0].Partition != 0 {
			t.Fatalf("the transaction left open on output/0 was not reported:\n%s", rep)
		}
		if took := time.Since(start); took > 15*time.Second {
			t.Fatalf("the verifier took %v with a transaction open", took)
		}
		if n := countKind(rep, verify.Unexpected); n != 1 {
			t.Fatalf("the open transaction's record was read (%d unexpected records):\n%s", n, rep)
		}
		t.Logf("%+v", rep.OpenTransactions[0])
	})
}

// TestReplayFollowsARepartitionTopicSubtopologyBySubtopology runs the
// customer-exposure example (orders re-keyed by customer through a
// repartition topic) in two instances, one restarted: both sub-topologies
// replay to the committed output. A duplicate on the repartition topic is
// named there, and the downstream sub-topology, fed the committed
// repartition records up to its committed offsets, still matches.
func TestReplayFollowsARepartitionTopicSubtopologyBySubtopology(t *testing.T) {
	brokers := newReplayCluster(t, 4, exposure.OrdersTopic, exposure.DecisionsTopic)
	const app, threshold = "risk", 20_000
	top, err := exposure.CustomerExposure(app, threshold)
	if err != nil {
		t.Fatal(err)
	}
	in := client(t, brokers)
	rng := rand.New(rand.NewPCG(12, 1))
	produceOrders := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			v, _ := serde.JSON[exposure.OrderSubmitted]().Serialize(exposure.OrderSubmitted{
				OrderID: fmt.Sprint("o", i), CustomerID: fmt.Sprint("c", rng.IntN(25)), AmountCents: rng.Int64N(1000)})
			recs = append(recs, &kgo.Record{Topic: exposure.OrdersTopic, Key: fmt.Appendf(nil, "o%d", i), Value: v, Timestamp: time.UnixMilli(int64(i))})
		}
		produce(t, in, recs...)
	}
	stopA := startApp(t, top, brokers, app)
	stopB := startApp(t, top, brokers, app)
	produceOrders(0, 600)
	time.Sleep(200 * time.Millisecond)
	stopA()
	produceOrders(600, 1200)
	stopA = startApp(t, top, brokers, app)
	waitConsumed(t, brokers, app, exposure.OrdersTopic, 1200)
	stopA()
	stopB()
	rep := replayHonestRun(t, top, brokers, app)
	if len(rep.Subtopologies) != 2 || rep.Subtopologies[0].Records != 1200 || rep.Subtopologies[1].Records != 1200 {
		t.Fatalf("replayed %+v, want 1200 records through each sub-topology", rep.Subtopologies)
	}
	repartition, decisions := "", 0
	for _, tc := range rep.Topics {
		if tc.Role == "repartition" {
			repartition = tc.Topic
		}
		if tc.Topic == exposure.DecisionsTopic {
			decisions = tc.Committed
		}
	}
	if decisions == 0 || repartition == "" {
		t.Fatalf("no decision committed or no repartition topic compared: the test proves little\n%s", rep)
	}

	only := replay(t, top, brokers, app, repartition)
	skipped := map[string]string{}
	for _, tc := range only.Topics {
		skipped[tc.Topic] = tc.Skipped
	}
	if !only.OK() || only.Subtopologies[0].Skipped == "" || only.Subtopologies[1].Records != 1200 ||
		skipped[repartition] == "" || skipped[exposure.DecisionsTopic] != "" {
		t.Fatalf("InputTopics(%s) must replay the downstream sub-topology alone and compare only what it writes:\n%s", repartition, only)
	}
	if _, err := verify.Replay(deadline(t), top, verify.ReplayConfig{Brokers: brokers, ApplicationID: app, InputTopics: []string{"nonsense"}}); !errors.Is(err, verify.ErrReplayConfig) {
		t.Fatalf("InputTopics(nonsense): %v, want ErrReplayConfig", err)
	}

	out := readOutput(t, brokers, repartition)
	orig := out[2][3]
	plain := client(t, brokers, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(t, plain, &kgo.Record{Topic: orig.Topic, Partition: orig.Partition, Key: orig.Key, Value: orig.Value, Timestamp: orig.Timestamp, Headers: orig.Headers})
	rep = replay(t, top, brokers, app)
	dups := differences(rep, verify.Duplicate, repartition, 2, orig.Key)
	if rep.OK() || len(dups) != 1 || len(rep.Differences) != 1 || rep.Subtopologies[1].Unconsumed != 1 {
		t.Fatalf("the duplicate on %s/2 (key %s) was not reported alone:\n%s", repartition, orig.Key, rep)
	}
	t.Logf("%s", dups[0])
}

// ticker forwards a record on every wall-clock punctuation: its output
// depends on when the clock ticked.
type ticker struct{}

func (ticker) Init(ctx exactly.ProcessorContext[string, string]) error {
	_, err := ctx.Schedule(20*time.Millisecond, exactly.WallClockTime, func(ts time.Time) error {
		ctx.Forward(exactly.Record[string, string]{Key: "tick", Value: fmt.Sprint(ts.UnixMilli())})
		return nil
	})
	return err
}
func (ticker) Process(exactly.Record[string, string]) error { return nil }
func (ticker) Close() error                                 { return nil }

// TestReplayReportsAWallClockTopologyAsNotReplayable runs a topology whose
// output comes from a wall-clock punctuator: the verifier says it cannot be
// replayed instead of reporting its output as unexpected.
func TestReplayReportsAWallClockTopologyAsNotReplayable(t *testing.T) {
	brokers := newReplayCluster(t, 2, "in", "ticks")
	b := exactly.NewBuilder()
	exactly.AddSource(b, "src", exactly.Source[string, string]{Topics: []string{"in"}, Keys: serde.String, Values: serde.String})
	exactly.AddProcessor(b, "clock", func() exactly.Processor[string, string, string, string] { return ticker{} }, "src")
	exactly.AddSink(b, "out", exactly.Sink[string, string]{Topic: "ticks", Keys: serde.String, Values: serde.String}, "clock")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	produce(t, client(t, brokers), &kgo.Record{Topic: "in", Key: []byte("k"), Value: []byte("v")})
	stop := startApp(t, top, brokers, "clock")
	waitConsumed(t, brokers, "clock", "in", 1)
	stop()
	rep := replay(t, top, brokers, "clock")
	if rep.OK() || rep.Replayable() || len(rep.Differences) != 0 || !strings.Contains(rep.Subtopologies[0].NotReplayable, "clock") {
		t.Fatalf("a wall-clock topology was not reported as not replayable:\n%s", rep)
	}
	t.Logf("\n%s", rep)
}

// TestReplayOfWindowedCountsWithGraceMatchesAcrossRestarts runs the
// suspicious-order counts (5-minute windows, 2 minutes of grace, one final
// count per window emitted when stream time closes it) over late and
// out-of-order orders, with instances stopped and started mid-stream: the
// final counts, emitted on stream time restored from the committed
// offsets' metadata after each restart, equal the replay's.
func TestReplayOfWindowedCountsWithGraceMatchesAcrossRestarts(t *testing.T) {
	brokers := newReplayCluster(t, 3, exposure.OrdersTopic, exposure.SuspiciousTopic)
	const app = "suspicious"
	top, err := exposure.SuspiciousOrderCounts(app, nil)
	if err != nil {
		t.Fatal(err)
	}
	in := client(t, brokers)
	rng := rand.New(rand.NewPCG(3, 9))
	produceOrders := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			// About 20 s of event time an order, up to 4 minutes late.
			at := time.UnixMilli(1_700_000_000_000 + int64(i)*20_000 - rng.Int64N(240_000))
			v, _ := serde.JSON[exposure.OrderSubmitted]().Serialize(exposure.OrderSubmitted{
				OrderID: fmt.Sprint("o", i), CustomerID: fmt.Sprint("c", rng.IntN(7)), AmountCents: 100})
			recs = append(recs, &kgo.Record{Topic: exposure.OrdersTopic, Key: fmt.Appendf(nil, "o%d", i), Value: v, Timestamp: at})
		}
		produce(t, in, recs...)
	}
	stopA := startApp(t, top, brokers, app)
	produceOrders(0, 400)
	time.Sleep(300 * time.Millisecond)
	stopB := startApp(t, top, brokers, app)
	produceOrders(400, 800)
	time.Sleep(300 * time.Millisecond)
	stopA()
	produceOrders(800, 1200)
	waitConsumed(t, brokers, app, exposure.OrdersTopic, 1200)
	stopB()
	rep := replayHonestRun(t, top, brokers, app)
	for _, tc := range rep.Topics {
		if tc.Topic == exposure.SuspiciousTopic && tc.Committed < 50 {
			t.Fatalf("only %d window counts committed: the test proves little", tc.Committed)
		}
	}
}
