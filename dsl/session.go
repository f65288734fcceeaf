package dsl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// SessionWindows group each key's records into sessions of activity
// (Kafka Streams' SessionWindows): a record within Gap of a session (at
// most Gap before its first record or after its last) joins it, and a
// record that comes within Gap of two sessions merges them. A session
// [first, last] closes once stream time passes last + Gap + Grace: no
// record can extend it any more, and it is final. A record whose own
// session would already be closed (timestamp + Gap + Grace before stream
// time) is late: it is dropped and counted in
// dropped_records_total{reason="late"}.
type SessionWindows struct {
	Gap, Grace time.Duration
}

func (w SessionWindows) validate() error {
	switch {
	case w.Gap.Milliseconds() <= 0:
		return errors.New("session gap must be at least 1ms")
	case w.Grace < 0:
		return fmt.Errorf("grace %v must not be negative", w.Grace)
	}
	return nil
}

// keyPrefix is len(key) key: the prefix of a key's entries in a byte
// store, so that keys of any length never interleave.
func keyPrefix(kb []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(kb))), kb...)
}

// sessionKey orders a key's sessions by their last then first record.
func sessionKey(prefix []byte, start, end int64) []byte {
	b := binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(end))
	return binary.BigEndian.AppendUint64(b, uint64(start))
}

type sessionAggregator[K, V, A any] struct {
	w       SessionWindows
	keys    serde.Serde[K]
	init    func() A
	add     func(K, V, A) A
	merge   func(K, A, A) A
	names   [2]string // sessions, closing index
	dropped func()
	ctx     exactly.ProcessorContext[Windowed[K], Change[A]]
	aggs    store.KeyValueStore[[]byte, A]
	closing store.KeyValueStore[[]byte, []byte]
}

func (p *sessionAggregator[K, V, A]) Init(ctx exactly.ProcessorContext[Windowed[K], Change[A]]) (err error) {
	p.ctx = ctx
	if p.aggs, err = exactly.GetKeyValueStore[[]byte, A](ctx, p.names[0]); err != nil {
		return err
	}
	p.closing, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.names[1])
	return err
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
	it, err := p.aggs.Range(binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(max(ts-gap, 0))), prefixEnd(prefix))
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
		if err := p.aggs.Delete(s.key); err != nil {
			return err
		}
		if err := p.closing.Delete(closingKey(s.end+gap+grace, 0, s.key)); err != nil {
			return err
		}
		if s.start == start && s.end == end {
			update.Old, update.HasOld = s.agg, true
			continue
		}
		p.ctx.Forward(exactly.Record[Windowed[K], Change[A]]{Key: window(s.start, s.end), Value: Change[A]{Old: s.agg, HasOld: true},
			Timestamp: rec.Timestamp, Headers: rec.Headers})
	}
	key := sessionKey(prefix, start, end)
	if err := p.aggs.Put(key, agg); err != nil {
		return err
	}
	if err := p.closing.Put(closingKey(end+gap+grace, 0, key), []byte{}); err != nil {
		return err
	}
	p.ctx.Forward(exactly.Record[Windowed[K], Change[A]]{Key: window(start, end), Value: update, Timestamp: rec.Timestamp, Headers: rec.Headers})
	return p.closeSessions(st)
}

// closeSessions forgets the sessions stream time has closed.
func (p *sessionAggregator[K, V, A]) closeSessions(st int64) error {
	if st <= 0 {
		return nil
	}
	due, err := dueKeys(p.closing, st)
	if err != nil {
		return err
	}
	for _, ck := range due {
		if err := p.aggs.Delete(ck[16:]); err != nil {
			return err
		}
		if err := p.closing.Delete(ck); err != nil {
			return err
		}
	}
	return nil
}

// dueKeys returns the keys of a closing index (closingKey) whose time is
// before now.
func dueKeys(closing store.KeyValueStore[[]byte, []byte], now int64) ([][]byte, error) {
	it, err := closing.Range(nil, binary.BigEndian.AppendUint64(nil, uint64(now)))
	if err != nil {
		return nil, err
	}
	var due [][]byte
	for it.Next() {
		due = append(due, bytes.Clone(it.Key()))
	}
	return due, it.Close()
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

func (p *sessionAggregator[K, V, A]) Close() error { return nil }

// SessionAggregate folds each key's records per session into a table
// keyed by session window (Kafka Streams' windowedBy(SessionWindows)
// .aggregate): a session's value starts at init, each record is folded in
// with add, and when a record merges sessions their values are combined
// with merge first (in the order of the sessions). A session that a merge
// replaces is deleted from the table (its deletion flows downstream), and
// the merged session is inserted. The stores (storeName and
// storeName-closing) keep only open sessions. Invalid windows are reported
// by Build; Suppress with UntilWindowCloses emits each session once, when
// it is final.
func SessionAggregate[K, V, A any](g KGroupedStream[K, V], w SessionWindows, storeName string, init func() A, add func(K, V, A) A,
	merge func(k K, a, b A) A, values serde.Serde[A], m Materialized) KTable[Windowed[K], A] {
	s := g.s
	if err := w.validate(); err != nil {
		s.sb.b.AddError(fmt.Errorf("session aggregate %q: %w", storeName, err))
	}
	name := s.sb.name("KSTREAM-SESSION-AGGREGATE")
	names := [2]string{storeName, storeName + "-closing"}
	dropped := s.sb.dropped.WithLabelValues("late").Inc
	exactly.AddProcessor(s.sb.b, name, func() exactly.Processor[K, V, Windowed[K], Change[A]] {
		return &sessionAggregator[K, V, A]{w: w, keys: s.keys, init: init, add: add, merge: merge, names: names, dropped: dropped}
	}, s.node)
	exactly.AddStore(s.sb.b, exactly.Store[[]byte, A]{Name: names[0], Keys: serde.Bytes, Values: values, Persistent: m.Persistent}, name)
	exactly.AddStore(s.sb.b, exactly.Store[[]byte, []byte]{Name: names[1], Keys: serde.Bytes, Values: serde.Bytes, Persistent: m.Persistent}, name)
	return KTable[Windowed[K], A]{sb: s.sb, node: name, keys: WindowedSerde(s.keys), values: values,
		windowed: true, closeAfter: w.Gap.Milliseconds() + w.Grace.Milliseconds()}
}

// SessionCount counts each key's records per session.
func SessionCount[K, V any](g KGroupedStream[K, V], w SessionWindows, storeName string, m Materialized) KTable[Windowed[K], int64] {
	return SessionAggregate(g, w, storeName, func() int64 { return 0 }, func(_ K, _ V, n int64) int64 { return n + 1 },
		func(_ K, a, b int64) int64 { return a + b }, serde.Int64, m)
}
