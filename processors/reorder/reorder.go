// Package reorder provides a ready processor that holds back events until
// they are ready, per key, and releases them in event-time order the moment
// they are.
//
// What makes an event ready is the user's to say, with any combination of:
//
//   - Opens: some event opens its key (an OrderCreated); until it has been
//     released, the key's other events wait.
//   - Sequence: per-key sequence numbers 1, 2, 3, …; an event waits until
//     every lower number has been released, so any gap is held until
//     filled.
//   - Ready: a test over state the application keeps (for instance "the
//     aggregate exists" in the projection's own store), evaluated when an
//     event arrives and again after each release of an event of its key.
//
// Waiting events are kept in a state store, ordered per key by event
// timestamp with the event id as a stable tie-break, so they are released
// in that order; writes to the store commit or abort with the task's
// transaction. An event that has waited BufferTTL of stream time (default
// 24 h) is sent to the dead-letter sinks among the processor's children with
// reason "buffer-ttl-expired" and its original input record: its key, value,
// headers, topic, partition and offset. The processor must therefore have a
// dead-letter sink as a child (exactly.AddDeadLetterSink).
//
// Expiry is indexed by time in the same store, so the stream-time sweep that
// finds expired events costs O(expired).
//
// # Bounded state
//
// The buffer holds only waiting events, each for at most BufferTTL, so its
// size follows the rate of events, not their number. Opens and Sequence
// need more: a key's KeyState (opened, last sequence number released),
// which must hold for as long as the key's events may come, that is for
// ever. Kept by the processor alone, in its store of key states
// (Options.KeyStoreName), it would grow by one entry per key ever seen,
// without bound. But an application that applies the released events
// already records the same facts in its own per-key record (an order's
// aggregate exists once its OrderCreated was applied; it can keep the
// highest sequence number applied), which it keeps for ever anyway. So with
// Options.Recall the processor's store of key states is a cache: a state is
// remembered for KeyStateTTL of stream time (default BufferTTL) after it
// was last written and then forgotten; on a miss the processor asks Recall,
// which reads the application's record, and remembers the answer again if
// the event is released. The store then holds the keys active within the
// TTL, while readiness stays exactly what it would be with an unbounded
// memory. Recall is asked only on a miss: for a key's first event, for the
// events of a key not yet opened, and about once per KeyStateTTL for a key
// that stays active; other events are judged from the small state alone.
// Without Recall, key states are kept for ever.
//
// Ready alone needs no state of the processor's own; it costs a read of
// the application's record for every event instead.
//
// A key's state also bounds how many of its events wait, so that releasing
// an event of a key with none waiting (the usual case) does not read the
// buffer; a state recalled, or written by an earlier version, does not
// know, and the buffer is read once to learn it.
package reorder

import (
	"encoding/binary"
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
	// DefaultBufferTTL is how long, in stream time, an event may wait.
	DefaultBufferTTL = 24 * time.Hour
	// DefaultSweepInterval is how often, in stream time, the processor
	// looks for events that have waited too long.
	DefaultSweepInterval = time.Minute
)

// ReasonExpired is the dead-letter reason of an event that waited longer
// than the buffer TTL.
const ReasonExpired = "buffer-ttl-expired"

// ReadyFunc reports whether an event may be released now. It may read the
// stores connected to the processor; it must not write them.
type ReadyFunc[K, V any] func(key K, value V) (bool, error)

// KeyState is what the processor knows of a key when Opens or Sequence is
// set. The zero KeyState is a key of which nothing has been released.
type KeyState struct {
	// Opened reports whether an event that opens the key has been
	// released.
	Opened bool
	// LastSequence is the highest sequence number released for the key, 0
	// if none. Since a number is released only once every lower one has
	// been, LastSequence+1 is the number that is ready next.
	LastSequence uint64
	// waiting bounds from above the number of the key's events in the
	// buffer, plus one; 0 when the processor does not know it (a state
	// recalled or built by the application). A key known to have none
	// waiting is not looked up in the buffer when one of its events is
	// released.
	waiting uint32
}

func (s KeyState) next() uint64 { return s.LastSequence + 1 }

// knownWaiting returns how many events of the key may wait, and whether
// that is known.
func (s KeyState) knownWaiting() (uint32, bool) { return s.waiting - 1, s.waiting > 0 }

// withWaiting returns s knowing that n events of the key wait. A key of
// which nothing was released and nothing waits keeps the zero state, so
// that it costs no entry in the store of key states.
func (s KeyState) withWaiting(n uint32) KeyState {
	s.waiting = n + 1
	if n == 0 && !s.Opened && s.LastSequence == 0 {
		s.waiting = 0
	}
	return s
}

// RecallFunc returns a key's state as the application's own state records
// it, for a key whose state the processor no longer remembers. It may read
// the stores connected to the processor; it must not write them.
type RecallFunc[K any] func(key K) (KeyState, error)

// Options configure a reorder processor. At least one of Opens, Ready and
// Sequence must be set; an event is ready when every condition set holds.
type Options[K, V any] struct {
	// Keys and Values serialize buffered events into the store. Required.
	Keys   serde.Serde[K]
	Values serde.Serde[V]
	// EventID returns the event's id, the tie-break between events of one
	// key with equal timestamps. Required.
	EventID func(value V) string
	// Opens reports whether an event opens its key. Such an event is ready
	// whether its key is open or not; the key's other events are ready only
	// once an opening event has been released.
	Opens func(value V) bool
	// Ready builds, once per task at Init, a test over the application's
	// state; get the stores it reads from ctx (connect them to this
	// processor with Builder.Connect). A waiting event is tested again
	// after every release of an event of its key, so the test should
	// depend only on what events of that key change.
	Ready func(ctx exactly.ProcessorContext[K, V]) (ReadyFunc[K, V], error)
	// Sequence returns an event's sequence number within its key (1, 2, 3,
	// …) and true, or false if the event has none (it then never waits for
	// a sequence). An event with number n is ready once every number below
	// n has been released; one whose number was already released is ready
	// at once, so nothing is held for ever.
	Sequence func(value V) (seq uint64, ok bool)
	// BufferTTL is how long, in stream time from when it was buffered, an
	// event may wait before it is dead-lettered; default DefaultBufferTTL.
	BufferTTL time.Duration
	// SweepInterval is how often, in stream time, waiting events are
	// checked for expiry; default DefaultSweepInterval. An event expires at
	// the first sweep at or after its expiry.
	SweepInterval time.Duration
	// Recall builds, once per task at Init, a lookup of a key's state
	// (KeyState) in the application's own state, for instance in the
	// aggregate that the released events are applied to. With Recall set,
	// the processor remembers a key's state only for KeyStateTTL after it
	// last wrote it and asks Recall when it finds none, so its store of key
	// states holds the keys active within the TTL instead of every key
	// ever seen. Recall must answer what the processor would have
	// remembered: every released event must be recorded, in the same task
	// and before the processor's next event, by whatever Recall reads
	// (typically a child processor that applies each event it receives).
	// Only with Opens or Sequence.
	Recall func(ctx exactly.ProcessorContext[K, V]) (RecallFunc[K], error)
	// KeyStateTTL is how long, in stream time after it was last written, a
	// key's state is remembered when Recall is set; default BufferTTL. A
	// state read back through Recall for an event that is then released is
	// remembered again. Without Recall, key states are kept for ever: one
	// entry per key ever opened or sequenced.
	KeyStateTTL time.Duration
	// StoreName names the buffer's store; default "<processor>-buffer".
	StoreName string
	// KeyStoreName names the store of key states, declared when Opens or
	// Sequence is set; default "<processor>-keys".
	KeyStoreName string
	// Persistent keeps the store on disk (Pebble) rather than in memory.
	Persistent bool
	// Registerer receives the processor's metrics, labelled
	// processor=<name>: events_buffered_total (events put in the buffer),
	// buffer_size (events waiting, summed over the tasks of this process)
	// and events_expired_total (events dead-lettered after the buffer
	// TTL). The counters count decisions as they are made, including those
	// of a transaction that later aborted and was redone; the gauge is
	// corrected from the store at every change and every sweep, so it
	// converges on the committed size. Nil registers nothing. Building the
	// topology again against the same registry reuses the series;
	// prometheus.WrapRegistererWith adds labels of the application's own.
	Registerer prometheus.Registerer
}

// gauges are the metrics of one reorder processor, shared by its tasks.
type gauges struct {
	buffered prometheus.Counter
	size     prometheus.Gauge
	expired  prometheus.Counter
}

func newGauges(reg prometheus.Registerer, name string) (gauges, error) {
	labels := prometheus.Labels{"processor": name}
	buffered, err1 := metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "events_buffered_total", Help: "Events held back until they were ready.", ConstLabels: labels,
	}))
	size, err2 := metrics.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "buffer_size", Help: "Events waiting in reorder buffers.", ConstLabels: labels,
	}))
	expired, err3 := metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "events_expired_total", Help: "Events dead-lettered after waiting longer than the buffer TTL.", ConstLabels: labels,
	}))
	return gauges{buffered: buffered, size: size, expired: expired}, errors.Join(err1, err2, err3)
}

// Add adds a reorder processor called name, taking Record[K, V] from
// parents and forwarding each record, unchanged, once it is ready, and
// declares its store, connected to it. Connect a dead-letter sink to it for
// expired events. Invalid options are recorded on b
// (exactly.Builder.AddError), so Build reports them with the topology's
// other problems.
func Add[K, V any](b *exactly.Builder, name string, opts Options[K, V], parents ...string) {
	if err := opts.check(name); err != nil {
		b.AddError(err)
		return
	}
	gauges, err := newGauges(opts.Registerer, name)
	if err != nil {
		b.AddError(fmt.Errorf("reorder %q: register metrics: %w", name, err))
		return
	}
	if opts.BufferTTL == 0 {
		opts.BufferTTL = DefaultBufferTTL
	}
	if opts.KeyStateTTL == 0 && opts.Recall != nil {
		opts.KeyStateTTL = opts.BufferTTL
	}
	if opts.SweepInterval == 0 {
		opts.SweepInterval = DefaultSweepInterval
	}
	if opts.StoreName == "" {
		opts.StoreName = name + "-buffer"
	}
	if opts.KeyStoreName == "" {
		opts.KeyStoreName = name + "-keys"
	}
	tracksKeys := opts.Opens != nil || opts.Sequence != nil
	exactly.AddProcessor(b, name, func() exactly.Processor[K, V, K, V] {
		return &processor[K, V]{opts: opts, tracksKeys: tracksKeys, metrics: gauges}
	}, parents...)
	exactly.AddStore(b, exactly.Store[[]byte, []byte]{
		Name:       opts.StoreName,
		Keys:       serde.Bytes,
		Values:     serde.Bytes,
		Persistent: opts.Persistent,
	}, name)
	if tracksKeys {
		exactly.AddStore(b, exactly.Store[[]byte, KeyState]{
			Name:       opts.KeyStoreName,
			Keys:       serde.Bytes,
			Values:     keyStateSerde{},
			Persistent: opts.Persistent,
			TTL:        opts.KeyStateTTL,
		}, name)
	}
}

// check reports every problem of opts, each naming the processor.
func (opts Options[K, V]) check(name string) error {
	var errs []error
	problem := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("reorder %q: "+format, append([]any{name}, args...)...))
	}
	if opts.Keys == nil || opts.Values == nil {
		problem("Options.Keys and Options.Values are required")
	}
	if opts.EventID == nil {
		problem("Options.EventID is required")
	}
	if opts.Opens == nil && opts.Ready == nil && opts.Sequence == nil {
		problem("set at least one of Options.Opens, Options.Ready and Options.Sequence")
	}
	if opts.BufferTTL < 0 || opts.SweepInterval < 0 || opts.KeyStateTTL < 0 {
		problem("BufferTTL, SweepInterval and KeyStateTTL must not be negative")
	}
	if opts.Recall != nil && opts.Opens == nil && opts.Sequence == nil {
		problem("Options.Recall needs Options.Opens or Options.Sequence, whose state it recalls")
	}
	if opts.KeyStateTTL > 0 && opts.Recall == nil {
		problem("Options.KeyStateTTL needs Options.Recall: a key state forgotten without it would hold the key's later events for ever")
	}
	return errors.Join(errs...)
}

type processor[K, V any] struct {
	opts       Options[K, V]
	tracksKeys bool
	metrics    gauges
	ctx        exactly.ProcessorContext[K, V]
	buf        store.KeyValueStore[[]byte, []byte]
	keys       store.KeyValueStore[[]byte, KeyState] // nil unless tracksKeys
	ready      ReadyFunc[K, V]
	recall     RecallFunc[K]
	// contributed is what this instance has added to the Size gauge.
	contributed int64
}

func (p *processor[K, V]) errorf(format string, args ...any) error {
	return fmt.Errorf("reorder %q: "+format, append([]any{p.ctx.NodeName()}, args...)...)
}

func (p *processor[K, V]) Init(ctx exactly.ProcessorContext[K, V]) error {
	p.ctx = ctx
	buf, err := exactly.GetKeyValueStore[[]byte, []byte](ctx, p.opts.StoreName)
	if err != nil {
		return p.errorf("%w", err)
	}
	p.buf = buf
	if p.tracksKeys {
		if p.keys, err = exactly.GetKeyValueStore[[]byte, KeyState](ctx, p.opts.KeyStoreName); err != nil {
			return p.errorf("%w", err)
		}
	}
	if p.opts.Ready != nil {
		if p.ready, err = p.opts.Ready(ctx); err != nil {
			return p.errorf("build readiness test: %w", err)
		}
	}
	if p.opts.Recall != nil {
		if p.recall, err = p.opts.Recall(ctx); err != nil {
			return p.errorf("build key state recall: %w", err)
		}
	}
	if _, err := ctx.Schedule(p.opts.SweepInterval, exactly.StreamTime, p.sweep); err != nil {
		return p.errorf("schedule sweep: %w", err)
	}
	n, err := p.count()
	if err != nil {
		return err
	}
	p.syncGauge(n)
	return nil
}

func (p *processor[K, V]) Close() error {
	p.metrics.size.Sub(float64(p.contributed))
	p.contributed = 0
	return nil
}

func (p *processor[K, V]) Process(rec exactly.Record[K, V]) error {
	kb, err := p.opts.Keys.Serialize(rec.Key)
	if err != nil {
		return p.errorf("serialize key: %w", err)
	}
	st, remembered, err := p.loadState(kb, rec.Key)
	if err != nil {
		return err
	}
	ok, err := p.isReady(st, rec.Key, rec.Value)
	if err != nil {
		return err
	}
	if !ok {
		if err := p.buffer(kb, rec); err != nil {
			return err
		}
		if n, known := st.knownWaiting(); known {
			if err := p.keys.Put(kb, st.withWaiting(n+1)); err != nil {
				return p.errorf("save key state: %w", err)
			}
		}
		return nil
	}
	p.release(&st, rec)
	return p.drain(kb, rec.Key, st, remembered)
}

func (p *processor[K, V]) isReady(st KeyState, key K, value V) (bool, error) {
	if p.opts.Opens != nil && !st.Opened && !p.opts.Opens(value) {
		return false, nil
	}
	if p.opts.Sequence != nil {
		if seq, ok := p.opts.Sequence(value); ok && seq > st.next() {
			return false, nil
		}
	}
	if p.ready != nil {
		ok, err := p.ready(key, value)
		if err != nil {
			return false, p.errorf("readiness test: %w", err)
		}
		return ok, nil
	}
	return true, nil
}

// release forwards rec and records what its release changes for its key.
func (p *processor[K, V]) release(st *KeyState, rec exactly.Record[K, V]) {
	if p.opts.Opens != nil && p.opts.Opens(rec.Value) {
		st.Opened = true
	}
	if p.opts.Sequence != nil {
		if seq, ok := p.opts.Sequence(rec.Value); ok && seq > st.LastSequence {
			st.LastSequence = seq
		}
	}
	p.ctx.Forward(rec)
}

type waiting[V any] struct {
	key   []byte
	entry *entry
	value V
}

// drain releases the key's waiting events that are ready, earliest first,
// testing the rest again after each release, until none is ready; then it
// saves the key's state st unless its store already holds it (remembered).
func (p *processor[K, V]) drain(kb []byte, key K, st, remembered KeyState) error {
	var queue []waiting[V]
	if n, known := st.knownWaiting(); !known || n > 0 {
		var err error
		if queue, err = p.waitingFor(kb); err != nil {
			return err
		}
	}
	released := 0
	for {
		next := -1
		for i, w := range queue {
			ok, err := p.isReady(st, key, w.value)
			if err != nil {
				return err
			}
			if ok {
				next = i
				break
			}
		}
		if next < 0 {
			break
		}
		w := queue[next]
		queue = append(queue[:next], queue[next+1:]...)
		if err := p.remove(w.key, w.entry.expiresAt); err != nil {
			return err
		}
		released++
		p.release(&st, exactly.Record[K, V]{Key: key, Value: w.value, Timestamp: time.UnixMilli(w.entry.timestamp), Headers: w.entry.headers})
	}
	if released > 0 {
		if err := p.addCount(-released); err != nil {
			return err
		}
	}
	if !p.tracksKeys {
		return nil
	}
	if st = st.withWaiting(uint32(len(queue))); st != remembered {
		if err := p.keys.Put(kb, st); err != nil {
			return p.errorf("save key state: %w", err)
		}
	}
	return nil
}

// waitingFor returns the key's waiting events in release order: by event
// timestamp, then event id, then arrival.
func (p *processor[K, V]) waitingFor(kb []byte) ([]waiting[V], error) {
	it, err := p.buf.Prefix(keyPrefix(kb))
	if err != nil {
		return nil, p.errorf("read buffer: %w", err)
	}
	var queue []waiting[V]
	for it.Next() {
		e, err := decodeEntry(it.Value())
		if err != nil {
			it.Close()
			return nil, p.errorf("%w", err)
		}
		v, err := p.opts.Values.Deserialize(e.value)
		if err != nil {
			it.Close()
			return nil, p.errorf("deserialize buffered value: %w", err)
		}
		queue = append(queue, waiting[V]{key: it.Key(), entry: e, value: v})
	}
	if err := it.Close(); err != nil {
		return nil, p.errorf("read buffer: %w", err)
	}
	return queue, nil
}

func (p *processor[K, V]) remove(key []byte, expiresAt int64) error {
	if err := p.buf.Delete(key); err != nil {
		return p.errorf("delete buffered event: %w", err)
	}
	if err := p.buf.Delete(expiryKey(expiresAt, key)); err != nil {
		return p.errorf("delete expiry index entry: %w", err)
	}
	return nil
}

func (p *processor[K, V]) buffer(kb []byte, rec exactly.Record[K, V]) error {
	ts := rec.Timestamp.UnixMilli()
	key := entryKey(kb, ts, p.opts.EventID(rec.Value))
	// Two events with the same key, timestamp and id (duplicates that no
	// dedup removed) both wait, the later after the earlier.
	base := len(key)
	for n := uint32(1); ; n++ {
		_, taken, err := p.buf.Get(key)
		if err != nil {
			return p.errorf("read buffer: %w", err)
		}
		if !taken {
			break
		}
		key = binary.BigEndian.AppendUint32(key[:base], n)
	}
	value, err := p.opts.Values.Serialize(rec.Value)
	if err != nil {
		return p.errorf("serialize value: %w", err)
	}
	now := ts
	if st := p.ctx.StreamTime(); !st.IsZero() {
		now = max(now, st.UnixMilli())
	}
	e := &entry{expiresAt: now + p.opts.BufferTTL.Milliseconds(), timestamp: ts, value: value, headers: rec.Headers}
	if src, ok := p.ctx.Source(); ok {
		e.source = &src
	}
	if err := p.buf.Put(key, e.encode()); err != nil {
		return p.errorf("buffer event: %w", err)
	}
	if err := p.buf.Put(expiryKey(e.expiresAt, key), []byte{}); err != nil {
		return p.errorf("index buffered event: %w", err)
	}
	p.metrics.buffered.Inc()
	return p.addCount(1)
}

// sweep dead-letters the events whose expiry stream time has reached and
// forgets the key states whose TTL has passed.
func (p *processor[K, V]) sweep(now time.Time) error {
	if p.keys != nil {
		if _, err := p.keys.SweepExpired(); err != nil {
			return p.errorf("forget expired key states: %w", err)
		}
	}
	it, err := p.buf.Range([]byte{tagExpiry}, expiryBound(now.UnixMilli()+1))
	if err != nil {
		return p.errorf("read expiry index: %w", err)
	}
	var due [][]byte
	for it.Next() {
		due = append(due, it.Key())
	}
	if err := it.Close(); err != nil {
		return p.errorf("read expiry index: %w", err)
	}
	expired := 0
	for _, ik := range due {
		expiresAt, key, err := parseExpiryKey(ik)
		if err != nil {
			return p.errorf("%w", err)
		}
		if err := p.buf.Delete(ik); err != nil {
			return p.errorf("delete expiry index entry: %w", err)
		}
		raw, ok, err := p.buf.Get(key)
		if err != nil {
			return p.errorf("read buffer: %w", err)
		}
		if !ok {
			continue
		}
		e, err := decodeEntry(raw)
		if err != nil {
			return p.errorf("%w", err)
		}
		if e.expiresAt != expiresAt {
			continue
		}
		if err := p.buf.Delete(key); err != nil {
			return p.errorf("delete buffered event: %w", err)
		}
		if err := p.ctx.DeadLetter(exactly.DeadLetter{
			Reason:  ReasonExpired,
			Message: fmt.Sprintf("event waited %v of stream time in the reorder buffer without becoming ready", p.opts.BufferTTL),
			Source:  p.sourceOf(key, e),
		}); err != nil {
			return p.errorf("dead-letter expired event: %w", err)
		}
		expired++
	}
	p.metrics.expired.Add(float64(expired))
	if expired > 0 {
		return p.addCount(-expired)
	}
	n, err := p.count()
	if err != nil {
		return err
	}
	p.syncGauge(n)
	return nil
}

// sourceOf returns the input record an entry came from; one buffered
// outside of an input record is rebuilt from its serialized key and value,
// with partition and offset -1.
func (p *processor[K, V]) sourceOf(key []byte, e *entry) *exactly.SourceRecord {
	if e.source != nil {
		return e.source
	}
	src := &exactly.SourceRecord{Partition: -1, Offset: -1, Value: e.value, Headers: e.headers, Timestamp: time.UnixMilli(e.timestamp)}
	if n, w := binary.Uvarint(key[1:]); w > 0 && 1+w+int(n) <= len(key) {
		src.Key = key[1+w : 1+w+int(n)]
	}
	return src
}

// loadState returns the key's state and what the store of key states holds
// of it: the same, or the zero KeyState when the state was recalled.
func (p *processor[K, V]) loadState(kb []byte, key K) (st, remembered KeyState, err error) {
	if !p.tracksKeys {
		return KeyState{}, KeyState{}, nil
	}
	st, ok, err := p.keys.Get(kb)
	switch {
	case err != nil:
		return KeyState{}, KeyState{}, p.errorf("read key state: %w", err)
	case ok:
		return st, st, nil
	case p.recall == nil:
		return KeyState{}, KeyState{}, nil
	}
	if st, err = p.recall(key); err != nil {
		return KeyState{}, KeyState{}, p.errorf("recall key state: %w", err)
	}
	return st, KeyState{}, nil
}

// count returns the number of waiting events, kept in the store so that it
// commits and aborts with them.
func (p *processor[K, V]) count() (int64, error) {
	raw, ok, err := p.buf.Get(countKey)
	if err != nil {
		return 0, p.errorf("read buffer size: %w", err)
	}
	if !ok {
		return 0, nil
	}
	if len(raw) != 8 {
		return 0, p.errorf("%w", errors.New("malformed buffer size"))
	}
	return int64(binary.BigEndian.Uint64(raw)), nil
}

func (p *processor[K, V]) addCount(delta int) error {
	n, err := p.count()
	if err != nil {
		return err
	}
	n += int64(delta)
	if err := p.buf.Put(countKey, binary.BigEndian.AppendUint64(nil, uint64(n))); err != nil {
		return p.errorf("save buffer size: %w", err)
	}
	p.syncGauge(n)
	return nil
}

func (p *processor[K, V]) syncGauge(n int64) {
	if n != p.contributed {
		p.metrics.size.Add(float64(n - p.contributed))
		p.contributed = n
	}
}
