package relay

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/inbox"
)

// effectsThroughInbox consumes every relayed record (with duplicates) through an inbox consumer deduplicating by the "id" header,
// and returns how many effects ran and how many deliveries were duplicates.
func effectsThroughInbox(t *testing.T, dsn string, brokers []string) (effects, records, duplicates int) {
	t.Helper()
	ctx := context.Background()
	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	ends, err := kadm.NewClient(admin).ListEndOffsets(ctx, "order.events", "payment.events")
	admin.Close()
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) { records += int(o.Offset) })
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
	var seen, dups atomic.Int64
	done := make(chan struct{})
	c, err := inbox.NewConsumer(inbox.ConsumerConfig{
		Inbox:     inbox.New(pool, "projection"),
		BatchSize: 100,
		Handler: func(ctx context.Context, tx pgx.Tx, r *kgo.Record) ([]byte, error) {
			_, err := tx.Exec(ctx, `INSERT INTO effects (event_id) VALUES ($1)`, header(r, "id"))
			return nil, err
		},
		OnResult: func(_ *kgo.Record, r inbox.Result) {
			if r.Duplicate {
				dups.Add(1)
			}
			if seen.Add(1) == int64(records) {
				close(done)
			}
		},
		Kafka: []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumerGroup("projection"),
			kgo.ConsumeTopics("order.events", "payment.events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.SessionTimeout(6 * time.Second), kgo.FetchMaxWait(100 * time.Millisecond)},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- c.Run(runCtx) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatalf("inbox consumer saw %d of %d records", seen.Load(), records)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM effects`).Scan(&effects); err != nil {
		t.Fatal(err)
	}
	return effects, records, int(dups.Load())
}
