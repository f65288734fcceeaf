package relay

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/inbox"
)

// effectsThroughInbox consumes the relayed records (read_committed, with
// duplicates) through an inbox consumer deduplicating by the "id" header
// until total distinct events took effect, lets it run a little longer,
// and returns how many effects ran and how many deliveries were skipped as
// duplicates.
func effectsThroughInbox(t *testing.T, dsn string, brokers []string, total int) (effects, duplicates int) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := inbox.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE effects (event_id text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	var dups atomic.Int64
	c, err := inbox.NewConsumer(inbox.ConsumerConfig{
		Inbox:     inbox.New(pool, "projection", inbox.Options{}),
		BatchSize: 100,
		Handler: func(ctx context.Context, tx pgx.Tx, r *kgo.Record) ([]byte, error) {
			_, err := tx.Exec(ctx, `INSERT INTO effects (event_id) VALUES ($1)`, header(r, "id"))
			return nil, err
		},
		OnResult: func(_ *kgo.Record, r inbox.Result) {
			if r.Duplicate {
				dups.Add(1)
			}
		},
		Kafka: []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumerGroup("projection"),
			kgo.ConsumeTopics("order.events", "payment.events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.SessionTimeout(6 * time.Second), kgo.FetchMaxWait(100 * time.Millisecond)},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(runCtx) }()
	distinct := 0
	for deadline := time.Now().Add(90 * time.Second); distinct < total; time.Sleep(50 * time.Millisecond) {
		if err := pool.QueryRow(ctx, `SELECT count(DISTINCT event_id) FROM effects`).Scan(&distinct); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("inbox consumer: %d of %d events took effect in 90s", distinct, total)
		}
	}
	time.Sleep(time.Second) // room for a second effect to show, if there were one
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM effects`).Scan(&effects); err != nil {
		t.Fatal(err)
	}
	return effects, int(dups.Load())
}
