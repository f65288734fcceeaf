package dsl

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
)

// SessionWindows group each key's records into sessions of activity
// (Kafka Streams' SessionWindows): a record within Gap of a session (at
// most Gap before its first record or after its last) joins it, and a
// record that comes within Gap of two sessions merges them. A session
// [first, last] closes once stream time passes last + Gap + Grace: no
// record can extend it any more, and it is final. A record whose own
// session would already be closed (timestamp + Gap + Grace before stream
// time) is late: it is dropped and counted in
// dropped_records_total{reason="late"}. Emit says when the aggregation
// emits each session: at every update (the default) or once, when it
// closes.
type SessionWindows struct {
	Gap, Grace time.Duration
	Emit       EmitStrategy
}

func (w SessionWindows) validate() error {
	if w.Gap.Milliseconds() <= 0 {
		return errors.New("session gap must be at least 1ms")
	}
	return validateGraceAndEmit(w.Grace, w.Emit)
}

// sessionKey orders a key's sessions by their last then first record.
func sessionKey(prefix []byte, start, end int64) []byte {
	b := binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(end))
	return binary.BigEndian.AppendUint64(b, uint64(start))
}

type sessionAggregator[K, V, A any] struct {
	windowedAggregation[K, A, A]
	w     SessionWindows
	init  func() A
	add   func(K, V, A) A
	merge func(K, A, A) A
}

type session[A any] struct {
	key        []byte
	start, end int64
	agg        A
}

func (p *sessionAggregator[K, V, A]) Process(rec exactly.Record[K, V]) error {
	kb, err := p.keys.Serialize(rec.Key)
	if err != nil {
		return err
	}
	ts := rec.Timestamp.UnixMilli()
	gap, grace := p.w.Gap.Milliseconds(), p.w.Grace.Milliseconds()
	st := p.ctx.StreamTime().UnixMilli()
	if ts+gap+grace < st {
		p.dropped()
		return p.closeSessions(st)
	}
	prefix := keyPrefix(kb)
	it, err := p.state.Range(binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(max(ts-gap, 0))), prefixEnd(prefix))
	if err != nil {
		return err
	}
	var merged []session[A]
	for it.Next() {
		k := it.Key()
		end, start := int64(binary.BigEndian.Uint64(k[len(prefix):])), int64(binary.BigEndian.Uint64(k[len(prefix)+8:]))
		if start > ts+gap {
			break
		}
		if end+gap+grace < st {
			continue // closed: final, never merged again
		}
		merged = append(merged, session[A]{key: bytes.Clone(k), start: start, end: end, agg: it.Value()})
	}
	if err := it.Close(); err != nil {
		return err
	}
	start, end := ts, ts
	agg := p.init()
	for _, s := range merged {
		start, end = min(start, s.start), max(end, s.end)
		agg = p.merge(rec.Key, agg, s.agg)
	}
	agg = p.add(rec.Key, rec.Value, agg)
	window := func(start, end int64) Windowed[K] {
		return Windowed[K]{Key: rec.Key, Start: time.UnixMilli(start), End: time.UnixMilli(end + 1)}
	}
	update := Change[A]{New: agg, HasNew: true}
	for _, s := range merged {
		if err := p.state.Delete(s.key); err != nil {
			return err
		}
		if err := p.closing.Delete(closingKey(s.end+gap+grace, 0, s.key)); err != nil {
			return err
		}
		if s.start == start && s.end == end {
			update.Old, update.HasOld = s.agg, true
			continue
		}
		p.update(exactly.Record[Windowed[K], Change[A]]{Key: window(s.start, s.end), Value: Change[A]{Old: s.agg, HasOld: true},
			Timestamp: rec.Timestamp, Headers: rec.Headers})
	}
	key := sessionKey(prefix, start, end)
	if err := p.state.Put(key, agg); err != nil {
		return err
	}
	if err := p.closing.Put(closingKey(end+gap+grace, 0, key), []byte{}); err != nil {
		return err
	}
	p.update(exactly.Record[Windowed[K], Change[A]]{Key: window(start, end), Value: update, Timestamp: rec.Timestamp, Headers: rec.Headers})
	return p.closeSessions(st)
}

// closeSessions forgets the sessions stream time has closed, emitting each
// one's final value when the aggregation emits on close.
func (p *sessionAggregator[K, V, A]) closeSessions(st int64) error {
	return p.closeDue(st, func(ck []byte) error {
		key := ck[16:]
		kb, rest, err := splitKeyPrefix(key)
		if err != nil {
			return err
		}
		agg, ok, err := p.state.Get(key)
		if err == nil && ok && len(rest) == 16 {
			end, start := int64(binary.BigEndian.Uint64(rest)), int64(binary.BigEndian.Uint64(rest[8:]))
			err = p.final(kb, start, end+1, agg)
		}
		if err != nil {
			return err
		}
		return p.state.Delete(key)
	})
}

// SessionAggregate folds each key's records per session into a table
// keyed by session window (Kafka Streams' windowedBy(SessionWindows)
// .aggregate): a session's value starts at init, each record is folded in
// with add, and when a record merges sessions their values are combined
// with merge first (in the order of the sessions). With w.Emit
// OnWindowUpdate, a session that a merge replaces is deleted from the
// table (its deletion flows downstream), and the merged session is
// inserted; with OnWindowClose, each session is emitted once, with its
// final value, when it closes. The stores, storeName and
// storeName-closing, kept as m says, hold only open sessions. Invalid
// windows are reported by Build.
func SessionAggregate[K, V, A any](g KGroupedStream[K, V], w SessionWindows, storeName string, init func() A, add func(K, V, A) A,
	merge func(k K, a, b A) A, values serde.Serde[A], m Materialized) KTable[Windowed[K], A] {
	return addWindowedAggregation(g, "KSTREAM-SESSION-AGGREGATE", "session aggregate", storeName, w.validate(), w.Emit, values, values, m,
		w.Gap.Milliseconds()+w.Grace.Milliseconds(),
		func(shared windowedAggregation[K, A, A]) exactly.Processor[K, V, Windowed[K], Change[A]] {
			return &sessionAggregator[K, V, A]{windowedAggregation: shared, w: w, init: init, add: add, merge: merge}
		})
}

// SessionCount counts each key's records per session, as
// SessionAggregate folds them.
func SessionCount[K, V any](g KGroupedStream[K, V], w SessionWindows, storeName string, m Materialized) KTable[Windowed[K], int64] {
	return SessionAggregate(g, w, storeName, func() int64 { return 0 }, func(_ K, _ V, n int64) int64 { return n + 1 },
		func(_ K, a, b int64) int64 { return a + b }, serde.Int64, m)
}

// QuerySessions answers an interactive query of a session aggregation's
// store (SessionAggregate's storeName): key's open sessions that overlap
// the time range from to to (a session [first, last] with last >= from
// and first <= to), ordered by their last record, from the committed
// state of the partitions this instance holds (route the query to the
// key's instance as for any other store). Closed sessions have left the
// store.
func QuerySessions[K, A any](ctx context.Context, app *exactly.App, storeName string, keys serde.Serde[K],
	key K, from, to time.Time) ([]exactly.KeyValue[Windowed[K], A], error) {
	kb, err := keys.Serialize(key)
	if err != nil {
		return nil, err
	}
	prefix := keyPrefix(kb)
	entries, err := exactly.QueryRange[[]byte, A](ctx, app, storeName, sessionKey(prefix, 0, max(from.UnixMilli(), 0)), prefixEnd(prefix), 1<<20)
	if err != nil {
		return nil, err
	}
	var out []exactly.KeyValue[Windowed[K], A]
	for _, e := range entries {
		rest := e.Key[len(prefix):]
		end, start := int64(binary.BigEndian.Uint64(rest)), int64(binary.BigEndian.Uint64(rest[8:]))
		if start > to.UnixMilli() {
			continue
		}
		out = append(out, exactly.KeyValue[Windowed[K], A]{
			Key: Windowed[K]{Key: key, Start: time.UnixMilli(start), End: time.UnixMilli(end + 1)}, Value: e.Value,
		})
	}
	return out, nil
}
