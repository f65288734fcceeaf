package exactly_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	engine "github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/serde"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// catalogueCluster starts a broker with the topics products (3
// partitions), items and named (2 each), and a client of it; both close
// when the test ends.
func catalogueCluster(t *testing.T) ([]string, *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "products"), kfake.SeedTopics(2, "items", "named"),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return c.ListenAddrs(), cl
}

// TestGlobalTableOnKafka runs a stream–global-table join in two
// instances: each holds every partition of the products topic, read to its
// end (committed records only) before the first item is processed, and
// follows updates while running, with no changelog of its own.
func TestGlobalTableOnKafka(t *testing.T) {
	brokers, cl := catalogueCluster(t)
	ctx := context.Background()
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
	catalogue := dsl.GlobalTable(sb, "products", serde.String, serde.String, "products", dsl.Materialized{})
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

// TestPersistentGlobalTableRestartReadsOnlyWhatTheTopicGained runs a
// stream–global-table join over a persistent global table across
// restarts of one instance: a restart reads only the records the topic
// gained since the instance stopped (exactly_restore_records_total of the
// store), including those the instance applied while running, and the
// join results equal the oracle's after each one; a checkpoint that is
// corrupt or missing makes the instance read the whole topic again.
func TestPersistentGlobalTableRestartReadsOnlyWhatTheTopicGained(t *testing.T) {
	brokers, cl := catalogueCluster(t)
	ctx := context.Background()
	names := map[string]string{} // the oracle: product -> name
	produced := 0                // committed records in the products topic
	setProducts := func(updates map[string]string) {
		t.Helper()
		var recs []*kgo.Record
		for p, name := range updates {
			r := &kgo.Record{Topic: "products", Key: []byte(p), Value: []byte(name)}
			if name == "" {
				r.Value = nil // a tombstone
				delete(names, p)
			} else {
				names[p] = name
			}
			recs = append(recs, r)
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		produced += len(recs)
	}
	abortRename := func(p string) {
		t.Helper()
		txn, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("renamer"))
		if err != nil {
			t.Fatal(err)
		}
		defer txn.Close()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := txn.ProduceSync(ctx, &kgo.Record{Topic: "products", Key: []byte(p), Value: []byte("aborted")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
			t.Fatal(err)
		}
	}
	initial := map[string]string{}
	for p := range 40 {
		initial[fmt.Sprint("p", p)] = fmt.Sprint("name", p)
	}
	setProducts(initial)

	sb := dsl.NewStreamsBuilder(dsl.Options{})
	catalogue := dsl.GlobalTable(sb, "products", serde.String, serde.String, "products", dsl.Materialized{Persistent: true})
	dsl.LeftJoinGlobal(dsl.Stream(sb, "items", serde.String, serde.String), catalogue,
		func(_ string, product string) string { return product },
		func(_ string, product, name string, found bool) string {
			if !found {
				return product + " is gone"
			}
			return product + "=" + name
		}, serde.String).To("named")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	if d := top.Describe("catalogue"); !strings.Contains(d, "Global store: products (persistent,") {
		t.Fatalf("describe does not show the persistent global store:\n%s", d)
	}
	stateDir := t.TempDir()
	var app *exactly.App
	var reg *prometheus.Registry
	var stop func() error
	start := func() {
		t.Helper()
		cfg := appConfig(brokers, stateDir, exactly.ExactlyOnceV2)
		cfg.ApplicationID = "catalogue"
		reg = prometheus.NewRegistry()
		cfg.Registerer = reg
		if app, err = exactly.New(top, cfg); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- app.Run(ctx) }()
		stop = func() error { app.Close(); return <-done }
		select {
		case <-app.Ready():
		case err := <-done:
			t.Fatalf("the instance stopped before it was ready: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatal("the instance was not ready after 60s")
		}
	}
	restored := func() int {
		t.Helper()
		n := int(countWithLabel(t, reg, "exactly_restore_records_total", "store", "products"))
		// The bootstrap shows on App.Restores as a store's restore does:
		// per partition it read, done once the instance is ready.
		shown := int64(0)
		for _, p := range app.Restores() {
			if p.Store != "products" || p.Task != "global" || !p.Done() || p.Position != p.EndOffset {
				t.Fatalf("the bootstrap's progress shows %+v, want the products store's partitions, done", p)
			}
			shown += p.Records
		}
		if shown != int64(n) {
			t.Fatalf("the bootstrap's progress shows %d records read, the metric %d", shown, n)
		}
		return n
	}

	out, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("named"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	joined := map[string]string{}
	// checkJoins sends an item per product ever named, and one of a product
	// never named, and compares what they join with the oracle.
	round := 0
	checkJoins := func(stage string) {
		t.Helper()
		round++
		want := map[string]string{}
		var recs []*kgo.Record
		for p := range 45 {
			product := fmt.Sprint("p", p)
			item := fmt.Sprintf("r%d-%s", round, product)
			want[item] = product + " is gone"
			if name, ok := names[product]; ok {
				want[item] = product + "=" + name
			}
			recs = append(recs, &kgo.Record{Topic: "items", Key: []byte(item), Value: []byte(product)})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for deadline := time.Now().Add(60 * time.Second); len(got) < len(want) && time.Now().Before(deadline); {
			pollCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			out.PollFetches(pollCtx).EachRecord(func(r *kgo.Record) { joined[string(r.Key)] = string(r.Value) })
			cancel()
			for item := range want {
				if v, ok := joined[item]; ok {
					got[item] = v
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: the items joined\n%v\nwant\n%v", stage, got, want)
		}
	}

	start()
	if n := restored(); n != produced {
		t.Fatalf("first start read %d records of the products topic, want all %d", n, produced)
	}
	checkJoins("first start")
	// Updates while running reach the store and its checkpoints.
	setProducts(map[string]string{"p1": "renamed1", "p2": "", "p40": "new40"})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		name, found, err := exactly.Query[string, string](ctx, app, "products", "p40")
		if err == nil && found && name == "new40" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the running instance did not apply the update of p40: %q %v %v", name, found, err)
		}
	}
	checkJoins("updates while running")
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// While the instance is down the topic gains some records, and an
	// aborted transaction it must never see.
	before := produced
	setProducts(map[string]string{"p3": "renamed3", "p4": "", "p41": "new41", "p40": "renamed40"})
	abortRename("p5")
	start()
	if n := restored(); n != produced-before {
		t.Fatalf("the restart read %d records of the products topic, want the %d it gained since the instance stopped", n, produced-before)
	}
	checkJoins("restart")
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	for _, damage := range []string{"corrupt", "missing"} {
		db, err := engine.OpenPebble(filepath.Join(stateDir, "catalogue", "global"))
		if err != nil {
			t.Fatal(err)
		}
		// Checkpoints are the keys 'c' len(name) name [partition].
		prefix := append([]byte{'c', byte(len("products"))}, "products"...)
		it, err := db.NewIter(prefix, append(bytes.Clone(prefix), 0xff))
		if err != nil {
			t.Fatal(err)
		}
		var ops []engine.Op
		for it.Next() {
			op := engine.Op{Kind: engine.OpDelete, Key: bytes.Clone(it.Key())}
			if damage == "corrupt" {
				op = engine.Op{Kind: engine.OpSet, Key: bytes.Clone(it.Key()), Value: []byte("bad")}
			}
			ops = append(ops, op)
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		if len(ops) != 3 {
			t.Fatalf("%d checkpoints of the products store, want one per partition", len(ops))
		}
		if err := db.Apply(ops); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		setProducts(map[string]string{"p6": damage})
		start()
		if n := restored(); n != produced {
			t.Fatalf("with %s checkpoints the instance read %d records of the products topic, want all %d", damage, n, produced)
		}
		checkJoins(damage + " checkpoints")
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
}
