package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// runPoll is one polling session on one connection: it ends at the first
// error, leaving the rows of the failed poll in the table.
func (r *Relay) runPoll(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, r.cfg.DSN)
	if err != nil {
		return fmt.Errorf("relay: connect: %w", err)
	}
	defer conn.Close(context.Background())
	table := quoteTable(r.cfg.Table)
	selectRows := fmt.Sprintf(`SELECT id::text, aggregate_type, aggregate_id, event_type, payload::text, headers::text, created_at
FROM %s ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED`, table)
	deleteRows := fmt.Sprintf(`DELETE FROM %s WHERE id = ANY($1::text[]::uuid[])`, table)
	for {
		n, err := r.pollOnce(ctx, conn, selectRows, deleteRows)
		if err != nil {
			return err
		}
		if n < r.cfg.BatchSize {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(r.cfg.PollInterval):
			}
		}
	}
}

// pollOnce publishes up to BatchSize rows and deletes them, in one database
// transaction that commits only after Kafka acknowledged every record. A
// failure at any point rolls back: the rows stay and are published again.
func (r *Relay) pollOnce(ctx context.Context, conn *pgx.Conn, selectRows, deleteRows string) (int, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("relay: begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	n, err := r.publishBatch(ctx, tx, selectRows, deleteRows)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("relay: commit deletion of %d relayed rows: %w", n, err)
	}
	return n, nil
}

// publishBatch reads up to BatchSize rows with selectRows, publishes them,
// waits for Kafka's acknowledgement and deletes them with deleteRows, all in
// tx, which the caller commits.
func (r *Relay) publishBatch(ctx context.Context, tx pgx.Tx, selectRows, deleteRows string) (int, error) {
	rows, err := tx.Query(ctx, selectRows, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("relay: select outbox rows: %w", err)
	}
	var batch []row
	var created []time.Time
	var headers *string
	var x row
	var payload string
	var createdAt time.Time
	if _, err := pgx.ForEachRow(rows, []any{&x.id, &x.aggregateType, &x.aggregateID, &x.eventType, &payload, &headers, &createdAt}, func() error {
		x.payload = []byte(payload)
		x.headers = nil
		if headers != nil {
			x.headers = []byte(*headers)
		}
		batch = append(batch, x)
		created = append(created, createdAt)
		return nil
	}); err != nil {
		return 0, fmt.Errorf("relay: read outbox rows: %w", err)
	}
	if len(batch) == 0 {
		r.metrics.setLag(0, time.Time{})
		return 0, nil
	}
	r.metrics.setLag(0, created[0])

	records := make([]*kgo.Record, len(batch))
	ids := make([]string, len(batch))
	for i, row := range batch {
		if records[i], err = r.routeRecord(row); err != nil {
			return 0, err
		}
		ids[i] = row.id
	}
	if err := r.publish(ctx, records, created); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, deleteRows, ids); err != nil {
		return 0, fmt.Errorf("relay: delete %d relayed rows: %w", len(ids), err)
	}
	return len(batch), nil
}

// publish sends records and waits until Kafka acknowledged all of them (in a
// committed Kafka transaction when the relay is transactional).
func (r *Relay) publish(ctx context.Context, records []*kgo.Record, since []time.Time) error {
	if r.cfg.TransactionalID != "" {
		if err := r.client.BeginTransaction(); err != nil {
			return fmt.Errorf("relay: begin kafka transaction: %w", err)
		}
	}
	results := r.client.ProduceSync(ctx, records...)
	if err := results.FirstErr(); err != nil {
		return fmt.Errorf("relay: publish %d records: %w", len(records), err)
	}
	if r.cfg.TransactionalID != "" {
		if err := r.client.EndTransaction(ctx, kgo.TryCommit); err != nil {
			return fmt.Errorf("relay: commit kafka transaction: %w", err)
		}
	}
	for i := range records {
		r.metrics.acked(1, since[i])
	}
	return nil
}
