package dsl

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// TimeWindows are fixed-size windows in event time, [start, start+Size),
// starting every Advance (Advance == Size: tumbling; smaller: hopping).
// Grace is how long after a window's end its records are still accepted;
// it must be given explicitly (zero is a valid choice: no late records).
// Emit says when the aggregation emits each window: at every update (the
// default) or once, when it closes.
type TimeWindows struct {
	Size, Advance, Grace time.Duration
	Emit                 EmitStrategy
}

// TumblingWindows are adjacent windows of size, accepting records up to
// grace after each window's end, emitted at every update.
func TumblingWindows(size, grace time.Duration) TimeWindows {
	return TimeWindows{Size: size, Advance: size, Grace: grace}
}

// HoppingWindows are windows of size starting every advance, emitted at
// every update.
func HoppingWindows(size, advance, grace time.Duration) TimeWindows {
	return TimeWindows{Size: size, Advance: advance, Grace: grace}
}

func (w TimeWindows) validate() error {
	switch {
	case w.Size.Milliseconds() <= 0:
		return errors.New("window size must be at least 1ms")
	case w.Advance.Milliseconds() <= 0 || w.Advance > w.Size:
		return fmt.Errorf("window advance %v must be between 1ms and the size %v", w.Advance, w.Size)
	}
	return validateGraceAndEmit(w.Grace, w.Emit)
}

// EmitStrategy says when a windowed aggregation (WindowedAggregate,
// SessionAggregate, SlidingAggregate and their counts) emits its windows'
// values, as Kafka Streams' EmitStrategy does; the windows (TimeWindows,
// SessionWindows, SlidingWindows) carry it.
type EmitStrategy int

// The emit strategies.
const (
	// OnWindowUpdate emits every update of a window as it happens, with
	// the window's previous value (Kafka Streams' onWindowUpdate).
	OnWindowUpdate EmitStrategy = iota
	// OnWindowClose emits each window once, with its final value, when it
	// closes: when stream time passes its last instant plus grace (plus
	// the gap, for sessions). A window stream time never closes is never
	// emitted, nor is a session a merge replaced (Kafka Streams'
	// onWindowClose). Unlike KTable.Suppress with UntilWindowCloses, it
	// needs no buffer of its own: the aggregation's store keeps each
	// window until it closes.
	OnWindowClose
)

// String names the strategy as its constant does.
func (e EmitStrategy) String() string {
	switch e {
	case OnWindowUpdate:
		return "OnWindowUpdate"
	case OnWindowClose:
		return "OnWindowClose"
	}
	return fmt.Sprintf("EmitStrategy(%d)", int(e))
}

func validateGraceAndEmit(grace time.Duration, emit EmitStrategy) error {
	switch {
	case grace < 0:
		return fmt.Errorf("grace %v must not be negative", grace)
	case emit != OnWindowUpdate && emit != OnWindowClose:
		return fmt.Errorf("unknown emit strategy %d: use OnWindowUpdate or OnWindowClose", emit)
	}
	return nil
}

// Windowed is a key within one window [Start, End): End is one
// millisecond after the window's last instant (for a session, after its
// last record; for a sliding window, after the record that ends it).
type Windowed[K any] struct {
	Key        K
	Start, End time.Time
}

// lastMs is the window's last instant in epoch milliseconds; suppression
// uses it to tell when the window closes.
func (w Windowed[K]) lastMs() int64 { return w.End.UnixMilli() - 1 }

// windowedKey is a Windowed key of any key type.
type windowedKey interface{ lastMs() int64 }

// ReadableWindowedSerde encodes a Windowed key as text that consumers in
// any language can read: the key's bytes as keys serializes them, "@",
// and the window's start and end in epoch milliseconds separated by "-",
// as in "customer-7@1767268800000-1767269100000". Deserialize splits at
// the last "@", so keys may contain one.
func ReadableWindowedSerde[K any](keys serde.Serde[K]) serde.Serde[Windowed[K]] {
	return serde.Funcs[Windowed[K]]{
		SerializeFunc: func(w Windowed[K]) ([]byte, error) {
			kb, err := keys.Serialize(w.Key)
			if err != nil {
				return nil, err
			}
			return fmt.Appendf(kb, "@%d-%d", w.Start.UnixMilli(), w.End.UnixMilli()), nil
		},
		DeserializeFunc: func(b []byte) (Windowed[K], error) {
			var w Windowed[K]
			at := bytes.LastIndexByte(b, '@')
			if at < 0 {
				return w, fmt.Errorf("%w: windowed key %q has no @", serde.ErrInvalid, b)
			}
			var start, end int64
			if n, err := fmt.Sscanf(string(b[at+1:]), "%d-%d", &start, &end); n != 2 || err != nil {
				return w, fmt.Errorf("%w: windowed key %q does not end in @start-end", serde.ErrInvalid, b)
			}
			k, err := keys.Deserialize(b[:at])
			if err != nil {
				return w, err
			}
			return Windowed[K]{Key: k, Start: time.UnixMilli(start), End: time.UnixMilli(end)}, nil
		},
	}
}

// WindowedSerde encodes a Windowed key as the key's bytes followed by the
// window's start and end in big-endian epoch milliseconds.
func WindowedSerde[K any](keys serde.Serde[K]) serde.Serde[Windowed[K]] {
	return serde.Funcs[Windowed[K]]{
		SerializeFunc: func(w Windowed[K]) ([]byte, error) {
			kb, err := keys.Serialize(w.Key)
			if err != nil {
				return nil, err
			}
			b := binary.BigEndian.AppendUint64(kb, uint64(w.Start.UnixMilli()))
			return binary.BigEndian.AppendUint64(b, uint64(w.End.UnixMilli())), nil
		},
		DeserializeFunc: func(b []byte) (Windowed[K], error) {
			var w Windowed[K]
			if len(b) < 16 {
				return w, fmt.Errorf("%w: windowed key of %d bytes", serde.ErrInvalid, len(b))
			}
			k, err := keys.Deserialize(b[:len(b)-16])
			if err != nil {
				return w, err
			}
			w.Key = k
			w.Start = time.UnixMilli(int64(binary.BigEndian.Uint64(b[len(b)-16:])))
			w.End = time.UnixMilli(int64(binary.BigEndian.Uint64(b[len(b)-8:])))
			return w, nil
		},
	}
}

// windowedAggregation is what the windowed aggregations share: their two
// stores, storeName holding S per window, session or record, and
// storeName-closing, an index of closingKey entries ordered by when each
// closes; their emit strategy; and the counter of late records.
type windowedAggregation[K, S, A any] struct {
	keys    serde.Serde[K]
	emit    EmitStrategy
	names   [2]string
	dropped func()
	ctx     exactly.ProcessorContext[Windowed[K], Change[A]]
	state   store.KeyValueStore[[]byte, S]
	closing store.KeyValueStore[[]byte, []byte]
}

func (p *windowedAggregation[K, S, A]) Init(ctx exactly.ProcessorContext[Windowed[K], Change[A]]) (err error) {
	p.ctx = ctx
	if p.state, err = exactly.GetKeyValueStore[[]byte, S](ctx, p.names[0]); err != nil {
		return err
	}
	p.closing, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.names[1])
	return err
}

func (p *windowedAggregation[K, S, A]) Close() error { return nil }

// update forwards an update of a window, unless the aggregation emits on
// close.
func (p *windowedAggregation[K, S, A]) update(rec exactly.Record[Windowed[K], Change[A]]) {
	if p.emit == OnWindowUpdate {
		p.ctx.Forward(rec)
	}
}

// final forwards the final value of a window of the key kb that closed
// (start and end in epoch milliseconds, end exclusive), when the
// aggregation emits on close.
func (p *windowedAggregation[K, S, A]) final(kb []byte, start, end int64, agg A) error {
	if p.emit != OnWindowClose {
		return nil
	}
	k, err := p.keys.Deserialize(kb)
	if err != nil {
		return err
	}
	p.ctx.Forward(exactly.Record[Windowed[K], Change[A]]{
		Key:   Windowed[K]{Key: k, Start: time.UnixMilli(start), End: time.UnixMilli(end)},
		Value: Change[A]{New: agg, HasNew: true}, Timestamp: time.UnixMilli(end - 1),
	})
	return nil
}

// closeDue calls closed for every entry of the closing index whose time is
// before before, soonest first, and deletes the entry.
func (p *windowedAggregation[K, S, A]) closeDue(before int64, closed func(ck []byte) error) error {
	return closeDue(p.closing, before, closed)
}

// closeDue calls closed for every entry of a closing index (keys starting
// with a big-endian time) whose time is before before, soonest first, and
// deletes the entry.
func closeDue(closing store.KeyValueStore[[]byte, []byte], before int64, closed func(ck []byte) error) error {
	if before <= 0 {
		return nil
	}
	it, err := closing.Range(nil, binary.BigEndian.AppendUint64(nil, uint64(before)))
	if err != nil {
		return err
	}
	var due [][]byte
	for it.Next() {
		due = append(due, bytes.Clone(it.Key()))
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, ck := range due {
		if err := closed(ck); err != nil {
			return err
		}
		if err := closing.Delete(ck); err != nil {
			return err
		}
	}
	return nil
}

// closingKey orders the closing index by time, then start, then key.
func closingKey(time, start int64, key []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(time))
	b = binary.BigEndian.AppendUint64(b, uint64(start))
	return append(b, key...)
}

// keyPrefix is len(key) key: the prefix of a key's entries in a byte
// store, so that keys of any length never interleave.
func keyPrefix(kb []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(kb))), kb...)
}

// splitKeyPrefix splits b, which starts with a keyPrefix, into the key's
// bytes and the rest.
func splitKeyPrefix(b []byte) (kb, rest []byte, err error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return nil, nil, fmt.Errorf("%w: window store key of %d bytes", serde.ErrInvalid, len(b))
	}
	return b[w : w+int(n)], b[w+int(n):], nil
}

// prefixEnd is the first key after every key starting with prefix.
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// addWindowedAggregation adds a windowed aggregation's processor (node
// named after op, made by newProcessor around the shared part) and its
// two stores; invalid, when set, is reported by Build as the error of the
// aggregation what. closeAfter is how
// long after a window's last instant it closes.
func addWindowedAggregation[K, V, S, A any](g KGroupedStream[K, V], op, what, storeName string, invalid error, emit EmitStrategy,
	state serde.Serde[S], values serde.Serde[A], m Materialized, closeAfter int64,
	newProcessor func(windowedAggregation[K, S, A]) exactly.Processor[K, V, Windowed[K], Change[A]]) KTable[Windowed[K], A] {
	s := g.s
	if invalid != nil {
		s.sb.b.AddError(fmt.Errorf("%s %q: %w", what, storeName, invalid))
	}
	name := s.sb.name(op)
	shared := windowedAggregation[K, S, A]{keys: s.keys, emit: emit, names: [2]string{storeName, storeName + "-closing"},
		dropped: s.sb.dropped.WithLabelValues("late").Inc}
	exactly.AddProcessor(s.sb.b, name, func() exactly.Processor[K, V, Windowed[K], Change[A]] { return newProcessor(shared) }, s.node)
	exactly.AddStore(s.sb.b, exactly.Store[[]byte, S]{Name: shared.names[0], Keys: serde.Bytes, Values: state, Persistent: m.Persistent}, name)
	exactly.AddStore(s.sb.b, exactly.Store[[]byte, []byte]{Name: shared.names[1], Keys: serde.Bytes, Values: serde.Bytes, Persistent: m.Persistent}, name)
	return KTable[Windowed[K], A]{sb: s.sb, node: name, keys: WindowedSerde(s.keys), values: values, windowed: true, closeAfter: closeAfter}
}

// windowAggregator keeps one aggregate per (key, window) and a closing
// index ordered by window end; a window is deleted when it closes, so the
// store holds at most the windows of the last size + grace of stream time.
type windowAggregator[K, V, A any] struct {
	windowedAggregation[K, A, A]
	w    TimeWindows
	init func() A
	add  func(K, V, A) A
}

func windowKey(kb []byte, start int64) []byte {
	return binary.BigEndian.AppendUint64(bytes.Clone(kb), uint64(start))
}

func (p *windowAggregator[K, V, A]) Process(rec exactly.Record[K, V]) error {
	kb, err := p.keys.Serialize(rec.Key)
	if err != nil {
		return err
	}
	ts := rec.Timestamp.UnixMilli()
	size, advance := p.w.Size.Milliseconds(), p.w.Advance.Milliseconds()
	closeTime := p.ctx.StreamTime().UnixMilli() - p.w.Grace.Milliseconds()
	for start := ts - ts%advance; start > ts-size && start >= 0; start -= advance {
		end := start + size
		if end <= closeTime {
			p.dropped()
			continue
		}
		key := windowKey(kb, start)
		old, ok, err := p.state.Get(key)
		if err != nil {
			return err
		}
		agg := old
		if !ok {
			agg = p.init()
			if err := p.closing.Put(closingKey(end, start, kb), []byte{}); err != nil {
				return err
			}
		}
		agg = p.add(rec.Key, rec.Value, agg)
		if err := p.state.Put(key, agg); err != nil {
			return err
		}
		p.update(exactly.Record[Windowed[K], Change[A]]{
			Key:   Windowed[K]{Key: rec.Key, Start: time.UnixMilli(start), End: time.UnixMilli(end)},
			Value: Change[A]{Old: old, HasOld: ok, New: agg, HasNew: true}, Timestamp: rec.Timestamp, Headers: rec.Headers,
		})
	}
	// A window closes once stream time reaches its end + grace.
	return p.closeDue(closeTime+1, func(ck []byte) error {
		end, start, kb := int64(binary.BigEndian.Uint64(ck)), int64(binary.BigEndian.Uint64(ck[8:])), ck[16:]
		key := windowKey(kb, start)
		agg, ok, err := p.state.Get(key)
		if err == nil && ok {
			err = p.final(kb, start, end, agg)
		}
		if err != nil {
			return err
		}
		return p.state.Delete(key)
	})
}

// WindowedAggregate folds each key's records per window into a table
// keyed by window (Kafka Streams' windowedBy(TimeWindows).aggregate): each
// record updates every window it falls in. With w.Emit OnWindowUpdate the
// table's updates carry the window's previous value; with OnWindowClose
// each window is emitted once, with its final value, when it closes
// (Suppress with UntilWindowCloses does the same downstream of any
// windowed table). Records whose window has closed (stream time past its
// end + grace) are dropped and counted in
// dropped_records_total{reason="late"}, once per window they miss. The
// stores, storeName and storeName-closing, kept as m says, hold only open
// windows: retention is size + grace. Invalid windows are reported by
// Build.
func WindowedAggregate[K, V, A any](g KGroupedStream[K, V], w TimeWindows, storeName string, init func() A, add func(K, V, A) A,
	values serde.Serde[A], m Materialized) KTable[Windowed[K], A] {
	return addWindowedAggregation(g, "KSTREAM-WINDOWED-AGGREGATE", "windowed aggregate", storeName, w.validate(), w.Emit, values, values, m, w.Grace.Milliseconds(),
		func(shared windowedAggregation[K, A, A]) exactly.Processor[K, V, Windowed[K], Change[A]] {
			return &windowAggregator[K, V, A]{windowedAggregation: shared, w: w, init: init, add: add}
		})
}

// WindowedCount counts each key's records per window, as
// WindowedAggregate folds them.
func WindowedCount[K, V any](g KGroupedStream[K, V], w TimeWindows, storeName string, m Materialized) KTable[Windowed[K], int64] {
	return WindowedAggregate(g, w, storeName, func() int64 { return 0 }, func(_ K, _ V, n int64) int64 { return n + 1 }, serde.Int64, m)
}

// QueryWindows answers an interactive query of a windowed aggregation's
// store (WindowedAggregate's storeName, built with windows w): key's open
// windows that start between from and to inclusive, oldest first, from
// the committed state of the partitions this instance holds (route the
// query to the key's instance as for any other store). Closed windows
// have left the store.
func QueryWindows[K, A any](ctx context.Context, app *exactly.App, storeName string, keys serde.Serde[K], w TimeWindows,
	key K, from, to time.Time) ([]exactly.KeyValue[Windowed[K], A], error) {
	kb, err := keys.Serialize(key)
	if err != nil {
		return nil, err
	}
	entries, err := exactly.QueryRange[[]byte, A](ctx, app, storeName, windowKey(kb, max(from.UnixMilli(), 0)), windowKey(kb, to.UnixMilli()+1), 1<<20)
	if err != nil {
		return nil, err
	}
	out := make([]exactly.KeyValue[Windowed[K], A], 0, len(entries))
	for _, e := range entries {
		if len(e.Key) != len(kb)+8 || !bytes.HasPrefix(e.Key, kb) {
			continue // another key whose bytes begin with these
		}
		start := int64(binary.BigEndian.Uint64(e.Key[len(kb):]))
		out = append(out, exactly.KeyValue[Windowed[K], A]{
			Key:   Windowed[K]{Key: key, Start: time.UnixMilli(start), End: time.UnixMilli(start + w.Size.Milliseconds())},
			Value: e.Value,
		})
	}
	return out, nil
}
