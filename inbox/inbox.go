// Package inbox makes a consumer's effects on PostgreSQL happen once per event,
// however often the event is delivered.
//
// Kafka delivers at least once: a consumer that crashes after its work and
// before its offset commit sees the same records again, and a rebalance can
// hand them to another instance while the first is still busy. The inbox
// records each processed event id in the table processed_events, in the same
// transaction as the effect. A delivery whose id is already there runs
// nothing and gets the stored response back; two concurrent deliveries of one
// id serialise on the table's unique key, and only one effect commits.
//
// Inbox works on any pgx connection or pool; Consumer adds the Kafka loop,
// which commits offsets only after the database transaction committed. A
// record the consumer cannot handle (no event id, an effect that fails for
// good) stops it, or, with ConsumerConfig.DeadLetterTopic, goes to that
// topic with the reason while the consumer goes on.
package inbox

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// SchemaSQL creates the processed_events table and its retention index. It is
// idempotent; Migrate runs it, and operators can run it by hand instead.
//
//go:embed schema.sql
var SchemaSQL string

// ErrEmptyEventID is returned for an event without an id: it cannot be
// deduplicated, so it is not processed.
var ErrEmptyEventID = errors.New("inbox: empty event id")

// DB is what the inbox needs from PostgreSQL: *pgxpool.Pool and *pgx.Conn
// both satisfy it. Concurrent use needs a pool.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Migrate creates the inbox schema (SchemaSQL) if it does not exist yet.
func Migrate(ctx context.Context, db DB) error {
	if _, err := db.Exec(ctx, SchemaSQL); err != nil {
		return fmt.Errorf("inbox: migrate: %w", err)
	}
	return nil
}

// Effect is the business work for one event. It runs inside tx, the
// transaction that also records the event id: whatever it writes through tx
// commits if and only if the id is recorded. The returned response is stored
// with the id and handed back unchanged to later duplicates (nil stores
// NULL). An error rolls everything back; the event counts as unprocessed.
//
// Work outside tx (an HTTP call, a message) is not rolled back and may repeat
// if the transaction fails after it: give such calls an idempotency key.
type Effect func(ctx context.Context, tx pgx.Tx) (response []byte, err error)

// BatchEffect is Effect for the event at index i of a batch.
type BatchEffect func(ctx context.Context, tx pgx.Tx, i int) (response []byte, err error)

// Result says what happened to one delivery.
type Result struct {
	// Duplicate is true when the event had already been processed (by this
	// or an earlier delivery, or earlier in the same batch) and no effect ran.
	Duplicate bool
	// Response is what the event's effect returned when it first ran.
	Response []byte
}

// Inbox processes events for one consumer group. It is safe for concurrent
// use when its DB is.
type Inbox struct {
	db      DB
	group   string
	metrics *counters
}

// Options configure an Inbox; the zero value is the default.
type Options struct {
	// Registerer receives the inbox's counters,
	// inbox_events_processed_total and inbox_duplicates_skipped_total,
	// labelled by consumer_group; nil registers nothing. Inboxes of one
	// group registered with one registry share their counters.
	Registerer prometheus.Registerer
}

// New returns an inbox that records event ids under consumerGroup. Groups are
// independent: the same event id processed by two groups runs both effects.
func New(db DB, consumerGroup string, opts Options) *Inbox {
	return &Inbox{db: db, group: consumerGroup, metrics: newMetrics(opts.Registerer, consumerGroup)}
}

// ConsumerGroup returns the group the inbox records ids under.
func (in *Inbox) ConsumerGroup() string { return in.group }

const (
	insertOne = `INSERT INTO processed_events (consumer_group, event_id) VALUES ($1, $2)
ON CONFLICT (consumer_group, event_id) DO NOTHING`
	selectOne    = `SELECT response FROM processed_events WHERE consumer_group = $1 AND event_id = $2`
	updateOne    = `UPDATE processed_events SET response = $3 WHERE consumer_group = $1 AND event_id = $2`
	insertUnnest = `INSERT INTO processed_events (consumer_group, event_id)
SELECT $1, id FROM (SELECT DISTINCT unnest($2::text[]) AS id) AS ids ORDER BY id
ON CONFLICT (consumer_group, event_id) DO NOTHING
RETURNING event_id`
	selectMany = `SELECT event_id, response FROM processed_events
WHERE consumer_group = $1 AND event_id = ANY($2::text[])`
	updateMany = `UPDATE processed_events AS p SET response = r.response
FROM unnest($2::text[], $3::bytea[]) AS r(event_id, response)
WHERE p.consumer_group = $1 AND p.event_id = r.event_id`
)

// Process runs effect for eventID unless the consumer group already processed
// it. The id and the effect's writes commit in one transaction. A concurrent
// delivery of the same id waits for this one's transaction: if it commits,
// the other gets Duplicate; if it rolls back, the other runs the effect.
func (in *Inbox) Process(ctx context.Context, eventID string, effect Effect) (Result, error) {
	if eventID == "" {
		return Result{}, ErrEmptyEventID
	}
	tx, err := in.db.Begin(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("inbox: begin: %w", err)
	}
	defer tx.Rollback(ctx)

	tag, err := tx.Exec(ctx, insertOne, in.group, eventID)
	if err != nil {
		return Result{}, fmt.Errorf("inbox: record event %s: %w", eventID, err)
	}
	if tag.RowsAffected() == 0 {
		var response []byte
		if err := tx.QueryRow(ctx, selectOne, in.group, eventID).Scan(&response); err != nil {
			return Result{}, fmt.Errorf("inbox: read stored response of %s: %w", eventID, err)
		}
		in.metrics.duplicates.Inc()
		return Result{Duplicate: true, Response: response}, nil
	}
	response, err := effect(ctx, tx)
	if err != nil {
		return Result{}, fmt.Errorf("inbox: effect of event %s: %w", eventID, err)
	}
	if response != nil {
		if _, err := tx.Exec(ctx, updateOne, in.group, eventID, response); err != nil {
			return Result{}, fmt.Errorf("inbox: store response of %s: %w", eventID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return Result{}, fmt.Errorf("inbox: commit event %s: %w", eventID, err)
	}
	in.metrics.processed.Inc()
	return Result{Response: response}, nil
}

// ProcessBatch processes a batch of events in one transaction: it records all
// new ids with one statement, runs effect for each new id in batch order,
// stores the responses and commits once. An id that occurs more than once in
// the batch runs its effect once, at its first occurrence; later occurrences
// are duplicates with that response. If any effect fails the whole batch
// rolls back and nothing counts as processed.
//
// Concurrent batches lock their ids in sorted order, so overlapping batches
// wait for each other instead of deadlocking.
func (in *Inbox) ProcessBatch(ctx context.Context, eventIDs []string, effect BatchEffect) ([]Result, error) {
	return in.ProcessBulk(ctx, eventIDs, func(ctx context.Context, tx pgx.Tx, fresh []int) ([][]byte, error) {
		responses := make([][]byte, len(fresh))
		for j, i := range fresh {
			response, err := effect(ctx, tx, i)
			if err != nil {
				return nil, fmt.Errorf("event %s: %w", eventIDs[i], err)
			}
			responses[j] = response
		}
		return responses, nil
	})
}

// BulkEffect is the business work for all new events of a batch at once:
// fresh holds their indexes in the batch, in batch order, each id once. It
// returns one response per entry of fresh. Set-based SQL (one statement over
// arrays) here is what makes large batches fast.
type BulkEffect func(ctx context.Context, tx pgx.Tx, fresh []int) (responses [][]byte, err error)

// ProcessBulk is ProcessBatch with one call of effect for all new events of
// the batch. The guarantees are ProcessBatch's.
func (in *Inbox) ProcessBulk(ctx context.Context, eventIDs []string, effect BulkEffect) ([]Result, error) {
	for i, id := range eventIDs {
		if id == "" {
			return nil, fmt.Errorf("inbox: batch index %d: %w", i, ErrEmptyEventID)
		}
	}
	results := make([]Result, len(eventIDs))
	if len(eventIDs) == 0 {
		return results, nil
	}
	first := make(map[string]int, len(eventIDs)) // id → index of its first occurrence
	unique := make([]string, 0, len(eventIDs))
	for i, id := range eventIDs {
		if _, ok := first[id]; !ok {
			first[id] = i
			unique = append(unique, id)
		}
	}
	sort.Strings(unique)

	tx, err := in.db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("inbox: begin batch: %w", err)
	}
	defer tx.Rollback(ctx)

	isFresh, stored, err := in.recordBatch(ctx, tx, unique)
	if err != nil {
		return nil, err
	}

	var fresh []int
	for i, id := range eventIDs {
		if first[id] == i && isFresh[id] {
			fresh = append(fresh, i)
		}
	}
	if len(fresh) > 0 {
		responses, err := effect(ctx, tx, fresh)
		if err != nil {
			return nil, fmt.Errorf("inbox: effect of batch: %w", err)
		}
		if len(responses) != len(fresh) {
			return nil, fmt.Errorf("inbox: effect returned %d responses for %d events", len(responses), len(fresh))
		}
		var respIDs []string
		var respValues [][]byte
		for j, i := range fresh {
			results[i] = Result{Response: responses[j]}
			if responses[j] != nil {
				respIDs = append(respIDs, eventIDs[i])
				respValues = append(respValues, responses[j])
			}
		}
		if len(respIDs) > 0 {
			if _, err := tx.Exec(ctx, updateMany, in.group, respIDs, respValues); err != nil {
				return nil, fmt.Errorf("inbox: store batch responses: %w", err)
			}
		}
	}
	duplicates := 0
	for i, id := range eventIDs {
		switch {
		case first[id] != i:
			results[i] = Result{Duplicate: true, Response: results[first[id]].Response}
			duplicates++
		case !isFresh[id]:
			results[i] = Result{Duplicate: true, Response: stored[id]}
			duplicates++
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("inbox: commit batch of %d: %w", len(eventIDs), err)
	}
	in.metrics.processed.Add(float64(len(fresh)))
	in.metrics.duplicates.Add(float64(duplicates))
	return results, nil
}

// recordBatch inserts the ids (sorted, distinct) in one statement and
// reports which were new, and the stored responses of the others.
func (in *Inbox) recordBatch(ctx context.Context, tx pgx.Tx, unique []string) (isFresh map[string]bool, stored map[string][]byte, err error) {
	rows, err := tx.Query(ctx, insertUnnest, in.group, unique)
	if err != nil {
		return nil, nil, fmt.Errorf("inbox: record batch of %d: %w", len(unique), err)
	}
	inserted, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, nil, fmt.Errorf("inbox: record batch of %d: %w", len(unique), err)
	}
	isFresh = make(map[string]bool, len(inserted))
	for _, id := range inserted {
		isFresh[id] = true
	}
	stored = map[string][]byte{}
	if len(inserted) == len(unique) {
		return isFresh, stored, nil
	}
	var old []string
	for _, id := range unique {
		if !isFresh[id] {
			old = append(old, id)
		}
	}
	rows, err = tx.Query(ctx, selectMany, in.group, old)
	if err != nil {
		return nil, nil, fmt.Errorf("inbox: read stored responses: %w", err)
	}
	var id string
	var response []byte
	if _, err := pgx.ForEachRow(rows, []any{&id, &response}, func() error {
		stored[id] = response
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("inbox: read stored responses: %w", err)
	}
	return isFresh, stored, nil
}

// deleteChunk bounds how many keys one retention statement deletes, so the
// job never holds many locks or one long transaction.
const deleteChunk = 10000

const deleteExpired = `DELETE FROM processed_events WHERE consumer_group = $1 AND event_id IN (
  SELECT event_id FROM processed_events
  WHERE consumer_group = $1 AND processed_at < now() - $2 * interval '1 microsecond'
  LIMIT $3)`

// DeleteOlderThan deletes the group's keys processed more than window ago and
// returns how many it deleted. A redelivery of a deleted key runs its effect
// again: the window must exceed the longest time an event can be redelivered
// (at least the topic's retention plus the consumer's worst lag).
func (in *Inbox) DeleteOlderThan(ctx context.Context, window time.Duration) (int64, error) {
	var total int64
	for {
		tag, err := in.db.Exec(ctx, deleteExpired, in.group, window.Microseconds(), deleteChunk)
		if err != nil {
			return total, fmt.Errorf("inbox: delete keys older than %s: %w", window, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < deleteChunk {
			return total, nil
		}
	}
}

// RunRetention deletes keys older than window every interval until ctx is
// done, then returns ctx's error. Failed rounds are reported to onError (if
// not nil) and retried at the next interval.
func (in *Inbox) RunRetention(ctx context.Context, window, interval time.Duration, onError func(error)) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if _, err := in.DeleteOlderThan(ctx, window); err != nil && ctx.Err() == nil && onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}
