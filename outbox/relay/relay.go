// Package relay publishes the rows of the outbox table (package outbox) to
// Kafka, at least once and in commit order per aggregate.
//
// Two modes share one routing, the EventRouter convention: the topic comes
// from the row's aggregate_type through a replacement pattern (default
// "${aggregate_type}.events"), the key is aggregate_id, the value is the
// payload's bytes unchanged, and the headers "id" and "eventType" carry the
// event id and type, followed by the row's own headers. Config.Router
// changes that with the options of Debezium's Outbox Event Router.
//
//   - ModeCDC (default) reads committed inserts from PostgreSQL's logical
//     replication (pgoutput), in commit order. It creates its publication
//     and slot if missing, and confirms a position to the slot only after
//     Kafka acknowledged every record of every transaction up to it. After a
//     crash it resumes from the slot: what was not confirmed is sent again,
//     so duplicates are possible and loss is not. Needs wal_level=logical
//     and the REPLICATION privilege.
//   - ModePoll selects the oldest rows (by created_at, the insert time) with
//     FOR UPDATE SKIP LOCKED, publishes them, waits for Kafka's
//     acknowledgement, then deletes them in the same transaction. For
//     databases where logical replication is not allowed. One aggregate's
//     events keep their order when its writers lock the aggregate (its row)
//     before writing events and one poller runs; several pollers may run at
//     once for throughput, at the price of that order.
//
// Relayed rows are deleted (ModeCDC: after confirmation, unless KeepRows;
// by the table's primary key when it is one column, else by the event id).
// Consumers deduplicate by the "id" header; package inbox does.
//
// A second CDC relay on the same slot cannot stream while the first holds
// it: it retries with backoff and takes over when the first stops, a warm
// standby. The first start of a slot also publishes the rows committed
// before the slot existed, read in the snapshot the slot exported, so none
// is skipped; it records that in the table exactly_relay_backfills beside
// the outbox.
//
// # Routing as Debezium's Outbox Event Router
//
// Each option of [Router] is one of Debezium's, and the command exactly
// relay takes it as a flag of the same name. Defaults differ where the
// relay's outbox table (outbox.SchemaSQL) names its columns differently:
//
//	Debezium key = flag name           Router field                  default: ours / Debezium's
//	route.by.field                     RouteByField                  aggregate_type / aggregatetype
//	route.topic.regex                  RouteTopicRegex               (?<routedByValue>.*) / same
//	route.topic.replacement            RouteTopicReplacement [1]     ${aggregate_type}.events / outbox.event.${routedByValue}
//	table.field.event.id               FieldEventID                  id / same
//	table.field.event.key              FieldEventKey                 aggregate_id / aggregateid
//	table.field.event.payload          FieldEventPayload             payload / same
//	table.field.event.timestamp        FieldEventTimestamp           none: publish time / none: processing time
//	table.fields.additional.placement  AdditionalFields [2]          none / same
//	route.tombstone.on.empty.payload   TombstoneOnEmptyPayload       false / same
//
//	[1] also Config.TopicReplacement and --topic-replacement, its older names
//	[2] header placement only; ParseAdditionalFields reads Debezium's syntax
//
// Not carried over: table.expand.json.payload (the payload goes out as its
// bytes, so a json column already is JSON), table.field.event.schema.version
// (there are no Connect schemas), table.op.invalid.behavior (the
// publication carries inserts only) and the tracing options. Beyond
// Debezium, the columns event_type and headers, when the table has them,
// add the headers "eventType" and one per key of the JSON object; a bytea
// payload is published as its bytes. The relay reads the columns it needs
// by name, in both modes, and checks them against the catalog when a
// session starts: a missing one ends Run with ErrTableColumns.
//
// # Rows the broker refuses
//
// A broker refuses some records for good, whatever the retries: one larger
// than the topic's max.message.bytes (MESSAGE_TOO_LARGE,
// RECORD_LIST_TOO_LARGE), one whose timestamp lies further from now than
// the topic allows (INVALID_TIMESTAMP), an invalid or corrupt one
// (INVALID_RECORD, CORRUPT_MESSAGE). Such a row goes to
// Config.DeadLetterTopic: its record (key, value, headers) with the
// dead-letter headers exactly.error.reason, ReasonProduction, and
// exactly.error.message, the broker's error; if that topic refuses it too,
// it goes again without its value. The relay then goes on: it confirms its
// position past the row and deletes it as if it were published. Without a
// DeadLetterTopic, Run ends with ErrRowRefused naming the row and the
// broker's error; the row stays in the table and the slot keeps the WAL
// from its transaction on.
//
// A broker refuses a whole batch for one such record, and franz-go fails
// with it every record buffered behind it for the same partition, so the
// errors do not say which row is at fault. The relay publishes the refused
// records again one at a time: one refused alone is at fault. With
// TransactionalID it first aborts the Kafka transaction and publishes all
// its records again in a new one, so read_committed consumers see every
// row once, in order. Without, what Kafka acknowledged stays: ModePoll
// hands franz-go a whole poll before anything is sent, so no record
// overtakes a refused one of its aggregate; in ModeCDC, one produced in the
// instant between the broker's refusal and the relay's learning of it can,
// and if the refused record turns out good the relay publishes the
// overtaking one again after it (a duplicate, counted in
// outbox_relay_republished_rows_total), so that the aggregate's last
// record is its latest row. Setting kgo.ProducerBatchMaxBytes (in
// Config.Kafka) no higher than the topics' max.message.bytes makes
// franz-go refuse a too-large record alone, before it shares a batch.
//
// A topic the producer may not write (TOPIC_AUTHORIZATION_FAILED) or that
// does not exist is no row's fault: every row of it would be refused
// alike, and an ACL or the topic fixes it. Such rows are not dead-lettered;
// the session fails and restarts with backoff until the fix
// (outbox_relay_session_restarts_total counts), holding the rows after.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Mode selects how the relay finds new outbox rows.
type Mode string

const (
	// ModeCDC reads the outbox through logical replication.
	ModeCDC Mode = "cdc"
	// ModePoll polls the outbox table.
	ModePoll Mode = "poll"
)

// Config configures a Relay. Zero values take the documented defaults.
type Config struct {
	// DSN is the PostgreSQL connection string of the database holding the
	// outbox table. Required.
	DSN string
	// Mode is ModeCDC (default) or ModePoll.
	Mode Mode
	// Table is the outbox table (default "outbox"), optionally
	// schema-qualified.
	Table string
	// Router says which columns make the record and how the topic is
	// found, with the options of Debezium's Outbox Event Router. The zero
	// value routes as the package documentation describes.
	Router Router
	// TopicReplacement is the older name of Router.RouteTopicReplacement,
	// kept for compatibility: "${aggregate_type}" in it is replaced by the
	// row's aggregate type. Setting both to different values is an error.
	TopicReplacement string
	// DeadLetterTopic, if set, receives each row the relay cannot route
	// (see Router; e.g. its headers are not a JSON object, or its
	// aggregate type makes a topic name Kafka does not accept): the row's
	// key and payload as far as it has them, its "id" and "eventType"
	// headers, and the dead-letter headers exactly.error.reason
	// (ReasonUnroutable) and exactly.error.message. It also receives each
	// row whose record the broker refuses for good (too large, an invalid
	// timestamp; ReasonProduction, see the package documentation). The
	// relay then goes on, confirms its position and deletes the row as if
	// it were published. Without it, an unroutable row ends Run with
	// ErrRowUnroutable, a refused one with ErrRowRefused, both naming the
	// row, which stays in the table (the slot keeps the WAL from it on).
	DeadLetterTopic string
	// Kafka are the producer's client options; seed brokers at least. The
	// relay keeps kgo's defaults of acks=all and idempotent writes, and
	// lingers 0 (not kgo's 10ms) unless these options say otherwise:
	// records batch up anyway while a request is in flight.
	Kafka []kgo.Opt
	// TransactionalID, if set, publishes through Kafka transactions: the
	// records of one or more whole database transactions commit together,
	// so read_committed consumers never see half of one. Every relay
	// process needs its own id.
	TransactionalID string
	// TransactionInterval bounds how long a Kafka transaction stays open
	// (default 100ms). Only with TransactionalID.
	TransactionInterval time.Duration
	// KeepRows leaves relayed rows in the table (ModeCDC only; the poller
	// must delete what it relayed). Set it too when writers delete their
	// outbox rows in the transaction that inserted them: there is nothing
	// to clean, and the relay would wait for rows that never appear.
	KeepRows bool
	// Slot and Publication name the replication slot and publication
	// (ModeCDC; default "exactly_outbox" both).
	Slot, Publication string
	// StatusInterval is how often the CDC relay confirms its position
	// (default 1s). Shorter means fewer duplicates after a crash.
	StatusInterval time.Duration
	// PollInterval is how long the poller sleeps when the table had fewer
	// rows than BatchSize (default 100ms).
	PollInterval time.Duration
	// BatchSize is how many rows one poll takes (default 1000).
	BatchSize int
	// Registerer receives the relay's metrics (outbox_relay_rows_total,
	// outbox_relay_lag_bytes, outbox_relay_lag_seconds,
	// outbox_relay_publish_latency_seconds,
	// outbox_relay_session_restarts_total, outbox_relay_dead_letters_total,
	// outbox_relay_refused_rows_total,
	// outbox_relay_republished_rows_total, labelled by mode); nil registers
	// nothing. A registry holds one relay of each mode: New refuses a
	// second.
	Registerer prometheus.Registerer
	// Logger receives reconnects and failures; nil logs to
	// slog.Default(). Pass slog.New(slog.DiscardHandler) to silence it.
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.DSN == "" {
		return errors.New("relay: Config.DSN is required")
	}
	if _, err := pgx.ParseConfig(c.DSN); err != nil {
		return fmt.Errorf("relay: DSN: %w", err)
	}
	switch c.Mode {
	case "":
		c.Mode = ModeCDC
	case ModeCDC, ModePoll:
	default:
		return fmt.Errorf("relay: unknown mode %q (want %q or %q)", c.Mode, ModeCDC, ModePoll)
	}
	if c.Table == "" {
		c.Table = "outbox"
	}
	if c.TransactionInterval <= 0 {
		c.TransactionInterval = 100 * time.Millisecond
	}
	if c.Slot == "" {
		c.Slot = "exactly_outbox"
	}
	if c.Publication == "" {
		c.Publication = "exactly_outbox"
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = time.Second
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// defaultMaxBufferedRecords is franz-go's default of MaxBufferedRecords.
const defaultMaxBufferedRecords = 50_000

// Relay publishes outbox rows to Kafka until its context ends.
type Relay struct {
	cfg     Config
	router  *router
	client  *kgo.Client
	metrics *metrics
	log     *slog.Logger
}

// New validates cfg and creates the Kafka producer.
func New(cfg Config) (*Relay, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	rt, err := newRouter(cfg.Router, cfg.TopicReplacement)
	if err != nil {
		return nil, err
	}
	opts := []kgo.Opt{kgo.ProducerLinger(0)}
	if cfg.Mode == ModePoll {
		// A poll's records are all buffered before the first is sent: a
		// batch the broker refuses then fails every later record of its
		// partition, and none overtakes the refused ones.
		opts = append(opts, kgo.ManualFlushing())
		if cfg.BatchSize > defaultMaxBufferedRecords {
			opts = append(opts, kgo.MaxBufferedRecords(cfg.BatchSize))
		}
	}
	opts = append(opts, cfg.Kafka...)
	if cfg.TransactionalID != "" {
		opts = append(opts, kgo.TransactionalID(cfg.TransactionalID))
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("relay: kafka client: %w", err)
	}
	m, err := newMetrics(cfg.Registerer, cfg.Mode)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("relay: register metrics: %w (a registry holds one relay of each mode)", err)
	}
	return &Relay{cfg: cfg, router: rt, client: client, metrics: m, log: cfg.Logger.With("relay", string(cfg.Mode), "table", cfg.Table)}, nil
}

// Run relays until ctx is done, then closes the producer and returns ctx's
// error; a Relay runs once. An outbox table that lacks a column the
// configuration names ends Run at once with ErrTableColumns, and a row the
// broker refuses for good, without a DeadLetterTopic, with ErrRowRefused. Lost
// connections (database or Kafka) and failed publishes end the current
// session without confirming what was not acknowledged; Run logs
// them and starts a new session after a backoff, resuming from the slot
// (ModeCDC) or from the rows still in the table (ModePoll).
func (r *Relay) Run(ctx context.Context) error {
	defer r.client.Close()
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		var err error
		if r.cfg.Mode == ModePoll {
			err = r.runPoll(ctx)
		} else {
			err = r.runCDC(ctx)
		}
		if ctx.Err() != nil {
			r.abortKafkaTransaction()
			return ctx.Err()
		}
		if errors.Is(err, ErrTableColumns) || errors.Is(err, ErrRowRefused) || errors.Is(err, ErrRowUnroutable) {
			r.abortKafkaTransaction()
			return err
		}
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		r.metrics.restarts.Inc()
		r.log.Warn("relay session ended; restarting", "err", err, "backoff", backoff)
		r.abortKafkaTransaction()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// abortKafkaTransaction drops what a failed session left in the producer.
func (r *Relay) abortKafkaTransaction() {
	if r.cfg.TransactionalID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.client.AbortBufferedRecords(ctx); err != nil {
		r.log.Warn("abort buffered records", "err", err)
	}
	if err := r.client.EndTransaction(ctx, kgo.TryAbort); err != nil {
		r.log.Warn("abort kafka transaction", "err", err)
	}
}

// routeRecord builds the Kafka record of row, or, for a row that cannot be
// routed, its dead letter when the relay has a DeadLetterTopic (then
// unroutable is true).
func (r *Relay) routeRecord(row row) (rec *kgo.Record, unroutable bool, err error) {
	rec, err = r.router.record(row)
	if err == nil {
		return rec, false, nil
	}
	if r.cfg.DeadLetterTopic == "" {
		return nil, false, fmt.Errorf("%w: %w", ErrRowUnroutable, err)
	}
	r.log.Warn("outbox row dead-lettered", "id", r.router.eventID(row), "topic", r.cfg.DeadLetterTopic, "err", err)
	return r.router.deadLetter(row, r.cfg.DeadLetterTopic, err), true, nil
}

// ErrRowUnroutable is wrapped by Run's error when an outbox row cannot be
// routed (see Config.DeadLetterTopic) and there is no dead-letter topic:
// the error names the row and why. The row stays in the table; route it
// (fix the row or the router options) or set a dead-letter topic, then run
// the relay again.
var ErrRowUnroutable = errors.New("the outbox row cannot be routed")

// quoteTable quotes a possibly schema-qualified table name.
func quoteTable(name string) string {
	return pgx.Identifier(strings.Split(name, ".")).Sanitize()
}
