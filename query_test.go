package exactly_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactly-go/exactly"
)

// TestRangeQueriesSeeCommittedStateOnly restores committed counts into a
// new instance that then processes more records without committing (its
// commit interval is an hour): QueryAll, QueryRange and Query answer the
// committed counts, never the ones in the open transaction.
func TestRangeQueriesSeeCommittedStateOnly(t *testing.T) {
	brokers := newCluster(t, 2)
	top := countingApp(t, false)
	const keys = 7
	countingThenStop(t, brokers, t.TempDir(), 0, 70, keys) // 10 per key

	reg := prometheus.NewRegistry()
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.CommitInterval = time.Hour
	cfg.Registerer = reg
	app, err := exactly.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go app.Run(context.Background())
	defer app.Close()
	// New records wake the instance's poll, which restores the committed
	// counts and processes them; nothing commits for an hour.
	produceInputs(t, brokers, 70, 140, keys)
	for deadline := time.Now().Add(30 * time.Second); metricSum(t, reg, "exactly_records_processed_total") < 70; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("processed %v of 70 new records", metricSum(t, reg, "exactly_records_processed_total"))
		}
	}
	ctx := context.Background()
	wantCommitted := func(when string) {
		t.Helper()
		all, err := exactly.QueryAll[string, int64](ctx, app, "counts", 100)
		if err != nil {
			t.Fatalf("%s: QueryAll: %v", when, err)
		}
		var got []string
		for _, kv := range all {
			got = append(got, fmt.Sprintf("%s=%d", kv.Key, kv.Value))
		}
		want := []string{"k0=10", "k1=10", "k2=10", "k3=10", "k4=10", "k5=10", "k6=10"}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: QueryAll = %v; want %v", when, got, want)
		}
		some, err := exactly.QueryRange[string, int64](ctx, app, "counts", "k2", "k5", 100)
		if err != nil || len(some) != 3 || some[0].Key != "k2" || some[2].Key != "k4" || some[1].Value != 10 {
			t.Fatalf("%s: QueryRange [k2, k5) = %v, %v; want k2, k3, k4 at 10", when, some, err)
		}
		if two, err := exactly.QueryAll[string, int64](ctx, app, "counts", 2); err != nil || len(two) != 2 || two[1].Key != "k1" {
			t.Fatalf("%s: QueryAll limit 2 = %v, %v; want k0, k1", when, two, err)
		}
		if n, found, err := exactly.Query[string, int64](ctx, app, "counts", "k3"); n != 10 || !found || err != nil {
			t.Fatalf("%s: Query k3 = %d %v %v; want 10", when, n, found, err)
		}
	}
	wantCommitted("with 70 records processed and not committed")

	if _, err := exactly.QueryAll[string, int64](ctx, app, "counts", 0); err == nil {
		t.Error("QueryAll with limit 0 succeeded; want an error asking for a positive limit")
	}
	if _, err := exactly.QueryAll[int64, int64](ctx, app, "counts", 10); err == nil {
		t.Error("QueryAll with the wrong key type succeeded")
	}
}

// TestKeyMetadataWithoutApplicationServerNamesNoHost proves an instance that
// advertises no address routes nowhere: its keys' metadata name no host,
// while its own keys still answer locally.
func TestKeyMetadataWithoutApplicationServerNamesNoHost(t *testing.T) {
	brokers := newCluster(t, 2)
	top := countingApp(t, false)
	produceInputs(t, brokers, 0, 20, 4)
	app, err := exactly.New(top, appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exactly.KeyMetadata(app, "counts", "k1"); !errors.Is(err, exactly.ErrRestoring) {
		t.Errorf("KeyMetadata before Run = %v; want ErrRestoring", err)
	}
	go app.Run(context.Background())
	defer app.Close()
	<-app.Ready()
	m, err := exactly.KeyMetadata(app, "counts", "k1")
	if err != nil || m.ActiveHost != "" || len(m.StandbyHosts) != 0 {
		t.Errorf("KeyMetadata = %+v, %v; want no host", m, err)
	}
	if tasks := app.LocalTasks(); len(tasks) != 2 {
		t.Errorf("LocalTasks = %+v; want both partitions' tasks", tasks)
	}
	if _, err := exactly.KeyMetadata(app, "no-such-store", "k1"); err == nil {
		t.Error("KeyMetadata of an unknown store succeeded")
	}
}
