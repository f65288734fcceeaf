package verify_test

import (
	"context"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/verify"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// runOrders runs the orders application over a generated stream until its
// group has consumed all input, and returns the brokers.
func runOrders(t *testing.T) []string {
	const partitions = 3
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond),
		kfake.SeedTopics(partitions, orders.DefaultInputTopic, orders.DefaultOutputTopic, orders.DefaultDeadLetterTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	recs := orders.Generate(orders.DefaultGenerateOptions(7, 150, partitions))
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, r := range recs {
		cl.Produce(context.Background(), &kgo.Record{Topic: orders.DefaultInputTopic, Partition: r.Partition, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}, nil)
	}
	if err := cl.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	top, err := orders.Topology(orders.Options{})
	if err != nil {
		t.Fatal(err)
	}
	app, err := exactly.New(top, exactly.Config{
		Brokers: brokers, ApplicationID: "orders", StateDir: t.TempDir(),
		CommitInterval: 50 * time.Millisecond, SessionTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Run(context.Background()) }()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		offs, err := adm.FetchOffsets(context.Background(), "orders")
		var sum int64
		if err == nil {
			offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
		}
		if sum >= int64(len(recs)) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	app.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return brokers
}

func audit(t *testing.T, brokers []string) (*verify.Report, map[string]bool) {
	t.Helper()
	rep, err := verify.Orders(context.Background(), verify.Config{Brokers: brokers, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	failed := map[string]bool{}
	for _, c := range rep.Checks {
		if !c.OK {
			failed[c.Name] = true
		}
	}
	return rep, failed
}

const (
	checkOpen       = "no transaction left open"
	checkDuplicates = "no duplicate (order, event) in committed output"
	checkUpdates    = "every update in order and equal to the recomputation (per-key order, pure function of the input)"
	checkFinal      = "nothing lost: final projections equal the recomputation"
)

// firstOutput returns the first committed projection record.
func firstOutput(t *testing.T, brokers []string) *kgo.Record {
	cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(orders.DefaultOutputTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	defer cl.Close()
	for {
		var first *kgo.Record
		cl.PollFetches(context.Background()).EachRecord(func(r *kgo.Record) {
			if first == nil {
				first = r
			}
		})
		if first != nil {
			return first
		}
	}
}

func transactional(t *testing.T, brokers []string, id string) *kgo.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(id), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.TransactionTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	return cl
}

// TestOrdersAuditPassesOnAnHonestRunAndCatchesTampering audits an honest run,
// then tampers with the committed topics in the ways the verifier exists to
// catch: an aborted record (hidden, so still correct), an open transaction,
// a duplicated projection update and missing orders.
func TestOrdersAuditPassesOnAnHonestRunAndCatchesTampering(t *testing.T) {
	brokers := runOrders(t)
	rep, failed := audit(t, brokers)
	if !rep.OK() {
		t.Fatalf("honest run failed the audit:\n%s", rep)
	}
	if rep.Outputs == 0 || rep.DeadLetters == 0 {
		t.Fatalf("audit saw nothing to check:\n%s", rep)
	}
	t.Logf("\n%s", rep)
	top, err := orders.Topology(orders.Options{})
	if err != nil {
		t.Fatal(err)
	}
	replayed, err := verify.Replay(context.Background(), top, verify.ReplayConfig{Brokers: brokers, ApplicationID: "orders", Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !replayed.OK() {
		t.Fatalf("honest run failed the replay:\n%s", replayed)
	}
	t.Logf("\n%s", replayed)
	first := firstOutput(t, brokers)
	bogus := &kgo.Record{Topic: first.Topic, Partition: first.Partition, Key: first.Key, Value: []byte(`{"orderId":"forged"}`), Headers: first.Headers}

	t.Run("aborted record stays hidden", func(t *testing.T) {
		cl := transactional(t, brokers, "tamper-abort")
		defer cl.Close()
		if err := cl.ProduceSync(context.Background(), bogus).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := cl.EndTransaction(context.Background(), kgo.TryAbort); err != nil {
			t.Fatal(err)
		}
		rep, _ := audit(t, brokers)
		if !rep.OK() || rep.AbortedHidden == 0 {
			t.Fatalf("an aborted record must be invisible and counted as hidden:\n%s", rep)
		}
	})

	t.Run("open transaction", func(t *testing.T) {
		cl := transactional(t, brokers, "tamper-open")
		defer cl.Close()
		if err := cl.ProduceSync(context.Background(), bogus).FirstErr(); err != nil {
			t.Fatal(err)
		}
		rep, failed := audit(t, brokers)
		if rep.OK() || !failed[checkOpen] {
			t.Fatalf("a record of a transaction left open passed the audit:\n%s", rep)
		}
		cl.EndTransaction(context.Background(), kgo.TryAbort)
	})

	t.Run("duplicated update", func(t *testing.T) {
		dup := &kgo.Record{Topic: first.Topic, Partition: first.Partition, Key: first.Key, Value: first.Value, Headers: first.Headers}
		prod, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		defer prod.Close()
		if err := prod.ProduceSync(context.Background(), dup).FirstErr(); err != nil {
			t.Fatal(err)
		}
		rep, failed := audit(t, brokers)
		if rep.OK() || !failed[checkDuplicates] || !failed[checkUpdates] {
			t.Fatalf("a duplicated projection update passed the audit:\n%s", rep)
		}
	})

	t.Run("missing orders", func(t *testing.T) {
		cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...))
		defer cl.Close()
		adm := kadm.NewClient(cl)
		ends, err := adm.ListEndOffsets(context.Background(), orders.DefaultOutputTopic)
		if err != nil {
			t.Fatal(err)
		}
		end, _ := ends.Lookup(orders.DefaultOutputTopic, 1)
		offsets := kadm.Offsets{}
		offsets.Add(kadm.Offset{Topic: orders.DefaultOutputTopic, Partition: 1, At: end.Offset})
		if _, err := adm.DeleteRecords(context.Background(), offsets); err != nil {
			t.Fatal(err)
		}
		rep, failed := audit(t, brokers)
		if rep.OK() || !failed[checkFinal] {
			t.Fatalf("a partition of lost projections passed the audit:\n%s", rep)
		}
		t.Logf("\n%s", rep)
	})
	_ = failed
}
