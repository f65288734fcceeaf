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
type TimeWindows struct {
	Size, Advance, Grace time.Duration
}

// TumblingWindows are adjacent windows of size, accepting records up to
// grace after each window's end.
func TumblingWindows(size, grace time.Duration) TimeWindows {
	return TimeWindows{Size: size, Advance: size, Grace: grace}
}

// HoppingWindows are windows of size starting every advance.
func HoppingWindows(size, advance, grace time.Duration) TimeWindows {
	return TimeWindows{Size: size, Advance: advance, Grace: grace}
}

func (w TimeWindows) validate() error {
	switch {
	case w.Size.Milliseconds() <= 0:
		return errors.New("window size must be at least 1ms")
	case w.Advance.Milliseconds() <= 0 || w.Advance > w.Size:
		return fmt.Errorf("window advance %v must be between 1ms and the size %v", w.Advance, w.Size)
	case w.Grace < 0:
		return fmt.Errorf("grace %v must not be negative", w.Grace)
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

// WindowOptions choose how a windowed aggregation emits.
type WindowOptions struct {
	// EmitFinal emits one result per window, when it closes (stream time
	// reaches its end + grace), instead of every update.
	EmitFinal bool
	// Persistent keeps the window store on disk.
	Persistent bool
}

// windowAggregator keeps one aggregate per (key, window) and a closing
// index ordered by window end; a window is deleted when it closes, so the
// store holds at most the windows of the last size + grace of stream time.
type windowAggregator[K, V, A any] struct {
	w       TimeWindows
	opts    WindowOptions
	keys    serde.Serde[K]
	init    func() A
	add     func(K, V, A) A
	names   [2]string
	dropped func()
	ctx     exactly.ProcessorContext[Windowed[K], Change[A]]
	aggs    store.KeyValueStore[[]byte, A]
	closing store.KeyValueStore[[]byte, []byte]
}

func (p *windowAggregator[K, V, A]) Init(ctx exactly.ProcessorContext[Windowed[K], Change[A]]) (err error) {
	p.ctx = ctx
	if p.aggs, err = exactly.GetKeyValueStore[[]byte, A](ctx, p.names[0]); err != nil {
		return err
	}
	p.closing, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.names[1])
	return err
}

func windowKey(kb []byte, start int64) []byte {
	return binary.BigEndian.AppendUint64(bytes.Clone(kb), uint64(start))
}

func closingKey(end, start int64, kb []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(end))
	b = binary.BigEndian.AppendUint64(b, uint64(start))
	return append(b, kb...)
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
		old, ok, err := p.aggs.Get(key)
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
		if err := p.aggs.Put(key, agg); err != nil {
			return err
		}
		if !p.opts.EmitFinal {
			p.ctx.Forward(exactly.Record[Windowed[K], Change[A]]{
				Key:   Windowed[K]{Key: rec.Key, Start: time.UnixMilli(start), End: time.UnixMilli(end)},
				Value: Change[A]{Old: old, HasOld: ok, New: agg, HasNew: true}, Timestamp: rec.Timestamp, Headers: rec.Headers,
			})
		}
	}
	return p.closeWindows(closeTime)
}

// closeWindows deletes every window whose end + grace stream time has
// reached, emitting each one's final result when asked to.
func (p *windowAggregator[K, V, A]) closeWindows(closeTime int64) error {
	if closeTime < 0 {
		return nil
	}
	it, err := p.closing.Range(nil, binary.BigEndian.AppendUint64(nil, uint64(closeTime)+1))
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
		end, start := int64(binary.BigEndian.Uint64(ck)), int64(binary.BigEndian.Uint64(ck[8:]))
		kb := ck[16:]
		key := windowKey(kb, start)
		if p.opts.EmitFinal {
			agg, ok, err := p.aggs.Get(key)
			if err != nil {
				return err
			}
			k, err := p.keys.Deserialize(kb)
			if err != nil {
				return err
			}
			if ok {
				p.ctx.Forward(exactly.Record[Windowed[K], Change[A]]{
					Key:   Windowed[K]{Key: k, Start: time.UnixMilli(start), End: time.UnixMilli(end)},
					Value: Change[A]{New: agg, HasNew: true}, Timestamp: time.UnixMilli(end - 1),
				})
			}
		}
		if err := p.aggs.Delete(key); err != nil {
			return err
		}
		if err := p.closing.Delete(ck); err != nil {
			return err
		}
	}
	return nil
}

func (p *windowAggregator[K, V, A]) Close() error { return nil }

// WindowedAggregate folds each key's records per window into a table
// keyed by window (Kafka Streams' windowedBy(...).aggregate): each record
// updates every window it falls in, and the table's updates carry the
// window's previous value. Records whose window has closed (stream time
// past its end + grace) are dropped and counted in
// dropped_records_total{reason="late"}, once per window they miss. The
// stores (storeName and storeName-closing) keep only open windows:
// retention is size + grace. With opts.EmitFinal, each window is emitted
// once, when it closes; Suppress with UntilWindowCloses does the same
// downstream of any windowed table. Invalid windows are reported by Build.
func WindowedAggregate[K, V, A any](g KGroupedStream[K, V], w TimeWindows, storeName string, init func() A, add func(K, V, A) A, values serde.Serde[A], opts WindowOptions) KTable[Windowed[K], A] {
	s := g.s
	if err := w.validate(); err != nil {
		s.sb.b.AddError(fmt.Errorf("windowed aggregate %q: %w", storeName, err))
	}
	name := s.sb.name("KSTREAM-WINDOWED-AGGREGATE")
	names := [2]string{storeName, storeName + "-closing"}
	dropped := s.sb.dropped.WithLabelValues("late").Inc
	exactly.AddProcessor(s.sb.b, name, func() exactly.Processor[K, V, Windowed[K], Change[A]] {
		return &windowAggregator[K, V, A]{w: w, opts: opts, keys: s.keys, init: init, add: add, names: names, dropped: dropped}
	}, s.node)
	exactly.AddStore(s.sb.b, exactly.Store[[]byte, A]{Name: names[0], Keys: serde.Bytes, Values: values, Persistent: opts.Persistent}, name)
	exactly.AddStore(s.sb.b, exactly.Store[[]byte, []byte]{Name: names[1], Keys: serde.Bytes, Values: serde.Bytes, Persistent: opts.Persistent}, name)
	return KTable[Windowed[K], A]{sb: s.sb, node: name, keys: WindowedSerde(s.keys), values: values, closeAfter: w.Grace.Milliseconds(), windowed: true}
}

// WindowedCount counts each key's records per window.
func WindowedCount[K, V any](g KGroupedStream[K, V], w TimeWindows, storeName string, opts WindowOptions) KTable[Windowed[K], int64] {
	return WindowedAggregate(g, w, storeName, func() int64 { return 0 }, func(_ K, _ V, n int64) int64 { return n + 1 }, serde.Int64, opts)
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
