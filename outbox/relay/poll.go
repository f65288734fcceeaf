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
	conn, err := r.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	table, err := r.inspectTable(ctx, conn)
	if err != nil {
		return err
	}
	for {
		n, err := r.pollOnce(ctx, conn, table)
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
func (r *Relay) pollOnce(ctx context.Context, conn *pgx.Conn, table *table) (int, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("relay: begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	n, err := r.publishBatch(ctx, tx, table, table.selectRows, table.deleteByCtid)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("relay: commit deletion of %d relayed rows: %w", n, err)
	}
	return n, nil
}

// publishBatch reads up to BatchSize rows with selectRows (one of table's),
// publishes them, waits for Kafka's acknowledgement and deletes them by
// ctid with deleteRows, all in tx, which the caller commits.
func (r *Relay) publishBatch(ctx context.Context, tx pgx.Tx, table *table, selectRows, deleteRows string) (int, error) {
	rows, err := tx.Query(ctx, selectRows, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("relay: select outbox rows: %w", err)
	}
	var batch []row
	var created []time.Time
	for rows.Next() {
		var ctid string
		var createdAt *time.Time
		dest := make([]any, 2+len(r.router.columns))
		dest[0], dest[1] = &ctid, &createdAt
		if err := rows.Scan(dest...); err != nil {
			return 0, fmt.Errorf("relay: read outbox rows: %w", err)
		}
		raw := rows.RawValues()[2:]
		x := r.router.decode(table.types, func(i int) ([]byte, error) { return raw[i], nil })
		x.ctid = ctid
		batch = append(batch, x)
		var t time.Time
		if createdAt != nil {
			t = *createdAt
		}
		created = append(created, t)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("relay: read outbox rows: %w", err)
	}
	if len(batch) == 0 {
		r.metrics.setLag(0, time.Time{})
		return 0, nil
	}
	r.metrics.setLag(0, created[0])

	items := make([]*pending, len(batch))
	ids := make([]string, len(batch))
	for i, row := range batch {
		rec, unroutable, err := r.routeRecord(row)
		if err != nil {
			return 0, err
		}
		items[i] = &pending{id: r.router.eventID(row), rec: rec, since: created[i], unroutable: unroutable}
		ids[i] = row.ctid
	}
	if err := r.publish(ctx, items); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, deleteRows, ids); err != nil {
		return 0, fmt.Errorf("relay: delete %d relayed rows: %w", len(ids), err)
	}
	return len(batch), nil
}

// publish sends the records of items and waits until Kafka acknowledged
// all of them, in a committed Kafka transaction when the relay is
// transactional. A record the broker refuses for good is dead-lettered
// (publishCarefully): within a transaction by aborting it and publishing
// every record again, the refused one replaced by its dead letter, so
// read_committed consumers see each row once; without one by publishing
// again the records the refusal failed.
func (r *Relay) publish(ctx context.Context, items []*pending) error {
	transactional := r.cfg.TransactionalID != ""
	if transactional {
		if err := r.client.BeginTransaction(); err != nil {
			return fmt.Errorf("relay: begin kafka transaction: %w", err)
		}
	}
	refused, err := r.produceAll(ctx, items)
	if err != nil {
		return err
	}
	if refused {
		if transactional {
			err = r.redoTransaction(ctx, items)
		} else {
			err = r.publishCarefully(ctx, afterRefusal(items), false)
		}
		if err != nil {
			return err
		}
	}
	if transactional {
		if err := r.client.EndTransaction(ctx, kgo.TryCommit); err != nil {
			return fmt.Errorf("relay: commit kafka transaction: %w", err)
		}
	}
	for _, p := range items {
		r.metrics.relayed(p)
	}
	return nil
}
