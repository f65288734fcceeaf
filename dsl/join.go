package dsl

import (
	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// tableSource applies a topic's records to the table's store: a value
// inserts or updates its key, a tombstone deletes it.
type tableSource[K, V any] struct {
	store string
	ctx   exactly.ProcessorContext[K, Change[V]]
	kv    store.KeyValueStore[K, V]
}

func (p *tableSource[K, V]) Init(ctx exactly.ProcessorContext[K, Change[V]]) (err error) {
	p.ctx = ctx
	p.kv, err = exactly.GetKeyValueStore[K, V](ctx, p.store)
	return err
}

func (p *tableSource[K, V]) Process(rec exactly.Record[K, optional[V]]) error {
	old, had, err := p.kv.Get(rec.Key)
	if err != nil {
		return err
	}
	c := Change[V]{Old: old, HasOld: had, New: rec.Value.Value, HasNew: rec.Value.Present}
	switch {
	case c.HasNew:
		err = p.kv.Put(rec.Key, c.New)
	case had:
		err = p.kv.Delete(rec.Key)
	default:
		return nil // deleting an absent key changes nothing
	}
	if err != nil {
		return err
	}
	p.ctx.Forward(exactly.Record[K, Change[V]]{Key: rec.Key, Value: c, Timestamp: rec.Timestamp, Headers: rec.Headers})
	return nil
}

func (p *tableSource[K, V]) Close() error { return nil }

// Table reads a (compacted) topic as a table: the latest value per key,
// materialized in the store called storeName. A tombstone (a record with
// a null value) deletes its key, and the deletion flows to the table's
// downstream operations; a value the serde cannot decode is a
// deserialization error, handled as the builder says.
func Table[K, V any](sb *StreamsBuilder, topic string, keys serde.Serde[K], values serde.Serde[V], storeName string, m Materialized) KTable[K, V] {
	src := StreamFrom(sb, exactly.Source[K, optional[V]]{Topics: []string{topic}, Keys: keys, Values: optionalSerde(values)})
	name := sb.name("KTABLE-SOURCE")
	exactly.AddProcessor(sb.b, name, func() exactly.Processor[K, optional[V], K, Change[V]] { return &tableSource[K, V]{store: storeName} }, src.node)
	exactly.AddStore(sb.b, exactly.Store[K, V]{Name: storeName, Keys: keys, Values: values, Persistent: m.Persistent}, name)
	return KTable[K, V]{sb: sb, node: name, keys: keys, values: values, Store: storeName}
}

type streamTableJoiner[K, V, VT, VR any] struct {
	store string
	left  bool
	join  func(K, V, VT, bool) VR
	ctx   exactly.ProcessorContext[K, VR]
	table store.KeyValueStore[K, VT]
}

func (p *streamTableJoiner[K, V, VT, VR]) Init(ctx exactly.ProcessorContext[K, VR]) (err error) {
	p.ctx = ctx
	p.table, err = exactly.GetKeyValueStore[K, VT](ctx, p.store)
	return err
}

func (p *streamTableJoiner[K, V, VT, VR]) Process(rec exactly.Record[K, V]) error {
	other, found, err := p.table.Get(rec.Key)
	if err != nil {
		return err
	}
	if !found && !p.left {
		return nil
	}
	p.ctx.Forward(exactly.Record[K, VR]{Key: rec.Key, Value: p.join(rec.Key, rec.Value, other, found), Timestamp: rec.Timestamp, Headers: rec.Headers})
	return nil
}

func (p *streamTableJoiner[K, V, VT, VR]) Close() error { return nil }

func streamTableJoin[K, V, VT, VR any](s KStream[K, V], t KTable[K, VT], left bool, join func(K, V, VT, bool) VR, values serde.Serde[VR]) KStream[K, VR] {
	if t.versioned != "" {
		name := s.sb.name("KSTREAM-JOIN")
		exactly.AddProcessor(s.sb.b, name, func() exactly.Processor[K, V, K, VR] {
			return &temporalJoiner[K, V, VT, VR]{store: t.versioned, history: t.history, keys: t.keys, values: t.values, left: left, join: join}
		}, s.node)
		s.sb.b.Connect(name, t.versioned)
		return KStream[K, VR]{sb: s.sb, node: name, keys: s.keys, values: values}
	}
	t = t.readable()
	name := s.sb.name("KSTREAM-JOIN")
	exactly.AddProcessor(s.sb.b, name, func() exactly.Processor[K, V, K, VR] {
		return &streamTableJoiner[K, V, VT, VR]{store: t.Store, left: left, join: join}
	}, s.node)
	s.sb.b.Connect(name, t.Store)
	return KStream[K, VR]{sb: s.sb, node: name, keys: s.keys, values: values}
}

// Join joins each stream record with the table's current value for its
// key; records whose key the table lacks (never had, or deleted) are
// dropped. A table that is not materialized gets a store for the join.
// With a versioned table (VersionedTable), the record joins the value
// valid at its own timestamp instead (a temporal join): none if that time
// is older than the table's history. The stream and the
// table's topic must be co-partitioned: the runtime refuses to start (and
// the test driver to run) when their partition counts differ, naming both.
func Join[K, V, VT, VR any](s KStream[K, V], t KTable[K, VT], join func(K, V, VT) VR, values serde.Serde[VR]) KStream[K, VR] {
	return streamTableJoin(s, t, false, func(k K, v V, vt VT, _ bool) VR { return join(k, v, vt) }, values)
}

// LeftJoin is Join that keeps stream records the table lacks: join gets
// found == false and the zero VT.
func LeftJoin[K, V, VT, VR any](s KStream[K, V], t KTable[K, VT], join func(k K, v V, vt VT, found bool) VR, values serde.Serde[VR]) KStream[K, VR] {
	return streamTableJoin(s, t, true, join, values)
}
