// Package dedup provides a ready processor that forwards an event only the
// first time its id is seen.
//
// The ids seen are kept in a state store, so the decision to skip a
// duplicate is part of the same transaction as everything else the task does
// with the record: if the transaction aborts, the id is forgotten together
// with the effects it guarded, and the redelivered record is processed
// again exactly once. Ids are kept for a TTL of stream time (default 7 days)
// and swept by a stream-time punctuator through the store's expiry index, so
// a sweep costs O(ids expired), not O(ids kept).
//
// Each id is stored with a hash of the event's content, so a duplicate whose
// bytes differ from the first copy (a conflicting duplicate, usually a
// producer bug) is counted apart and can be dead-lettered.
//
// Duplicates are found within one task, that is within one partition: events
// that share an id must share a key.
package dedup

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/metrics"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Options.
const (
	// DefaultTTL is how long, in stream time, an id is remembered.
	DefaultTTL = 7 * 24 * time.Hour
	// DefaultSweepInterval is how often, in stream time, expired ids are
	// deleted from the store.
	DefaultSweepInterval = time.Minute
)

// ReasonConflictingDuplicate is the dead-letter reason of a conflicting
// duplicate when Options.DeadLetterConflicts is set.
const ReasonConflictingDuplicate = "conflicting-duplicate"

// ErrEmptyID is returned (as a processing error) for an event whose id is
// empty: such an event cannot be deduplicated and is not forwarded.
var ErrEmptyID = errors.New("dedup: event has an empty id")

// Options configure a dedup processor.
type Options[K, V any] struct {
	// ID returns the event's id. Required. Ids must be unique across keys
	// of one partition; an empty id is a processing error.
	ID func(key K, value V) string
	// Content returns the bytes whose hash tells a conflicting duplicate
	// from an exact one. Nil hashes the original value bytes of the input
	// record being processed, so a re-serialized copy counts as conflicting;
	// set it when the processor runs downstream of a punctuator.
	Content func(value V) ([]byte, error)
	// TTL is how long, in stream time after an id was first seen, a copy
	// of it is still recognised; default DefaultTTL. A copy arriving later
	// is forwarded again.
	TTL time.Duration
	// SweepInterval is how often, in stream time, expired ids are deleted;
	// default DefaultSweepInterval. Expired ids are invisible at once; the
	// sweep only reclaims their space.
	SweepInterval time.Duration
	// StoreName names the store of seen ids; default "<processor>-store".
	// Its changelog topic is "<application.id>-<StoreName>-changelog".
	StoreName string
	// Persistent keeps the store on disk (Pebble) rather than in memory.
	Persistent bool
	// DeadLetterConflicts sends conflicting duplicates to the dead-letter
	// sinks among the processor's children, with reason
	// ReasonConflictingDuplicate, instead of dropping them after counting.
	DeadLetterConflicts bool
	// Registerer receives the processor's counters, labelled
	// processor=<name>: duplicates_skipped_total (every duplicate skipped,
	// conflicting or not) and duplicates_conflicting_total (those whose
	// content differed from the first copy). They count decisions as they
	// are made, including those of a transaction that later aborted and
	// was redone; the committed truth is in the output topics. Nil
	// registers nothing. Building the topology again against the same
	// registry reuses the series; prometheus.WrapRegistererWith adds
	// labels of the application's own.
	Registerer prometheus.Registerer
}

// counters are the metrics of one dedup processor, shared by its tasks.
type counters struct {
	skipped     prometheus.Counter
	conflicting prometheus.Counter
}

func newCounters(reg prometheus.Registerer, name string) (counters, error) {
	labels := prometheus.Labels{"processor": name}
	skipped, err1 := metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "duplicates_skipped_total",
		Help:        "Events skipped because their id had already been processed.",
		ConstLabels: labels,
	}))
	conflicting, err2 := metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "duplicates_conflicting_total",
		Help:        "Skipped duplicates whose content differed from the first copy.",
		ConstLabels: labels,
	}))
	return counters{skipped: skipped, conflicting: conflicting}, errors.Join(err1, err2)
}

// Add adds a dedup processor called name, taking Record[K, V] from parents
// and forwarding the first copy of each event unchanged, and declares its
// store, with TTL, connected to it. Invalid options are recorded on b
// (exactly.Builder.AddError), so Build reports them with the topology's
// other problems.
func Add[K, V any](b *exactly.Builder, name string, opts Options[K, V], parents ...string) {
	if err := opts.check(name); err != nil {
		b.AddError(err)
		return
	}
	counters, err := newCounters(opts.Registerer, name)
	if err != nil {
		b.AddError(fmt.Errorf("dedup %q: register metrics: %w", name, err))
		return
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = DefaultSweepInterval
	}
	if opts.StoreName == "" {
		opts.StoreName = name + "-store"
	}
	exactly.AddProcessor(b, name, func() exactly.Processor[K, V, K, V] {
		return &processor[K, V]{opts: opts, counters: counters}
	}, parents...)
	exactly.AddStore(b, exactly.Store[string, []byte]{
		Name:       opts.StoreName,
		Keys:       serde.String,
		Values:     serde.Bytes,
		Persistent: opts.Persistent,
		TTL:        opts.TTL,
	}, name)
}

// check reports every problem of opts, each naming the processor.
func (opts Options[K, V]) check(name string) error {
	var errs []error
	if opts.ID == nil {
		errs = append(errs, fmt.Errorf("dedup %q: Options.ID is required", name))
	}
	if opts.TTL < 0 || opts.SweepInterval < 0 {
		errs = append(errs, fmt.Errorf("dedup %q: TTL and SweepInterval must not be negative", name))
	}
	return errors.Join(errs...)
}

// contentHashSize is how many bytes of the SHA-256 of an event's content
// are kept per id: enough that unequal contents never collide in practice.
const contentHashSize = 16

type processor[K, V any] struct {
	opts     Options[K, V]
	counters counters
	ctx      exactly.ProcessorContext[K, V]
	seen     store.KeyValueStore[string, []byte]
}

func (p *processor[K, V]) Init(ctx exactly.ProcessorContext[K, V]) error {
	p.ctx = ctx
	seen, err := exactly.GetKeyValueStore[string, []byte](ctx, p.opts.StoreName)
	if err != nil {
		return fmt.Errorf("dedup %q: %w", ctx.NodeName(), err)
	}
	p.seen = seen
	if _, err := ctx.Schedule(p.opts.SweepInterval, exactly.StreamTime, p.sweep); err != nil {
		return fmt.Errorf("dedup %q: schedule sweep: %w", ctx.NodeName(), err)
	}
	return nil
}

func (p *processor[K, V]) sweep(time.Time) error {
	if _, err := p.seen.SweepExpired(); err != nil {
		return fmt.Errorf("dedup %q: sweep expired ids: %w", p.ctx.NodeName(), err)
	}
	return nil
}

func (p *processor[K, V]) Process(rec exactly.Record[K, V]) error {
	id := p.opts.ID(rec.Key, rec.Value)
	if id == "" {
		return fmt.Errorf("dedup %q: %w", p.ctx.NodeName(), ErrEmptyID)
	}
	sum, err := p.contentHash(rec.Value)
	if err != nil {
		return fmt.Errorf("dedup %q: event %s: %w", p.ctx.NodeName(), id, err)
	}
	first, seen, err := p.seen.Get(id)
	if err != nil {
		return fmt.Errorf("dedup %q: look up event %s: %w", p.ctx.NodeName(), id, err)
	}
	if seen {
		p.counters.skipped.Inc()
		if bytes.Equal(first, sum) {
			return nil
		}
		p.counters.conflicting.Inc()
		if !p.opts.DeadLetterConflicts {
			return nil
		}
		return p.ctx.DeadLetter(exactly.DeadLetter{
			Reason:  ReasonConflictingDuplicate,
			Message: fmt.Sprintf("event %s was already processed with different content", id),
		})
	}
	if err := p.seen.Put(id, sum); err != nil {
		return fmt.Errorf("dedup %q: remember event %s: %w", p.ctx.NodeName(), id, err)
	}
	p.ctx.Forward(rec)
	return nil
}

func (p *processor[K, V]) contentHash(value V) ([]byte, error) {
	var content []byte
	if p.opts.Content != nil {
		var err error
		if content, err = p.opts.Content(value); err != nil {
			return nil, fmt.Errorf("content: %w", err)
		}
	} else {
		src, ok := p.ctx.Source()
		if !ok {
			return nil, errors.New("no input record to hash outside of processing one; set Options.Content")
		}
		content = src.Value
	}
	sum := sha256.Sum256(content)
	return sum[:contentHashSize], nil
}

func (p *processor[K, V]) Close() error { return nil }
