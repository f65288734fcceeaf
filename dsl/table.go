package dsl

import (
	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// KGroupedStream is a stream grouped by its key, ready to aggregate. Its
// records must already be partitioned by that key (a stream read from a
// topic keyed by it, or re-keyed and written back through a topic).
type KGroupedStream[K, V any] struct{ s KStream[K, V] }

// GroupByKey groups the stream by its current key. After a key change
// (Map, SelectKey, FlatMap) the records first go through a repartition
// topic, so that each key's records meet in one task.
func (s KStream[K, V]) GroupByKey() KGroupedStream[K, V] {
	if s.rekeyed {
		s = s.Repartition(s.sb.name("KSTREAM-AGGREGATE-STATE-STORE"))
	}
	return KGroupedStream[K, V]{s: s}
}

// KTable is a changelog stream read as a table: the latest value per key,
// held in a queryable store.
type KTable[K, V any] struct {
	sb     *StreamsBuilder
	node   string
	keys   serde.Serde[K]
	values serde.Serde[V]
	// Store is the name of the store holding the table, for queries.
	Store string
}

// ToStream is the stream of the table's updates: one record per change.
func (t KTable[K, V]) ToStream() KStream[K, V] {
	return KStream[K, V]{sb: t.sb, node: t.node, keys: t.keys, values: t.values}
}

// Materialized chooses how the store of a table or aggregation is kept;
// the zero value is the default: in memory, logged to its changelog.
type Materialized struct {
	// Persistent keeps the store on disk (Pebble) instead of in memory.
	Persistent bool
}

type aggregator[K, V, A any] struct {
	store   string
	init    func() A
	add     func(K, V, A) A
	first   func(K, V) A // when set, a key's first record starts the value
	ctx     exactly.ProcessorContext[K, A]
	current store.KeyValueStore[K, A]
}

func (p *aggregator[K, V, A]) Init(ctx exactly.ProcessorContext[K, A]) (err error) {
	p.ctx = ctx
	p.current, err = exactly.GetKeyValueStore[K, A](ctx, p.store)
	return err
}

func (p *aggregator[K, V, A]) Process(rec exactly.Record[K, V]) error {
	agg, ok, err := p.current.Get(rec.Key)
	if err != nil {
		return err
	}
	switch {
	case !ok && p.first != nil:
		agg = p.first(rec.Key, rec.Value)
	case !ok:
		agg = p.add(rec.Key, rec.Value, p.init())
	default:
		agg = p.add(rec.Key, rec.Value, agg)
	}
	if err := p.current.Put(rec.Key, agg); err != nil {
		return err
	}
	p.ctx.Forward(exactly.Record[K, A]{Key: rec.Key, Value: agg, Timestamp: rec.Timestamp, Headers: rec.Headers})
	return nil
}

func (p *aggregator[K, V, A]) Close() error { return nil }

// Aggregate folds each key's records into a value, starting from init,
// kept in the store called storeName as m says.
func Aggregate[K, V, A any](g KGroupedStream[K, V], storeName string, init func() A, add func(K, V, A) A, values serde.Serde[A], m Materialized) KTable[K, A] {
	return aggregate(g, storeName, init, add, nil, values, m)
}

func aggregate[K, V, A any](g KGroupedStream[K, V], storeName string, init func() A, add func(K, V, A) A, first func(K, V) A, values serde.Serde[A], m Materialized) KTable[K, A] {
	s := g.s
	name := s.sb.name("KSTREAM-AGGREGATE")
	exactly.AddProcessor(s.sb.b, name, func() exactly.Processor[K, V, K, A] {
		return &aggregator[K, V, A]{store: storeName, init: init, add: add, first: first}
	}, s.node)
	exactly.AddStore(s.sb.b, exactly.Store[K, A]{Name: storeName, Keys: s.keys, Values: values, Persistent: m.Persistent}, name)
	return KTable[K, A]{sb: s.sb, node: name, keys: s.keys, values: values, Store: storeName}
}

// Count counts each key's records.
func Count[K, V any](g KGroupedStream[K, V], storeName string, m Materialized) KTable[K, int64] {
	return Aggregate(g, storeName, func() int64 { return 0 }, func(_ K, _ V, n int64) int64 { return n + 1 }, serde.Int64, m)
}

// Reduce combines each key's records pairwise: the first record's value
// is the start, each later one is folded in with reduce.
func Reduce[K, V any](g KGroupedStream[K, V], storeName string, reduce func(acc, v V) V, m Materialized) KTable[K, V] {
	return aggregate(g, storeName, func() V { var zero V; return zero }, func(_ K, v V, acc V) V { return reduce(acc, v) },
		func(_ K, v V) V { return v }, g.s.values, m)
}

// GroupBy groups the stream by a new key: SelectKey then GroupByKey, so
// the records go through a repartition topic.
func GroupBy[K, V, K2 any](s KStream[K, V], key func(K, V) K2, keys serde.Serde[K2]) KGroupedStream[K2, V] {
	return SelectKey(s, key, keys).GroupByKey()
}
