package inbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/exactly-go/exactly/internal/wire"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Handler is the effect for one Kafka record, run inside the inbox
// transaction (see Effect).
type Handler func(ctx context.Context, tx pgx.Tx, record *kgo.Record) (response []byte, err error)

// HeaderEventID returns an EventID function that reads the event id from the
// record header name. The outbox relay writes the event id to header "id".
func HeaderEventID(name string) func(*kgo.Record) (string, error) {
	return func(r *kgo.Record) (string, error) {
		for _, h := range r.Headers {
			if h.Key == name && len(h.Value) > 0 {
				return string(h.Value), nil
			}
		}
		return "", fmt.Errorf("record %s/%d@%d has no %q header: %w", r.Topic, r.Partition, r.Offset, name, ErrEmptyEventID)
	}
}

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	// Inbox records processed ids. Required.
	Inbox *Inbox
	// Handler runs the effect of each new event. Handler or BulkHandler is
	// required.
	Handler Handler
	// BulkHandler, instead of Handler, runs the effects of all new events of
	// a batch in one call (records holds each new event once, in order) and
	// returns one response per record: the way to set-based SQL.
	BulkHandler func(ctx context.Context, tx pgx.Tx, records []*kgo.Record) (responses [][]byte, err error)
	// EventID extracts the deduplication key from a record. It must return
	// the same id for every delivery of one event (never derive it from the
	// offset). Default: HeaderEventID("id").
	EventID func(*kgo.Record) (string, error)
	// BatchSize is how many records share one database transaction. 1 (the
	// default) gives one transaction per record; larger batches trade
	// latency and blast radius for throughput.
	BatchSize int
	// OnResult, if set, is called after the database commit for every
	// record, duplicates included, with what the inbox returned.
	OnResult func(record *kgo.Record, result Result)
	// Kafka are the client options: seed brokers, ConsumerGroup and
	// ConsumeTopics at least. The consumer adds DisableAutoCommit and
	// BlockRebalanceOnPoll: offsets are committed only after the database
	// commit, and no rebalance happens between the two.
	Kafka []kgo.Opt
	// DeadLetterTopic, if set, receives each record the inbox cannot
	// handle, and the consumer goes on with the next record. A record
	// without an event id qualifies, and one whose effect fails with an
	// error that is not transient (in a batch, the batch is retried record
	// by record to find it). The dead letter is the original key, value and
	// headers followed by the five dead-letter headers of the exactly
	// package: exactly.HeaderErrorReason (ReasonMissingEventID or
	// ReasonEffectFailed), HeaderErrorMessage, HeaderSourceTopic,
	// HeaderSourcePartition and HeaderSourceOffset. It is written before
	// the record's offset is committed: a crash between the two writes it
	// again. OnResult does not see dead-lettered records. Without a
	// DeadLetterTopic such a record stops Run, its offset left uncommitted.
	DeadLetterTopic string
	// Logger receives retries and commit failures; nil logs to
	// slog.Default(). Pass slog.New(slog.DiscardHandler) to silence it.
	Logger *slog.Logger
}

// Consumer is an idempotent Kafka consumer: it polls records, runs their
// effects through the inbox, and commits their offsets after the database
// transaction committed. A crash between the two redelivers the records,
// which the inbox turns into duplicates: each effect commits once.
type Consumer struct {
	cfg    ConsumerConfig
	client *kgo.Client
	log    *slog.Logger

	// afterDBCommit, when set (tests), runs after each database commit and
	// before the offset commit; returning true stops the consumer there as a
	// crash would, without committing offsets.
	afterDBCommit func(records []*kgo.Record) bool
}

// errCrashed is returned by Run when afterDBCommit simulated a crash.
var errCrashed = errors.New("inbox: consumer stopped between database and offset commit")

// NewConsumer validates cfg and creates the Kafka client.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if cfg.Inbox == nil || (cfg.Handler == nil) == (cfg.BulkHandler == nil) {
		return nil, errors.New("inbox: ConsumerConfig needs Inbox and one of Handler and BulkHandler")
	}
	if cfg.EventID == nil {
		cfg.EventID = HeaderEventID("id")
	}
	if cfg.BatchSize < 1 {
		cfg.BatchSize = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	opts := append(append([]kgo.Opt{}, cfg.Kafka...), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll())
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("inbox: kafka client: %w", err)
	}
	if group, _ := client.OptValue(kgo.ConsumerGroup).(string); group == "" {
		client.Close()
		return nil, errors.New("inbox: the Kafka options need kgo.ConsumerGroup: offsets are committed to a group")
	}
	return &Consumer{cfg: cfg, client: client, log: cfg.Logger.With("consumer_group", cfg.Inbox.group)}, nil
}

// Run consumes until ctx is done or an effect fails with an error that is not
// transient, then closes the Kafka client. Transient database errors (lost
// connection, server restart, serialization failure, deadlock) are retried
// with backoff. It returns ctx's error on cancellation; a failed effect's
// error otherwise, with that record's offset left uncommitted.
func (c *Consumer) Run(ctx context.Context) error {
	// Offsets not committed by now belong to records whose effects may have
	// committed: leaving the group without committing them redelivers them,
	// which the inbox absorbs.
	defer c.client.CloseAllowingRebalance()
	for {
		fetches := c.client.PollRecords(ctx, 10*c.cfg.BatchSize+100)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fetches.IsClientClosed() {
			return errors.New("inbox: kafka client closed")
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			c.log.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
		})
		records := fetches.Records()
		if len(records) == 0 {
			c.client.AllowRebalance()
			continue
		}
		handled, err := c.withoutEventID(ctx, records)
		if err != nil {
			return err
		}
		for start := 0; start < len(handled); start += c.cfg.BatchSize {
			end := min(start+c.cfg.BatchSize, len(handled))
			if err := c.processOrDeadLetter(ctx, handled[start:end]); err != nil {
				return err
			}
		}
		if c.afterDBCommit != nil && c.afterDBCommit(records) {
			return errCrashed
		}
		// A failed offset commit only means redelivery, which the inbox
		// absorbs: log it and go on.
		if err := c.client.CommitRecords(ctx, records...); err != nil && ctx.Err() == nil {
			c.log.Warn("offset commit failed; records will be redelivered", "err", err)
		}
		c.client.AllowRebalance()
	}
}

// The reasons the inbox consumer gives its dead letters.
const (
	// ReasonMissingEventID: EventID found no event id in the record.
	ReasonMissingEventID = "missing-event-id"
	// ReasonEffectFailed: the record's effect failed with an error that is
	// not transient.
	ReasonEffectFailed = "effect-failed"
)

// withoutEventID dead-letters the records EventID finds no id in and
// returns the others; without a DeadLetterTopic the first such record is
// an error.
func (c *Consumer) withoutEventID(ctx context.Context, records []*kgo.Record) ([]*kgo.Record, error) {
	out := records[:0:0]
	for _, r := range records {
		_, err := c.cfg.EventID(r)
		if err == nil {
			out = append(out, r)
			continue
		}
		if c.cfg.DeadLetterTopic == "" {
			return nil, fmt.Errorf("inbox: event id of %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
		}
		if err := c.deadLetter(ctx, r, ReasonMissingEventID, err); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// processOrDeadLetter runs the effects of records; with a DeadLetterTopic,
// a batch that fails for good is retried record by record, and a record
// that fails for good alone is dead-lettered.
func (c *Consumer) processOrDeadLetter(ctx context.Context, records []*kgo.Record) error {
	err := c.processWithRetry(ctx, records)
	if err == nil || c.cfg.DeadLetterTopic == "" || ctx.Err() != nil {
		return err
	}
	if len(records) > 1 {
		for _, r := range records {
			if err := c.processOrDeadLetter(ctx, []*kgo.Record{r}); err != nil {
				return err
			}
		}
		return nil
	}
	return c.deadLetter(ctx, records[0], ReasonEffectFailed, err)
}

// deadLetter writes r, with its headers and the dead-letter headers, to
// the DeadLetterTopic and waits for the broker's acknowledgement.
func (c *Consumer) deadLetter(ctx context.Context, r *kgo.Record, reason string, cause error) error {
	headers := append(slices.Clip(r.Headers),
		kgo.RecordHeader{Key: wire.HeaderErrorReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: wire.HeaderErrorMessage, Value: []byte(cause.Error())},
		kgo.RecordHeader{Key: wire.HeaderSourceTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: wire.HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		kgo.RecordHeader{Key: wire.HeaderSourceOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
	)
	dl := &kgo.Record{Topic: c.cfg.DeadLetterTopic, Key: r.Key, Value: r.Value, Headers: headers, Timestamp: r.Timestamp}
	produceCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.client.ProduceSync(produceCtx, dl).FirstErr(); err != nil {
		return fmt.Errorf("inbox: dead-letter %s/%d@%d to %s: %w", r.Topic, r.Partition, r.Offset, c.cfg.DeadLetterTopic, err)
	}
	c.log.Warn("record dead-lettered", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "reason", reason, "err", cause)
	return nil
}

func (c *Consumer) processWithRetry(ctx context.Context, records []*kgo.Record) error {
	backoff := 50 * time.Millisecond
	for {
		err := c.process(ctx, records)
		if err == nil || ctx.Err() != nil || !Transient(err) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		c.log.Warn("transient database error; retrying", "records", len(records), "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (c *Consumer) process(ctx context.Context, records []*kgo.Record) error {
	ids := make([]string, len(records))
	for i, r := range records {
		id, err := c.cfg.EventID(r)
		if err != nil {
			return fmt.Errorf("inbox: event id of %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
		}
		ids[i] = id
	}
	var results []Result
	var err error
	switch {
	case c.cfg.BulkHandler != nil:
		results, err = c.cfg.Inbox.ProcessBulk(ctx, ids, func(ctx context.Context, tx pgx.Tx, fresh []int) ([][]byte, error) {
			freshRecords := make([]*kgo.Record, len(fresh))
			for j, i := range fresh {
				freshRecords[j] = records[i]
			}
			return c.cfg.BulkHandler(ctx, tx, freshRecords)
		})
	case len(records) == 1:
		var result Result
		result, err = c.cfg.Inbox.Process(ctx, ids[0], func(ctx context.Context, tx pgx.Tx) ([]byte, error) {
			return c.cfg.Handler(ctx, tx, records[0])
		})
		results = []Result{result}
	default:
		results, err = c.cfg.Inbox.ProcessBatch(ctx, ids, func(ctx context.Context, tx pgx.Tx, i int) ([]byte, error) {
			return c.cfg.Handler(ctx, tx, records[i])
		})
	}
	if err != nil {
		return err
	}
	if c.cfg.OnResult != nil {
		for i, r := range records {
			c.cfg.OnResult(r, results[i])
		}
	}
	return nil
}

// Transient reports whether err is a database error worth retrying: a lost
// or refused connection, a server shutting down or starting, a serialization
// failure or a deadlock. Retrying a transaction whose commit outcome was lost
// is safe with the inbox: if it committed, the retry sees a duplicate.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code[:2] == "08", // connection exception
			pgErr.Code == "40001", pgErr.Code == "40P01", // serialization failure, deadlock
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // shutdown, crash, starting
			return true
		}
		return false
	}
	var netErr net.Error
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		isConnectError(err)
}

func isConnectError(err error) bool {
	var connectErr *pgconn.ConnectError
	return errors.As(err, &connectErr)
}
