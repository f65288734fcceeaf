package exactly_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestJoinPartitionsAreCoLocatedAcrossInstances runs a stream–table join in
// three instances: every task must get partition p of both topics, or
// orders would meet an empty table and vanish from the inner join.
func TestJoinPartitionsAreCoLocatedAcrossInstances(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, "customers", "orders", "enriched"),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	customers := dsl.Table(sb, "customers", serde.String, serde.String, "customers-store", dsl.Materialized{})
	dsl.Join(dsl.Stream(sb, "orders", serde.String, serde.String), customers,
		func(_ string, order, name string) string { return order + "@" + name }, serde.String).To("enriched")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
		cfg.ApplicationID = "join"
		stop := startApp(t, top, cfg)
		defer stop()
	}
	cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...))
	defer cl.Close()
	const keys = 60
	var recs []*kgo.Record
	for k := range keys {
		recs = append(recs, &kgo.Record{Topic: "customers", Key: []byte(fmt.Sprint("c", k)), Value: []byte(fmt.Sprint("name", k))})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// Let the tables fill before any order arrives.
	adm := kadm.NewClient(cl)
	waitOffsets := func(want int64) {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			offs, err := adm.FetchOffsets(context.Background(), "join")
			var sum int64
			if err == nil {
				offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
			}
			if sum >= want {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("the instances did not consume %d records", want)
	}
	waitOffsets(keys)
	recs = recs[:0]
	for k := range keys {
		recs = append(recs, &kgo.Record{Topic: "orders", Key: []byte(fmt.Sprint("c", k)), Value: []byte(fmt.Sprint("o", k))})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitOffsets(2 * keys)
	out, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("enriched"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer out.Close()
	got := map[string]string{}
	for deadline := time.Now().Add(10 * time.Second); len(got) < keys && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		out.PollFetches(ctx).EachRecord(func(r *kgo.Record) { got[string(r.Key)] = string(r.Value) })
		cancel()
	}
	for k := range keys {
		key := fmt.Sprint("c", k)
		if want := fmt.Sprintf("o%d@name%d", k, k); got[key] != want {
			t.Fatalf("%s joined to %q, want %q (%d of %d joined): a task lacked its table partition", key, got[key], want, len(got), keys)
		}
	}
}
