// Package sideeffect provides a ready processor that performs an external
// call (an HTTP request to a payment gateway, a message to another system)
// once per event, safely across crashes.
//
// Kafka's transactions end at Kafka: a call made inside a task cannot be
// rolled back when the task's transaction aborts. A process that dies after
// the call and before the commit is redelivered the event, and calls again.
// The processor makes that second call harmless, and everything else exact:
//
//   - Each event gets an idempotency key derived from its identity
//     (Options.IdempotencyKey, see KeyFrom): never random, never from a
//     clock, so the repeated call carries the key of the first and an
//     idempotent external system answers it without acting twice.
//   - After a successful call the key is recorded in a state store and the
//     result forwarded, in the same transaction as the input offset. Once
//     that commits, copies of the event (redeliveries, resends with the same
//     identity) are skipped without a call.
//   - A transient failure (any error not wrapped with Permanent) is retried
//     with exponential backoff inside the task, without recording anything,
//     and the task cannot commit past the event without it: the task is
//     single-threaded, so its commit waits for Process to return (with
//     Concurrency > 1 the event is committed as pending, in a store, and
//     leaves it only with its outcome). When Retry.For runs out, the
//     processor gives up as GiveUp says: dead-letter with reason
//     ReasonRetriesExhausted and go on, or fail the task so that nothing
//     after the event is committed. Calls under way delay a shutdown by as
//     much.
//   - A permanent failure goes to the dead-letter sinks among the
//     processor's children with the error's reason and the original bytes,
//     and its key is recorded, so copies are skipped too.
//
// What remains is the external system's part: exactly one effect per event
// needs it to honour idempotency keys. Against one that ignores them, a
// crash between the call and the commit repeats the effect, and no stream
// processor can prevent that.
//
// # Concurrency
//
// A task is single-threaded, and its transaction commits after Process
// returns. With Concurrency 1 (the default) each event's call runs inside
// Process: a slow external system serializes the partition, and parallelism
// comes from partitions and workers. With Concurrency n > 1, Process only
// checks the key and appends the event to a pending store (in the same
// transaction as its input offset); the pending events are then called
// together, at most n at a time, when MaxBatch of them have gathered or
// when the FlushInterval wall-clock punctuator fires, and their results,
// dead letters and keys are written in input order. Events with equal
// record keys are called one after the other, in input order; others
// overlap. A flush starts no call after Retry.For has passed: the events
// it did not finish stay pending for the next one, so a flush holds the
// task's transaction open for at most Retry.For plus one AttemptTimeout.
// A crash leaves the pending events in the committed store: the task's
// next owner calls them again, with the same keys.
//
// An event forwarded by an upstream punctuator has no input record: if its
// call fails for good it cannot be dead-lettered, and the task fails.
package sideeffect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Call performs the side effect for one event. It may be called more than
// once for the same event (after a transient failure, after a crash), always
// with the same idempotencyKey: pass the key on to the external system. It
// returns a *PermanentError (see Permanent) when retrying cannot help; any
// other error is retried. ctx ends at Retry.AttemptTimeout.
//
// With Concurrency > 1 it is called from several goroutines at once.
type Call[K, V, R any] func(ctx context.Context, idempotencyKey string, key K, value V) (R, error)

// GiveUpAction chooses what happens to an event whose retry budget ran out.
type GiveUpAction int

const (
	// GiveUpDeadLetter sends the event to the dead-letter sinks with
	// reason ReasonRetriesExhausted, without recording its key (a replay of
	// the dead letter calls again, with the same key), and goes on.
	GiveUpDeadLetter GiveUpAction = iota
	// GiveUpFail fails the task with ErrRetriesExhausted: nothing after the
	// event is committed. Within Process it is a processing error (see
	// exactly.Builder.OnProcessingError); within the flush punctuator of
	// Concurrency > 1 it makes the runtime abort the transaction and rejoin,
	// so the pending events are called again after a pause.
	GiveUpFail
)

// Defaults of Options.
const (
	// DefaultFlushInterval is how often, in wall-clock time, pending events
	// are called when Concurrency > 1.
	DefaultFlushInterval = 5 * time.Millisecond
)

// Options configure a side-effect processor.
type Options[K, V, R any] struct {
	// IdempotencyKey returns the event's idempotency key. Required. It must
	// be a pure function of the event's identity (see KeyFrom); an empty
	// key is a processing error.
	IdempotencyKey func(key K, value V) string
	// Call performs the side effect. Required.
	Call Call[K, V, R]
	// Retry bounds the retries of transient failures.
	Retry Retry
	// GiveUp says what happens when the retry budget runs out; default
	// GiveUpDeadLetter.
	GiveUp GiveUpAction
	// KeyStore names the store of recorded keys; default "<processor>-keys".
	// Its changelog topic is "<application.id>-<KeyStore>-changelog".
	KeyStore string
	// KeyTTL, when positive, forgets a key that long in stream time after
	// it was recorded; a copy of the event arriving later calls again (with
	// the same key). Default: keys are kept for ever.
	KeyTTL time.Duration
	// SweepInterval is how often, in stream time, expired keys are deleted
	// when KeyTTL is set; default one minute.
	SweepInterval time.Duration
	// Persistent keeps the stores on disk (Pebble) rather than in memory.
	Persistent bool
	// Concurrency is the most calls one task makes at once; default 1
	// (calls inside Process). See the package documentation.
	Concurrency int
	// MaxBatch is how many pending events make Process call them at once
	// when Concurrency > 1; default 4 × Concurrency. It bounds how long one
	// flush holds the transaction open.
	MaxBatch int
	// FlushInterval is the period of the wall-clock punctuator that calls
	// pending events when Concurrency > 1; default DefaultFlushInterval.
	FlushInterval time.Duration
	// PendingStore names the store of pending events when Concurrency > 1;
	// default "<processor>-pending".
	PendingStore string
	// Keys serializes the record keys of pending events; required when
	// Concurrency > 1.
	Keys serde.Serde[K]
	// Values serializes the values of pending events; required when
	// Concurrency > 1. Both must read back what they wrote.
	Values serde.Serde[V]
	// Registerer receives the processor's metrics, labelled
	// processor=<name>: sideeffect_calls_total (attempts by outcome:
	// success, transient, permanent), sideeffect_retries_total (backoffs
	// after a transient failure), sideeffect_skipped_total (events whose
	// key was already recorded), sideeffect_dead_letters_total (by
	// reason), sideeffect_call_duration_seconds (each attempt) and
	// sideeffect_calls_in_flight. They count what happened, including
	// calls made in a transaction that later aborted (those are exactly
	// the calls the idempotency key protects); the committed truth is in
	// the output and dead-letter topics. Nil registers nothing. Building
	// the topology again against the same registry reuses the series;
	// prometheus.WrapRegistererWith adds labels of the application's own.
	Registerer prometheus.Registerer
}

// Add adds a side-effect processor called name, taking Record[K, V] from
// parents and forwarding Record[K, R] (the input's key, timestamp and
// headers, the call's result) for each event whose call succeeded, and
// declares its stores, connected to it. Connect a dead-letter sink under it
// (exactly.AddDeadLetterSink) to receive permanent failures. Invalid
// options are recorded on b (exactly.Builder.AddError), so Build reports
// them with the topology's other problems.
func Add[K, V, R any](b *exactly.Builder, name string, opts Options[K, V, R], parents ...string) {
	if err := opts.check(name); err != nil {
		b.AddError(err)
		return
	}
	metrics, err := newCollectors(opts.Registerer, name)
	if err != nil {
		b.AddError(fmt.Errorf("sideeffect %q: register metrics: %w", name, err))
		return
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = 1
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 4 * opts.Concurrency
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = time.Minute
	}
	if opts.KeyStore == "" {
		opts.KeyStore = name + "-keys"
	}
	if opts.PendingStore == "" {
		opts.PendingStore = name + "-pending"
	}
	opts.Retry = opts.Retry.withDefaults()
	exactly.AddProcessor(b, name, func() exactly.Processor[K, V, K, R] {
		return &processor[K, V, R]{opts: opts, metrics: metrics}
	}, parents...)
	exactly.AddStore(b, exactly.Store[string, string]{
		Name: opts.KeyStore, Keys: serde.String, Values: serde.String,
		Persistent: opts.Persistent, TTL: opts.KeyTTL,
	}, name)
	if opts.Concurrency > 1 {
		exactly.AddStore(b, exactly.Store[[]byte, []byte]{
			Name: opts.PendingStore, Keys: serde.Bytes, Values: serde.Bytes,
			Persistent: opts.Persistent,
		}, name)
	}
}

// check reports every problem of opts, each naming the processor.
func (opts Options[K, V, R]) check(name string) error {
	var errs []error
	if opts.IdempotencyKey == nil || opts.Call == nil {
		errs = append(errs, fmt.Errorf("sideeffect %q: Options.IdempotencyKey and Options.Call are required", name))
	}
	if opts.KeyTTL < 0 || opts.SweepInterval < 0 || opts.Concurrency < 0 || opts.MaxBatch < 0 || opts.FlushInterval < 0 {
		errs = append(errs, fmt.Errorf("sideeffect %q: durations, Concurrency and MaxBatch must not be negative", name))
	}
	if opts.Concurrency > 1 && (opts.Keys == nil || opts.Values == nil) {
		errs = append(errs, fmt.Errorf("sideeffect %q: Concurrency %d needs Options.Keys and Options.Values to keep pending events in a store", name, opts.Concurrency))
	}
	return errors.Join(errs...)
}

// The values of the key store: what became of the event with that key.
const (
	recordedDone       = "done"
	recordedDeadLetter = "dead-letter: "
)

type processor[K, V, R any] struct {
	opts    Options[K, V, R]
	metrics collectors
	ctx     exactly.ProcessorContext[K, R]
	keys    store.KeyValueStore[string, string]
	pending store.KeyValueStore[[]byte, []byte]

	// callCtx ends when the processor closes, so calls in flight stop.
	callCtx context.Context
	cancel  context.CancelFunc
	// stashed counts events appended since the last flush; only a hint of
	// when to flush (the store is the truth, and an abort may undo them).
	stashed int
}

func (p *processor[K, V, R]) Init(ctx exactly.ProcessorContext[K, R]) error {
	p.ctx = ctx
	keys, err := exactly.GetKeyValueStore[string, string](ctx, p.opts.KeyStore)
	if err != nil {
		return fmt.Errorf("sideeffect %q: %w", ctx.NodeName(), err)
	}
	p.keys = keys
	if p.opts.KeyTTL > 0 {
		if _, err := ctx.Schedule(p.opts.SweepInterval, exactly.StreamTime, p.sweep); err != nil {
			return fmt.Errorf("sideeffect %q: schedule key sweep: %w", ctx.NodeName(), err)
		}
	}
	if p.opts.Concurrency > 1 {
		if p.pending, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.opts.PendingStore); err != nil {
			return fmt.Errorf("sideeffect %q: %w", ctx.NodeName(), err)
		}
		if _, err := ctx.Schedule(p.opts.FlushInterval, exactly.WallClockTime, func(time.Time) error { return p.flush() }); err != nil {
			return fmt.Errorf("sideeffect %q: schedule flush: %w", ctx.NodeName(), err)
		}
	}
	p.callCtx, p.cancel = context.WithCancel(context.Background())
	return nil
}

func (p *processor[K, V, R]) Close() error {
	if p.cancel != nil {
		p.cancel()
	}
	return nil
}

func (p *processor[K, V, R]) sweep(time.Time) error {
	if _, err := p.keys.SweepExpired(); err != nil {
		return fmt.Errorf("sideeffect %q: sweep expired keys: %w", p.ctx.NodeName(), err)
	}
	return nil
}

// recorded reports whether the event with key idemKey was already handled.
func (p *processor[K, V, R]) recorded(idemKey string) (bool, error) {
	_, found, err := p.keys.Get(idemKey)
	if err != nil {
		return false, fmt.Errorf("sideeffect %q: look up key %s: %w", p.ctx.NodeName(), idemKey, err)
	}
	return found, nil
}

func (p *processor[K, V, R]) Process(rec exactly.Record[K, V]) error {
	idemKey := p.opts.IdempotencyKey(rec.Key, rec.Value)
	if idemKey == "" {
		return fmt.Errorf("sideeffect %q: %w", p.ctx.NodeName(), ErrEmptyKey)
	}
	done, err := p.recorded(idemKey)
	if err != nil {
		return err
	}
	if done {
		p.metrics.skipped()
		return nil
	}
	if p.opts.Concurrency > 1 {
		return p.stash(idemKey, rec)
	}
	o := execute(p.callCtx, p, idemKey, rec.Key, rec.Value, time.Time{})
	return p.complete(idemKey, rec, nil, o)
}

// complete records what became of one event, on the task's goroutine, in
// the task's transaction: the key and the forwarded result, or the key and
// the dead letter, or (retries exhausted) a dead letter or a failure.
// source is the record to dead-letter; nil means the one being processed.
func (p *processor[K, V, R]) complete(idemKey string, rec exactly.Record[K, V], source *exactly.SourceRecord, o outcome[R]) error {
	name := p.ctx.NodeName()
	switch {
	case o.err == nil:
		if err := p.keys.Put(idemKey, recordedDone); err != nil {
			return fmt.Errorf("sideeffect %q: record key %s: %w", name, idemKey, err)
		}
		p.ctx.Forward(exactly.Record[K, R]{Key: rec.Key, Value: o.result, Timestamp: rec.Timestamp, Headers: rec.Headers})
		return nil
	case o.permanent != nil:
		if err := p.keys.Put(idemKey, recordedDeadLetter+o.permanent.Reason); err != nil {
			return fmt.Errorf("sideeffect %q: record key %s: %w", name, idemKey, err)
		}
		p.metrics.deadLetter(o.permanent.Reason)
		return p.deadLetter(exactly.DeadLetter{Reason: o.permanent.Reason, Message: o.err.Error(), Source: source})
	case p.opts.GiveUp == GiveUpFail:
		return fmt.Errorf("sideeffect %q: key %s: %w", name, idemKey, o.err)
	default:
		p.metrics.deadLetter(ReasonRetriesExhausted)
		return p.deadLetter(exactly.DeadLetter{Reason: ReasonRetriesExhausted, Message: o.err.Error(), Source: source})
	}
}

func (p *processor[K, V, R]) deadLetter(dl exactly.DeadLetter) error {
	if err := p.ctx.DeadLetter(dl); err != nil {
		return fmt.Errorf("sideeffect %q: dead-letter an event (%s: %s): %w", p.ctx.NodeName(), dl.Reason, dl.Message, err)
	}
	return nil
}
