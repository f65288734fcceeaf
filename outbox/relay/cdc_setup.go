package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func (r *Relay) ensurePublication(ctx context.Context, conn *pgx.Conn) error {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, r.cfg.Publication).Scan(&exists); err != nil {
		return fmt.Errorf("relay: look up publication %s: %w", r.cfg.Publication, err)
	}
	if exists {
		return nil
	}
	// Only inserts: the relay's own deletions must not come back to it.
	sql := fmt.Sprintf(`CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert')`,
		pgx.Identifier{r.cfg.Publication}.Sanitize(), quoteTable(r.cfg.Table))
	if _, err := conn.Exec(ctx, sql); err != nil && !isDuplicateObject(err) {
		return fmt.Errorf("relay: create publication %s: %w", r.cfg.Publication, err)
	}
	r.log.Info("created publication", "publication", r.cfg.Publication)
	return nil
}

// ensureSlot creates the replication slot if missing. For a new slot it
// returns the name of the snapshot exported at the slot's consistent point:
// the rows visible in it are exactly those the slot will never send.
func (r *Relay) ensureSlot(ctx context.Context, conn *pgx.Conn, repl *pgconn.PgConn) (snapshot string, err error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, r.cfg.Slot).Scan(&exists); err != nil {
		return "", fmt.Errorf("relay: look up slot %s: %w", r.cfg.Slot, err)
	}
	if exists {
		return "", nil
	}
	created, err := pglogrepl.CreateReplicationSlot(ctx, repl, r.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if isDuplicateObject(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("relay: create slot %s: %w", r.cfg.Slot, err)
	}
	r.log.Info("created replication slot", "slot", r.cfg.Slot, "consistent_point", created.ConsistentPoint)
	return created.SnapshotName, nil
}

// backfillTable records, per slot, that the rows written before the slot
// existed have been published. The relay creates it next to the outbox.
const backfillTable = "exactly_relay_backfills"

// backfill publishes the rows committed before the slot existed, which the
// slot will never send, once per slot. With the snapshot the slot exported
// at its creation it reads exactly those rows: each row then takes exactly
// one of the two paths. It publishes them, waits for Kafka, deletes them and
// records the slot as backfilled, in one transaction. If a crash interrupts
// that, the next session finds the slot without its record and no snapshot
// any more: it publishes and deletes every row in the table instead, so rows
// the slot also sends may go out twice, and none is skipped.
func (r *Relay) backfill(ctx context.Context, conn *pgx.Conn, table *table, snapshot string) error {
	marker := pgx.Identifier{backfillTable}.Sanitize()
	if i := strings.LastIndexByte(r.cfg.Table, '.'); i >= 0 {
		marker = pgx.Identifier{r.cfg.Table[:i], backfillTable}.Sanitize() // beside the outbox
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    slot_name text PRIMARY KEY,
    done_at   timestamptz NOT NULL DEFAULT now())`, marker)); err != nil {
		return fmt.Errorf("relay: create %s: %w", marker, err)
	}
	if snapshot == "" {
		var done bool
		if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT EXISTS (SELECT 1 FROM %s WHERE slot_name = $1)`, marker), r.cfg.Slot).Scan(&done); err != nil {
			return fmt.Errorf("relay: read %s: %w", marker, err)
		}
		if done {
			return nil
		}
		r.log.Warn("slot exists but its backfill did not finish; publishing every row in the outbox (duplicates possible)", "slot", r.cfg.Slot)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return fmt.Errorf("relay: backfill: begin: %w", err)
	}
	defer tx.Rollback(context.Background())
	if snapshot != "" {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET TRANSACTION SNAPSHOT '%s'", snapshot)); err != nil {
			return fmt.Errorf("relay: backfill: import snapshot of slot %s: %w", r.cfg.Slot, err)
		}
	}
	total := 0
	if r.cfg.KeepRows {
		r.log.Warn("new slot with KeepRows: rows already in the outbox are not published", "slot", r.cfg.Slot)
	} else {
		for {
			n, err := r.publishBatch(ctx, tx, table, table.selectBackfill, table.deleteByCtid)
			if err != nil {
				return fmt.Errorf("relay: backfill: %w", err)
			}
			total += n
			if n < r.cfg.BatchSize {
				break
			}
		}
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (slot_name) VALUES ($1) ON CONFLICT (slot_name) DO UPDATE SET done_at = now()`, marker), r.cfg.Slot); err != nil {
		return fmt.Errorf("relay: backfill: record completion: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("relay: backfill: commit: %w", err)
	}
	if total > 0 {
		r.log.Info("published rows written before the slot existed", "rows", total)
	}
	return nil
}

func isDuplicateObject(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42710"
}
