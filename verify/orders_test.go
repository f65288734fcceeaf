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

func TestOrdersAuditPassesOnAnHonestRunAndCatchesTampering(t *testing.T) {
	brokers := runOrders(t)
	rep, err := verify.Orders(context.Background(), verify.Config{Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("honest run failed the audit:\n%s", rep)
	}
	if rep.Outputs == 0 || rep.DeadLetters == 0 {
		t.Fatalf("audit saw nothing to check:\n%s", rep)
	}
	t.Logf("\n%s", rep)

	// Tamper: commit a copy of a projection record (a duplicate) outside
	// any transaction, as a buggy producer would.
	cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(orders.DefaultOutputTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	defer cl.Close()
	var first *kgo.Record
	for first == nil {
		cl.PollFetches(context.Background()).EachRecord(func(r *kgo.Record) {
			if first == nil {
				first = r
			}
		})
	}
	dup := &kgo.Record{Topic: first.Topic, Partition: first.Partition, Key: first.Key, Value: first.Value, Headers: first.Headers}
	prod, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer prod.Close()
	if err := prod.ProduceSync(context.Background(), dup).FirstErr(); err != nil {
		t.Fatal(err)
	}
	rep, err = verify.Orders(context.Background(), verify.Config{Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		t.Fatalf("audit passed a duplicated projection record:\n%s", rep)
	}
	failed := map[string]bool{}
	for _, c := range rep.Checks {
		failed[c.Name] = !c.OK
	}
	if !failed["no duplicate (order, event) in committed output"] {
		t.Fatalf("duplicate not reported by its check:\n%s", rep)
	}
}
