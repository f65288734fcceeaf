package dsl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
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
// counted in dropped_records_total{reason="late"}. Emit says when the
// aggregation emits each window: at every update (the default) or once,
// when it closes.
type SlidingWindows struct {
	TimeDifference, Grace time.Duration
	Emit                  EmitStrategy
}

func (w SlidingWindows) validate() error {
	if w.TimeDifference.Milliseconds() <= 0 {
		return errors.New("sliding window time difference must be at least 1ms")
	}
	return validateGraceAndEmit(w.Grace, w.Emit)
}

// slidingRecord is one record a sliding aggregation keeps.
type slidingRecord struct {
	ts    int64
	value []byte
}

// slidingAggregator keeps each key's records (its state store maps
// keyPrefix, timestamp and a sequence number to the record's value) and
// computes the windows from them. Its closing index holds each record
// until no open window holds it (the entry's key is the record's key)
// and, when it emits on close, each open window until it closes (the
// entry's key is the keyPrefix alone, and its start the window's).
type slidingAggregator[K, V, A any] struct {
	windowedAggregation[K, []byte, A]
	w      SlidingWindows
	values serde.Serde[V]
	init   func() A
	add    func(K, V, A) A
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

// records returns the key's records with timestamps in [from, to), in
// time order, and how many of them are at at.
func (p *slidingAggregator[K, V, A]) records(prefix []byte, from, to, at int64) (recs []slidingRecord, atCount int, err error) {
	it, err := p.state.Range(binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(max(from, 0))),
		binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(max(to, 0))))
	if err != nil {
		return nil, 0, err
	}
	for it.Next() {
		ts := int64(binary.BigEndian.Uint64(it.Key()[len(prefix):]))
		recs = append(recs, slidingRecord{ts: ts, value: bytes.Clone(it.Value())})
		if ts == at {
			atCount++
		}
	}
	return recs, atCount, it.Close()
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
		return p.closeWindows(st)
	}
	// The windows that hold t or that t's arrival creates all lie within
	// diff + 1 of it; the records that decide them, within that again.
	prefix := keyPrefix(kb)
	before, sameTime, err := p.records(prefix, t-2*diff-2, t+2*diff+3, t)
	if err != nil {
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
		if p.emit == OnWindowClose {
			if err := p.closing.Put(closingKey(w.last+grace, w.start, prefix), []byte{}); err != nil {
				return err
			}
			continue
		}
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
		p.update(exactly.Record[Windowed[K], Change[A]]{
			Key:   Windowed[K]{Key: rec.Key, Start: time.UnixMilli(w.start), End: time.UnixMilli(w.last + 1)},
			Value: c, Timestamp: rec.Timestamp, Headers: rec.Headers,
		})
	}
	key := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(prefix, uint64(t)), uint64(sameTime))
	if err := p.state.Put(key, vb); err != nil {
		return err
	}
	if err := p.closing.Put(closingKey(t+1+diff+grace, 0, key), []byte{}); err != nil {
		return err
	}
	return p.closeWindows(st)
}

// closeWindows emits the windows stream time has closed, when the
// aggregation emits on close, and forgets the records only closed windows
// hold. A window closes before any record it holds is forgotten: its
// entry's time, last + grace, is before theirs, t + 1 + diff + grace.
func (p *slidingAggregator[K, V, A]) closeWindows(st int64) error {
	return p.closeDue(st, func(ck []byte) error {
		kb, rest, err := splitKeyPrefix(ck[16:])
		if err != nil {
			return err
		}
		if len(rest) > 0 {
			return p.state.Delete(ck[16:]) // a record
		}
		last := int64(binary.BigEndian.Uint64(ck)) - p.w.Grace.Milliseconds()
		w := slidingWindow{start: int64(binary.BigEndian.Uint64(ck[8:])), last: last}
		recs, _, err := p.records(ck[16:], w.start, w.last+1, 0)
		if err != nil {
			return err
		}
		k, err := p.keys.Deserialize(kb)
		if err != nil {
			return err
		}
		agg, err := p.aggregate(k, recs, w)
		if err != nil {
			return err
		}
		return p.final(kb, w.start, w.last+1, agg)
	})
}

// SlidingAggregate folds each key's records per sliding window into a
// table keyed by window (Kafka Streams' windowedBy(SlidingWindows)
// .aggregate): each window's value is the fold, from init, of the records
// it holds in time order. With w.Emit OnWindowUpdate each record updates
// every open window that holds it and inserts the windows its arrival
// creates; with OnWindowClose each window is emitted once, with its final
// value, when it closes. It keeps each key's records of the last
// 2·TimeDifference + Grace of stream time in its stores (storeName,
// storeName-closing, kept as m says) and recomputes the windows around
// each record from them; as its store holds records, not windows,
// QueryWindows does not read it. Invalid windows are reported by Build.
func SlidingAggregate[K, V, A any](g KGroupedStream[K, V], w SlidingWindows, storeName string, init func() A, add func(K, V, A) A,
	values serde.Serde[A], m Materialized) KTable[Windowed[K], A] {
	recordValues := g.s.values
	return addWindowedAggregation(g, "KSTREAM-SLIDING-AGGREGATE", "sliding aggregate", storeName, w.validate(), w.Emit, serde.Bytes, values, m,
		w.Grace.Milliseconds(),
		func(shared windowedAggregation[K, []byte, A]) exactly.Processor[K, V, Windowed[K], Change[A]] {
			return &slidingAggregator[K, V, A]{windowedAggregation: shared, w: w, values: recordValues, init: init, add: add}
		})
}

// SlidingCount counts each key's records per sliding window, as
// SlidingAggregate folds them.
func SlidingCount[K, V any](g KGroupedStream[K, V], w SlidingWindows, storeName string, m Materialized) KTable[Windowed[K], int64] {
	return SlidingAggregate(g, w, storeName, func() int64 { return 0 }, func(_ K, _ V, n int64) int64 { return n + 1 }, serde.Int64, m)
}
