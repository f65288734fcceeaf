package dsl

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// KGroupedStream is a stream grouped by its key, ready to aggregate. Its
// records must already be partitioned by that key (a stream read from a
// topic keyed by it, or re-keyed and written back through a topic).
type KGroupedStream[K, V any] struct{ s KStream[K, V] }

// GroupByKey groups the stream by its current key. After a key change
// (Map, SelectKey, FlatMap, Process) the records first go through a
// repartition topic, so that each key's records meet in one task.
func (s KStream[K, V]) GroupByKey() KGroupedStream[K, V] {
	if s.rekeyed {
		s = s.Repartition(s.sb.name("KSTREAM-AGGREGATE-STATE-STORE"))
	}
	return KGroupedStream[K, V]{s: s}
}

// KTable is a changelog stream read as a table: the latest value per key.
// Its updates flow between table operations as Change records carrying
// the old and the new value, so that a deletion (a tombstone, a record
// with a null value, in the table's topic) removes the key and reaches
// every operation downstream, and an aggregation subtracts what a key
// contributed before.
//
// A table read from a topic (Table) or made by an aggregation is
// materialized in a queryable store; one derived by Filter, TableMapValues
// or a join is computed from its parent's updates and is materialized
// only when asked (Materialize), or when a join needs to read it.
type KTable[K, V any] struct {
	sb     *StreamsBuilder
	node   string // forwards Record[K, Change[V]]
	keys   serde.Serde[K]
	values serde.Serde[V]
	// Store is the name of the store holding the table, for interactive
	// queries; empty when the table is not materialized.
	Store string
	// windowed says the keys are Windowed, each window closing closeAfter
	// milliseconds after its last instant (grace, or gap + grace for
	// sessions): what Suppress with UntilWindowCloses waits for.
	windowed   bool
	closeAfter int64
	// versioned names the store of a versioned table's history, which
	// stream–table joins read as of each record's time.
	versioned string
	history   time.Duration
}

// Node is the name of the table's last node in the topology; it forwards
// Record[K, Change[V]].
func (t KTable[K, V]) Node() string { return t.node }

// Changes is the stream of the table's updates, each with the key's old
// and new value.
func (t KTable[K, V]) Changes() KStream[K, Change[V]] {
	return KStream[K, Change[V]]{sb: t.sb, node: t.node, keys: t.keys, values: ChangeSerde(t.values)}
}

// ToStream is the stream of the table's new values: one record per insert
// or update. Deletions have no value and are not in it; To writes them to
// a topic as tombstones, and Changes carries them.
func (t KTable[K, V]) ToStream() KStream[K, V] {
	return stateless(t.Changes(), "KTABLE-TOSTREAM", t.keys, t.values,
		func(ctx exactly.ProcessorContext[K, V], rec exactly.Record[K, Change[V]]) error {
			if rec.Value.HasNew {
				ctx.Forward(exactly.Record[K, V]{Key: rec.Key, Value: rec.Value.New, Timestamp: rec.Timestamp, Headers: rec.Headers})
			}
			return nil
		})
}

// To writes the table to topic as a changelog: each update as its new
// value, each deletion as a tombstone (a record with a null value), so a
// compacted topic holds the table.
func (t KTable[K, V]) To(topic string) {
	tomb := stateless(t.Changes(), "KTABLE-TOSTREAM", t.keys, optionalSerde(t.values),
		func(ctx exactly.ProcessorContext[K, optional[V]], rec exactly.Record[K, Change[V]]) error {
			ctx.Forward(exactly.Record[K, optional[V]]{Key: rec.Key, Value: optional[V]{Value: rec.Value.New, Present: rec.Value.HasNew},
				Timestamp: rec.Timestamp, Headers: rec.Headers})
			return nil
		})
	tomb.To(topic)
}

// changeOp adds a table operation that maps each change of t to at most
// one change of a table of V2; f returns false to forward nothing.
func changeOp[K, V, V2 any](t KTable[K, V], op string, values serde.Serde[V2], f func(k K, c Change[V]) (Change[V2], bool)) KTable[K, V2] {
	s := stateless(t.Changes(), op, t.keys, ChangeSerde(values),
		func(ctx exactly.ProcessorContext[K, Change[V2]], rec exactly.Record[K, Change[V]]) error {
			if c, ok := f(rec.Key, rec.Value); ok {
				ctx.Forward(exactly.Record[K, Change[V2]]{Key: rec.Key, Value: c, Timestamp: rec.Timestamp, Headers: rec.Headers})
			}
			return nil
		})
	return KTable[K, V2]{sb: t.sb, node: s.node, keys: t.keys, values: values, windowed: t.windowed, closeAfter: t.closeAfter}
}

// Filter is the table of the entries for which keep returns true. An
// entry that stops satisfying keep is deleted from it (its deletion flows
// downstream); keep is applied to old and new values alike.
func (t KTable[K, V]) Filter(keep func(K, V) bool) KTable[K, V] {
	return changeOp(t, "KTABLE-FILTER", t.values, func(k K, c Change[V]) (Change[V], bool) {
		c.HasOld = c.HasOld && keep(k, c.Old)
		c.HasNew = c.HasNew && keep(k, c.New)
		return c, c.HasOld || c.HasNew
	})
}

// TableMapValues is the table whose values are f of t's values (Kafka
// Streams' KTable.mapValues); deletions stay deletions.
func TableMapValues[K, V, V2 any](t KTable[K, V], f func(K, V) V2, values serde.Serde[V2]) KTable[K, V2] {
	return changeOp(t, "KTABLE-MAPVALUES", values, func(k K, c Change[V]) (Change[V2], bool) {
		var out Change[V2]
		if c.HasOld {
			out.Old, out.HasOld = f(k, c.Old), true
		}
		if c.HasNew {
			out.New, out.HasNew = f(k, c.New), true
		}
		return out, true
	})
}

// Materialized chooses how the stores of a table, an aggregation or a
// join are kept; every stateful operation takes one, last. The zero value
// is the default: in memory, logged to its changelog (for a global table:
// in memory, read from its topic at every start).
type Materialized struct {
	// Persistent keeps the store on disk (Pebble) instead of in memory.
	Persistent bool
}

// Materialize keeps the table in the store called storeName, logged to
// its changelog and queryable, and returns the table reading from it. A
// table that already has a store gets a second one.
func (t KTable[K, V]) Materialize(storeName string, m Materialized) KTable[K, V] {
	name := t.sb.name("KTABLE-MATERIALIZE")
	exactly.AddProcessor(t.sb.b, name, func() exactly.Processor[K, Change[V], K, Change[V]] {
		return &materializer[K, V]{store: storeName}
	}, t.node)
	exactly.AddStore(t.sb.b, exactly.Store[K, V]{Name: storeName, Keys: t.keys, Values: t.values, Persistent: m.Persistent}, name)
	t.node, t.Store = name, storeName
	return t
}

// readable returns t materialized, in a store with a generated name if it
// has none, for an operation that reads it.
func (t KTable[K, V]) readable() KTable[K, V] {
	if t.Store != "" {
		return t
	}
	return t.Materialize(t.sb.name("KTABLE-STATE-STORE"), Materialized{})
}

// materializer writes each change into its store and passes it on.
type materializer[K, V any] struct {
	store string
	ctx   exactly.ProcessorContext[K, Change[V]]
	kv    store.KeyValueStore[K, V]
}

func (p *materializer[K, V]) Init(ctx exactly.ProcessorContext[K, Change[V]]) (err error) {
	p.ctx = ctx
	p.kv, err = exactly.GetKeyValueStore[K, V](ctx, p.store)
	return err
}

func (p *materializer[K, V]) Process(rec exactly.Record[K, Change[V]]) error {
	var err error
	if rec.Value.HasNew {
		err = p.kv.Put(rec.Key, rec.Value.New)
	} else {
		err = p.kv.Delete(rec.Key)
	}
	if err != nil {
		return err
	}
	p.ctx.Forward(rec)
	return nil
}

func (p *materializer[K, V]) Close() error { return nil }

type aggregator[K, V, A any] struct {
	store   string
	init    func() A
	add     func(K, V, A) A
	first   func(K, V) A // when set, a key's first record starts the value
	ctx     exactly.ProcessorContext[K, Change[A]]
	current store.KeyValueStore[K, A]
}

func (p *aggregator[K, V, A]) Init(ctx exactly.ProcessorContext[K, Change[A]]) (err error) {
	p.ctx = ctx
	p.current, err = exactly.GetKeyValueStore[K, A](ctx, p.store)
	return err
}

func (p *aggregator[K, V, A]) Process(rec exactly.Record[K, V]) error {
	old, ok, err := p.current.Get(rec.Key)
	if err != nil {
		return err
	}
	var agg A
	switch {
	case !ok && p.first != nil:
		agg = p.first(rec.Key, rec.Value)
	case !ok:
		agg = p.add(rec.Key, rec.Value, p.init())
	default:
		agg = p.add(rec.Key, rec.Value, old)
	}
	if err := p.current.Put(rec.Key, agg); err != nil {
		return err
	}
	p.ctx.Forward(exactly.Record[K, Change[A]]{Key: rec.Key, Value: Change[A]{Old: old, HasOld: ok, New: agg, HasNew: true},
		Timestamp: rec.Timestamp, Headers: rec.Headers})
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
	exactly.AddProcessor(s.sb.b, name, func() exactly.Processor[K, V, K, Change[A]] {
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

// KGroupedTable is a table re-grouped by a new key, ready to aggregate
// with an adder and a subtractor.
type KGroupedTable[K, V any] struct {
	s      KStream[K, Change[V]]
	values serde.Serde[V]
}

// TableGroupBy groups a table's entries by a new key: f maps each entry to
// the key and value it contributes to its group. The changes go through
// the repartition topic <ApplicationID>-<generated name>-repartition
// (Options.ApplicationID is required): an update sends the group it left
// the old value to subtract and the group it joins the new one to add, in
// one record when the group is the same.
func TableGroupBy[K, V, K2, V2 any](t KTable[K, V], f func(K, V) KeyValue[K2, V2], keys serde.Serde[K2], values serde.Serde[V2]) KGroupedTable[K2, V2] {
	s := stateless(t.Changes(), "KTABLE-SELECT", keys, ChangeSerde(values),
		func(ctx exactly.ProcessorContext[K2, Change[V2]], rec exactly.Record[K, Change[V]]) error {
			var old, nw KeyValue[K2, V2]
			if rec.Value.HasOld {
				old = f(rec.Key, rec.Value.Old)
			}
			if rec.Value.HasNew {
				nw = f(rec.Key, rec.Value.New)
			}
			same := false
			if rec.Value.HasOld && rec.Value.HasNew {
				ob, err1 := keys.Serialize(old.Key)
				nb, err2 := keys.Serialize(nw.Key)
				if err1 != nil || err2 != nil {
					return fmt.Errorf("serialize group key: %v", firstErr(err1, err2))
				}
				same = string(ob) == string(nb)
			}
			out := func(k K2, c Change[V2]) {
				ctx.Forward(exactly.Record[K2, Change[V2]]{Key: k, Value: c, Timestamp: rec.Timestamp, Headers: rec.Headers})
			}
			switch {
			case same:
				out(nw.Key, Change[V2]{Old: old.Value, HasOld: true, New: nw.Value, HasNew: true})
			default:
				if rec.Value.HasOld {
					out(old.Key, Change[V2]{Old: old.Value, HasOld: true})
				}
				if rec.Value.HasNew {
					out(nw.Key, Change[V2]{New: nw.Value, HasNew: true})
				}
			}
			return nil
		})
	return KGroupedTable[K2, V2]{s: s.Repartition(t.sb.name("KTABLE-AGGREGATE-STATE-STORE")), values: values}
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

type tableAggregator[K, V, A any] struct {
	store    string
	init     func() A
	first    func(K, V) A // when set, a group's first value starts it (a reduce)
	add, sub func(K, V, A) A
	ctx      exactly.ProcessorContext[K, Change[A]]
	current  store.KeyValueStore[K, A]
}

func (p *tableAggregator[K, V, A]) Init(ctx exactly.ProcessorContext[K, Change[A]]) (err error) {
	p.ctx = ctx
	p.current, err = exactly.GetKeyValueStore[K, A](ctx, p.store)
	return err
}

func (p *tableAggregator[K, V, A]) Process(rec exactly.Record[K, Change[V]]) error {
	old, ok, err := p.current.Get(rec.Key)
	if err != nil {
		return err
	}
	c := rec.Value
	agg := old
	switch {
	case ok:
		if c.HasOld {
			agg = p.sub(rec.Key, c.Old, agg)
		}
		if c.HasNew {
			agg = p.add(rec.Key, c.New, agg)
		}
	case p.first != nil && c.HasNew:
		agg = p.first(rec.Key, c.New)
	case p.first != nil:
		return nil // nothing to subtract from
	default:
		agg = p.init()
		if c.HasNew {
			agg = p.add(rec.Key, c.New, agg)
		}
	}
	if err := p.current.Put(rec.Key, agg); err != nil {
		return err
	}
	p.ctx.Forward(exactly.Record[K, Change[A]]{Key: rec.Key, Value: Change[A]{Old: old, HasOld: ok, New: agg, HasNew: true},
		Timestamp: rec.Timestamp, Headers: rec.Headers})
	return nil
}

func (p *tableAggregator[K, V, A]) Close() error { return nil }

func aggregateTable[K, V, A any](g KGroupedTable[K, V], storeName string, p *tableAggregator[K, V, A], values serde.Serde[A], m Materialized) KTable[K, A] {
	s := g.s
	name := s.sb.name("KTABLE-AGGREGATE")
	p.store = storeName
	exactly.AddProcessor(s.sb.b, name, func() exactly.Processor[K, Change[V], K, Change[A]] {
		c := *p
		return &c
	}, s.node)
	exactly.AddStore(s.sb.b, exactly.Store[K, A]{Name: storeName, Keys: s.keys, Values: values, Persistent: m.Persistent}, name)
	return KTable[K, A]{sb: s.sb, node: name, keys: s.keys, values: values, Store: storeName}
}

// AggregateTable folds each group's entries into a value kept in the
// store called storeName: a group starts at init, an entry joining it is
// folded in with add, one leaving it (deleted, changed, or moved to
// another group) is taken out with subtract, so the value always equals
// the fold of the group's current entries (for add and subtract that
// undo each other). An emptied group keeps its value (init's, for a
// proper subtract).
func AggregateTable[K, V, A any](g KGroupedTable[K, V], storeName string, init func() A, add, subtract func(K, V, A) A,
	values serde.Serde[A], m Materialized) KTable[K, A] {
	return aggregateTable(g, storeName, &tableAggregator[K, V, A]{init: init, add: add, sub: subtract}, values, m)
}

// CountTable counts each group's current entries.
func CountTable[K, V any](g KGroupedTable[K, V], storeName string, m Materialized) KTable[K, int64] {
	return AggregateTable(g, storeName, func() int64 { return 0 },
		func(_ K, _ V, n int64) int64 { return n + 1 }, func(_ K, _ V, n int64) int64 { return n - 1 }, serde.Int64, m)
}

// ReduceTable combines each group's entries: the first entry's value
// starts the group, later ones are folded in with add, and leaving ones
// taken out with subtract.
func ReduceTable[K, V any](g KGroupedTable[K, V], storeName string, add, subtract func(acc, v V) V, m Materialized) KTable[K, V] {
	return aggregateTable(g, storeName, &tableAggregator[K, V, V]{
		first: func(_ K, v V) V { return v },
		add:   func(_ K, v, acc V) V { return add(acc, v) },
		sub:   func(_ K, v, acc V) V { return subtract(acc, v) },
	}, g.values, m)
}
