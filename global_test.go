package exactly_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestGlobalTableOnKafka runs a stream–global-table join in two
// instances: each holds every partition of the products topic, read to its
// end (committed records only) before the first item is processed, and
// follows updates while running, with no changelog of its own.
func TestGlobalTableOnKafka(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "products"), kfake.SeedTopics(2, "items", "named"),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	ctx := context.Background()
	cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...))
	defer cl.Close()
	const products = 30
	var recs []*kgo.Record
	for p := range products {
		recs = append(recs, &kgo.Record{Topic: "products", Key: []byte(fmt.Sprint("p", p)), Value: []byte(fmt.Sprint("name", p))})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	// An aborted rename must never be seen.
	txn, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("renamer"))
	defer txn.Close()
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Topic: "products", Key: []byte("p1"), Value: []byte("aborted")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	// Items are there before the application starts: only a table read
	// to its end first joins them all.
	recs = recs[:0]
	for p := range products {
		recs = append(recs, &kgo.Record{Topic: "items", Key: []byte(fmt.Sprint("i", p)), Value: []byte(fmt.Sprint("p", p))})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	sb := dsl.NewStreamsBuilder(dsl.Options{})
	catalogue := dsl.GlobalTable(sb, "products", serde.String, serde.String, "products")
	dsl.JoinGlobal(dsl.Stream(sb, "items", serde.String, serde.String), catalogue,
		func(_ string, product string) string { return product },
		func(_ string, product, name string) string { return product + "=" + name }, serde.String).To("named")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.ApplicationID = "catalogue"
	app, err := exactly.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go app.Run(ctx)
	defer app.Close()
	cfg.StateDir = t.TempDir()
	stop := startApp(t, top, cfg)
	defer stop()

	out, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("named"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer out.Close()
	got := map[string]string{}
	read := func(want int) {
		for deadline := time.Now().Add(30 * time.Second); len(got) < want && time.Now().Before(deadline); {
			pollCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			out.PollFetches(pollCtx).EachRecord(func(r *kgo.Record) { got[string(r.Key)] = string(r.Value) })
			cancel()
		}
	}
	read(products)
	for p := range products {
		key := fmt.Sprint("i", p)
		if want := fmt.Sprintf("p%d=name%d", p, p); got[key] != want {
			t.Fatalf("%s joined to %q, want %q (%d of %d joined): the table was not bootstrapped before processing", key, got[key], want, len(got), products)
		}
	}

	// An update while running reaches every instance: items of both
	// partitions see it.
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "products", Key: []byte("p0"), Value: []byte("renamed")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for n := 0; ; n++ {
		key := fmt.Sprint("late", n)
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "items", Key: []byte(key), Value: []byte("p0")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		read(len(got) + 1)
		if got[key] == "p0=renamed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("items still join %q after the product was renamed", got[key])
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Any instance answers a query of the global store, for any key.
	for p := range products {
		want := fmt.Sprint("name", p)
		if p == 0 {
			want = "renamed"
		}
		var name string
		var found bool
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			name, found, err = exactly.Query[string, string](ctx, app, "products", fmt.Sprint("p", p))
			if err == nil && found && name == want || time.Now().After(deadline) {
				break
			}
		}
		if err != nil || !found || name != want {
			t.Fatalf("query p%d: %q, %v, %v; want %q", p, name, found, err, want)
		}
	}

	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range topics.Names() {
		if strings.Contains(name, "products-changelog") {
			t.Fatalf("topic %s exists: a global store has no changelog", name)
		}
	}
}
