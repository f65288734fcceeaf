package exactly_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/counting"
)

// TestRunRefusesAChangelogThatIsNotCompacted: a changelog topic found with
// cleanup.policy=delete stops Run with a *ConfigError naming it and the
// fix; AllowUncompactedChangelogs runs anyway, with tuned stores (a block
// cache, a memtable size and synced writes) that process as the defaults
// do.
func TestRunRefusesAChangelogThatIsNotCompacted(t *testing.T) {
	brokers := newCluster(t, 2)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	changelog := "counting-" + counting.StoreName + "-changelog"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deletePolicy := "delete"
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 2, -1, map[string]*string{"cleanup.policy": &deletePolicy}, changelog); err != nil {
		t.Fatal(err)
	}
	top := countingApp(t, true)

	app, err := exactly.New(top, appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2))
	if err != nil {
		t.Fatal(err)
	}
	err = app.Run(ctx)
	var ce *exactly.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), changelog+" (cleanup.policy=delete)") || !strings.Contains(err.Error(), "cleanup.policy=compact") {
		t.Fatalf("Run with a changelog deleted by retention = %v; want a ConfigError naming it and the fix", err)
	}

	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.AllowUncompactedChangelogs = true
	cfg.StoreBlockCacheSize, cfg.StoreMemTableSize, cfg.StoreSyncWrites = 16<<20, 1<<20, true
	stop := startApp(t, top, cfg)
	produceInputs(t, brokers, 0, 200, 10)
	checkExactlyOnce(t, readCommitted(t, brokers, 200, 30*time.Second), 200, 10)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestNewRefusesNegativeStoreSizes: a negative cache or memtable size is a
// *ConfigError.
func TestNewRefusesNegativeStoreSizes(t *testing.T) {
	for _, cfg := range []exactly.Config{{StoreBlockCacheSize: -1}, {StoreMemTableSize: -1}} {
		cfg.Brokers, cfg.ApplicationID = []string{"127.0.0.1:1"}, "app"
		_, err := exactly.New(countingApp(t, true), cfg)
		var ce *exactly.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "must not be negative") {
			t.Errorf("New(%+v) = %v; want a ConfigError", cfg, err)
		}
	}
}
