package dsl

import (
	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// GlobalKTable is a table of which every instance holds all partitions
// (Kafka Streams' GlobalKTable): a stream joins it through a key it
// extracts from each record, so neither co-partitioning nor a repartition
// is needed. It suits small, slowly changing reference data (products,
// currencies, customers' tiers).
type GlobalKTable[K, V any] struct {
	sb     *StreamsBuilder
	keys   serde.Serde[K]
	values serde.Serde[V]
	// Store is the name of the table's global store.
	Store string
}

// GlobalTable reads topic (usually compacted) as a global table kept in
// the global store called storeName (exactly.AddGlobalStore): every
// instance reads all of topic's partitions to their end, read_committed,
// before any task processes a record, and applies new records while
// running; a tombstone deletes its key. The topic is the table's
// changelog: the store has none of its own. In memory (the default) the
// store is read from the topic's start at every start; with m.Persistent
// it is kept on disk with a checkpoint per partition, and a restart reads
// only the records the topic gained since. The topic must be written
// with keys and values as keys and values serialize them. A value values
// cannot decode fails the record that reads it (a processing error).
func GlobalTable[K, V any](sb *StreamsBuilder, topic string, keys serde.Serde[K], values serde.Serde[V], storeName string, m Materialized) GlobalKTable[K, V] {
	exactly.AddGlobalStore(sb.b, exactly.Store[K, V]{Name: storeName, Keys: keys, Values: values, Persistent: m.Persistent}, topic)
	return GlobalKTable[K, V]{sb: sb, keys: keys, values: values, Store: storeName}
}

type globalJoiner[K, V, KG, VG, VR any] struct {
	store string
	left  bool
	key   func(K, V) KG
	join  func(K, V, VG, bool) VR
	ctx   exactly.ProcessorContext[K, VR]
	table store.KeyValueStore[KG, VG]
}

func (p *globalJoiner[K, V, KG, VG, VR]) Init(ctx exactly.ProcessorContext[K, VR]) (err error) {
	p.ctx = ctx
	p.table, err = exactly.GetKeyValueStore[KG, VG](ctx, p.store)
	return err
}

func (p *globalJoiner[K, V, KG, VG, VR]) Process(rec exactly.Record[K, V]) error {
	other, found, err := p.table.Get(p.key(rec.Key, rec.Value))
	if err != nil {
		return err
	}
	if !found && !p.left {
		return nil
	}
	p.ctx.Forward(exactly.Record[K, VR]{Key: rec.Key, Value: p.join(rec.Key, rec.Value, other, found), Timestamp: rec.Timestamp, Headers: rec.Headers})
	return nil
}

func (p *globalJoiner[K, V, KG, VG, VR]) Close() error { return nil }

func globalJoin[K, V, KG, VG, VR any](s KStream[K, V], g GlobalKTable[KG, VG], left bool, key func(K, V) KG,
	join func(K, V, VG, bool) VR, values serde.Serde[VR]) KStream[K, VR] {
	name := s.sb.name("KSTREAM-GLOBALJOIN")
	exactly.AddProcessor(s.sb.b, name, func() exactly.Processor[K, V, K, VR] {
		return &globalJoiner[K, V, KG, VG, VR]{store: g.Store, left: left, key: key, join: join}
	}, s.node)
	s.sb.b.Connect(name, g.Store)
	return KStream[K, VR]{sb: s.sb, node: name, keys: s.keys, values: values, rekeyed: s.rekeyed}
}

// JoinGlobal joins each stream record with the global table's value for
// the key that key extracts from it; records whose key the table lacks
// are dropped. The record sees the table as this instance holds it when
// the record is processed: every update read before processing started,
// and those applied since. The stream keeps its keys.
func JoinGlobal[K, V, KG, VG, VR any](s KStream[K, V], g GlobalKTable[KG, VG], key func(K, V) KG,
	join func(K, V, VG) VR, values serde.Serde[VR]) KStream[K, VR] {
	return globalJoin(s, g, false, key, func(k K, v V, vg VG, _ bool) VR { return join(k, v, vg) }, values)
}

// LeftJoinGlobal is JoinGlobal that keeps records the table lacks: join
// gets found == false and the zero VG.
func LeftJoinGlobal[K, V, KG, VG, VR any](s KStream[K, V], g GlobalKTable[KG, VG], key func(K, V) KG,
	join func(k K, v V, vg VG, found bool) VR, values serde.Serde[VR]) KStream[K, VR] {
	return globalJoin(s, g, true, key, join, values)
}
