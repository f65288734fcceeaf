package dsl_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestWindowAndVersionedQueriesOnKafka asks a running instance for a
// key's windows and sessions over a time range and for a versioned
// table's value as of a past time, from its committed state.
func TestWindowAndVersionedQueriesOnKafka(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "clicks", "prices", "out"),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	windows := dsl.TumblingWindows(10*time.Second, time.Hour)
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	clicks := dsl.Stream(sb, "clicks", serde.String, serde.String).GroupByKey()
	dsl.WindowedCount(clicks, windows, "clicks-per-window", dsl.Materialized{}).ToStream().To("out")
	dsl.SessionCount(clicks, dsl.SessionWindows{Gap: 5 * time.Second, Grace: time.Hour}, "click-sessions", dsl.Materialized{Persistent: true})
	dsl.VersionedTable(sb, "prices", serde.String, serde.Int64, "prices", time.Hour, dsl.Materialized{})
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	app, err := exactly.New(top, exactly.Config{
		Brokers: brokers, ApplicationID: "queries", StateDir: t.TempDir(), CommitInterval: 50 * time.Millisecond,
		SessionTimeout: 3 * time.Second, RebalanceTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	go app.Run(context.Background())
	defer app.Close()

	cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...))
	defer cl.Close()
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var recs []*kgo.Record
	// Windows at 0 s (2), 10 s (1), 30 s (3); sessions [1 s, 2 s], [15 s],
	// [31 s, 35 s].
	for _, sec := range []int{1, 2, 15, 31, 33, 35} {
		recs = append(recs, &kgo.Record{Topic: "clicks", Key: []byte("u-1"), Value: []byte("c"), Timestamp: base.Add(time.Duration(sec) * time.Second)})
	}
	recs = append(recs, &kgo.Record{Topic: "clicks", Key: []byte("u-10"), Value: []byte("c"), Timestamp: base.Add(time.Second)})
	for i, price := range []int64{100, 120, 90} { // valid from 0, 20 and 40 s
		v, _ := serde.Int64.Serialize(price)
		recs = append(recs, &kgo.Record{Topic: "prices", Key: []byte("p-1"), Value: v, Timestamp: base.Add(time.Duration(20*i) * time.Second)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	// eventually asks query until it renders want, for up to 30 s (the
	// instance answers once it has committed the records).
	eventually := func(what, want string, query func() ([]exactly.KeyValue[dsl.Windowed[string], int64], error)) {
		t.Helper()
		var got string
		for deadline := time.Now().Add(30 * time.Second); got != want && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			ws, err := query()
			if err != nil {
				continue // not ready yet
			}
			got = ""
			for _, w := range ws {
				got += fmt.Sprintf("[%v,%v)=%d ", w.Key.Start.Sub(base), w.Key.End.Sub(base), w.Value)
			}
		}
		if got != want {
			t.Fatalf("%s: %q, want %q", what, got, want)
		}
	}
	eventually("windows of u-1 starting in [5 s, 60 s]", "[10s,20s)=1 [30s,40s)=3 ", func() ([]exactly.KeyValue[dsl.Windowed[string], int64], error) {
		return dsl.QueryWindows[string, int64](ctx, app, "clicks-per-window", serde.String, windows, "u-1", base.Add(5*time.Second), base.Add(time.Minute))
	})
	eventually("sessions of u-1 overlapping [10 s, 32 s]", "[15s,15.001s)=1 [31s,35.001s)=3 ", func() ([]exactly.KeyValue[dsl.Windowed[string], int64], error) {
		return dsl.QuerySessions[string, int64](ctx, app, "click-sessions", serde.String, "u-1", base.Add(10*time.Second), base.Add(32*time.Second))
	})
	for _, c := range []struct {
		at    time.Duration
		price int64
		found bool
	}{{-time.Second, 0, false}, {0, 100, true}, {19 * time.Second, 100, true}, {25 * time.Second, 120, true}, {time.Hour, 90, true}} {
		var price int64
		var found bool
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			price, _, found, err = dsl.QueryAsOf(ctx, app, "prices", serde.String, serde.Int64, "p-1", base.Add(c.at))
			if err == nil && found == c.found && price == c.price {
				break
			}
		}
		if err != nil || found != c.found || price != c.price {
			t.Fatalf("price of p-1 as of %v: %d, %v, %v; want %d, %v", c.at, price, found, err, c.price, c.found)
		}
	}
}
