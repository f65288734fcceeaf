package dsl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// SlidingWindows are windows of a fixed length, TimeDifference, that
// slide with the records (Kafka Streams' SlidingWindows): every distinct
// set of a key's records whose timestamps lie within TimeDifference of
// each other is one window. The windows are those ending at a record,
// [t - TimeDifference, t] for each record at t, and those starting just
// after a record, [t + 1, t + 1 + TimeDifference], when they hold any
// record (a window of both kinds is one window). A
// window [start, last] closes once stream time passes last + Grace. A
// record that no open window could hold (its timestamp + 1 +
// TimeDifference + Grace before stream time) is late: it is dropped and
// counted in dropped_records_total{reason="late"}.
type SlidingWindows struct {
	TimeDifference, Grace time.Duration
}

func (w SlidingWindows) validate() error {
	switch {
	case w.TimeDifference.Milliseconds() <= 0:
		return errors.New("sliding window time difference must be at least 1ms")
	case w.Grace < 0:
		return fmt.Errorf("grace %v must not be negative", w.Grace)
	}
	return nil
}

// slidingRecord is one record a sliding aggregation keeps.
type slidingRecord struct {
	ts    int64
	value []byte
}

type slidingAggregator[K, V, A any] struct {
	w       SlidingWindows
	keys    serde.Serde[K]
	values  serde.Serde[V]
	init    func() A
	add     func(K, V, A) A
	names   [2]string // records, closing index
	dropped func()
	ctx     exactly.ProcessorContext[Windowed[K], Change[A]]
	records store.KeyValueStore[[]byte, []byte]
	closing store.KeyValueStore[[]byte, []byte]
}

func (p *slidingAggregator[K, V, A]) Init(ctx exactly.ProcessorContext[Windowed[K], Change[A]]) (err error) {
	p.ctx = ctx
	if p.records, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.names[0]); err != nil {
		return err
	}
	p.closing, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.names[1])
	return err
}

// slidingWindow is [start, last], both inclusive.
type slidingWindow struct{ start, last int64 }

// windowsOf returns the windows a key's records (sorted by time) define.
func windowsOf(recs []slidingRecord, diff int64) map[slidingWindow]bool {
	out := map[slidingWindow]bool{}
	for i, r := range recs {
		out[slidingWindow{r.ts - diff, r.ts}] = true
		for _, later := range recs[i+1:] {
			if later.ts > r.ts {
				if later.ts <= r.ts+1+diff {
					out[slidingWindow{r.ts + 1, r.ts + 1 + diff}] = true
				}
				break
			}
		}
	}
	return out
}

func (p *slidingAggregator[K, V, A]) aggregate(k K, recs []slidingRecord, w slidingWindow) (A, error) {
	agg := p.init()
	for _, r := range recs {
		if r.ts < w.start || r.ts > w.last {
			continue
		}
		v, err := p.values.Deserialize(r.value)
		if err != nil {
			return agg, err
		}
		agg = p.add(k, v, agg)
	}
	return agg, nil
}

func (p *slidingAggregator[K, V, A]) Process(rec exactly.Record[K, V]) error {
	kb, err := p.keys.Serialize(rec.Key)
	if err != nil {
		return err
	}
	vb, err := p.values.Serialize(rec.Value)
	if err != nil {
		return err
	}
	t := rec.Timestamp.UnixMilli()
	diff, grace := p.w.TimeDifference.Milliseconds(), p.w.Grace.Milliseconds()
	st := p.ctx.StreamTime().UnixMilli()
	if t+1+diff+grace < st {
		p.dropped()
		return p.prune(st)
	}
	// The windows that hold t or that t's arrival creates all lie within
	// diff + 1 of it; the records that decide them, within that again.
	prefix := keyPrefix(kb)
	from := binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(max(t-2*diff-2, 0)))
	it, err := p.records.Range(from, binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(t+2*diff+3)))
	if err != nil {
		return err
	}
	var before []slidingRecord
	sameTime := 0
	for it.Next() {
		ts := int64(binary.BigEndian.Uint64(it.Key()[len(prefix):]))
		before = append(before, slidingRecord{ts: ts, value: bytes.Clone(it.Value())})
		if ts == t {
			sameTime++
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	after := append(slices.Clone(before), slidingRecord{ts: t, value: vb})
	slices.SortStableFunc(after, func(a, b slidingRecord) int { return int(a.ts - b.ts) })
	old, now := windowsOf(before, diff), windowsOf(after, diff)
	var changed []slidingWindow
	for w := range now {
		if w.last+grace < st {
			continue // closed: final
		}
		if !old[w] || w.start <= t && t <= w.last {
			changed = append(changed, w)
		}
	}
	slices.SortFunc(changed, func(a, b slidingWindow) int { return int(a.start - b.start) })
	for _, w := range changed {
		var c Change[A]
		if old[w] {
			if c.Old, err = p.aggregate(rec.Key, before, w); err != nil {
				return err
			}
			c.HasOld = true
		}
		if c.New, err = p.aggregate(rec.Key, after, w); err != nil {
			return err
		}
		c.HasNew = true
		p.ctx.Forward(exactly.Record[Windowed[K], Change[A]]{
			Key:   Windowed[K]{Key: rec.Key, Start: time.UnixMilli(w.start), End: time.UnixMilli(w.last + 1)},
			Value: c, Timestamp: rec.Timestamp, Headers: rec.Headers,
		})
	}
	key := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(prefix, uint64(t)), uint64(sameTime))
	if err := p.records.Put(key, vb); err != nil {
		return err
	}
	if err := p.closing.Put(closingKey(t+1+diff+grace, 0, key), []byte{}); err != nil {
		return err
	}
	return p.prune(st)
}

// prune forgets records that only closed windows hold.
func (p *slidingAggregator[K, V, A]) prune(st int64) error {
	if st <= 0 {
		return nil
	}
	due, err := dueKeys(p.closing, st)
	if err != nil {
		return err
	}
	for _, ck := range due {
		if err := p.records.Delete(ck[16:]); err != nil {
			return err
		}
		if err := p.closing.Delete(ck); err != nil {
			return err
		}
	}
	return nil
}

func (p *slidingAggregator[K, V, A]) Close() error { return nil }

// SlidingAggregate folds each key's records per sliding window into a
// table keyed by window (Kafka Streams' windowedBy(SlidingWindows)
// .aggregate): each record updates every open window that holds it and
// inserts the windows its arrival creates, each window's value being the
// fold, from init, of the records it holds in time order. It keeps each
// key's records of the last 2·TimeDifference + Grace of stream time in
// its stores (storeName, storeName-closing) and recomputes the windows
// around each record from them. Invalid windows are reported by Build;
// Suppress with UntilWindowCloses emits each window once, when it closes.
func SlidingAggregate[K, V, A any](g KGroupedStream[K, V], w SlidingWindows, storeName string, init func() A, add func(K, V, A) A,
	values serde.Serde[A], m Materialized) KTable[Windowed[K], A] {
	s := g.s
	if err := w.validate(); err != nil {
		s.sb.b.AddError(fmt.Errorf("sliding aggregate %q: %w", storeName, err))
	}
	name := s.sb.name("KSTREAM-SLIDING-AGGREGATE")
	names := [2]string{storeName, storeName + "-closing"}
	dropped := s.sb.dropped.WithLabelValues("late").Inc
	exactly.AddProcessor(s.sb.b, name, func() exactly.Processor[K, V, Windowed[K], Change[A]] {
		return &slidingAggregator[K, V, A]{w: w, keys: s.keys, values: s.values, init: init, add: add, names: names, dropped: dropped}
	}, s.node)
	for _, n := range names {
		exactly.AddStore(s.sb.b, exactly.Store[[]byte, []byte]{Name: n, Keys: serde.Bytes, Values: serde.Bytes, Persistent: m.Persistent}, name)
	}
	return KTable[Windowed[K], A]{sb: s.sb, node: name, keys: WindowedSerde(s.keys), values: values, windowed: true, closeAfter: w.Grace.Milliseconds()}
}

// SlidingCount counts each key's records per sliding window.
func SlidingCount[K, V any](g KGroupedStream[K, V], w SlidingWindows, storeName string, m Materialized) KTable[Windowed[K], int64] {
	return SlidingAggregate(g, w, storeName, func() int64 { return 0 }, func(_ K, _ V, n int64) int64 { return n + 1 }, serde.Int64, m)
}
