package dsl

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// A versioned store keeps, per key, every version written in the last
// History of stream time, each valid from its record's timestamp until
// the next version's: entry key len(key) key validFrom, entry value a
// flag byte (1: a value follows, 0: a tombstone) and the value.

func versionKey(prefix []byte, validFrom int64) []byte {
	return binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(validFrom))
}

type version struct {
	validFrom int64
	value     []byte // nil: a tombstone
}

func encodeVersion(value []byte, present bool) []byte {
	if !present {
		return []byte{0}
	}
	return append([]byte{1}, value...)
}

// versionsUntil returns the key's versions valid from at most asOf, oldest
// first (all of them when asOf is the largest int64).
func versionsUntil(kv store.KeyValueStore[[]byte, []byte], prefix []byte, asOf int64) ([]version, error) {
	upper := prefixEnd(prefix)
	if asOf < 1<<62 {
		upper = versionKey(prefix, asOf+1)
	}
	it, err := kv.Range(versionKey(prefix, 0), upper)
	if err != nil {
		return nil, err
	}
	var out []version
	for it.Next() {
		v := version{validFrom: int64(binary.BigEndian.Uint64(it.Key()[len(prefix):]))}
		if raw := it.Value(); len(raw) > 0 && raw[0] == 1 {
			v.value = bytes.Clone(raw[1:])
		}
		out = append(out, v)
	}
	return out, it.Close()
}

// VersionedStore reads the history of a versioned table (VersionedTable):
// each key's value as of any time within the table's history.
type VersionedStore[K, V any] struct {
	kv      store.KeyValueStore[[]byte, []byte]
	keys    serde.Serde[K]
	values  serde.Serde[V]
	history int64
	now     func() int64
}

// GetVersionedStore returns the versioned store called name (the
// storeName given to VersionedTable) to a processor connected to it
// (Process and ProcessValues connect the stores they name), reading keys
// and values with the table's serdes; history must be the table's.
func GetVersionedStore[K, V, KOut, VOut any](ctx exactly.ProcessorContext[KOut, VOut], name string, keys serde.Serde[K], values serde.Serde[V], history time.Duration) (VersionedStore[K, V], error) {
	kv, err := exactly.GetKeyValueStore[[]byte, []byte](ctx, name)
	if err != nil {
		return VersionedStore[K, V]{}, err
	}
	return VersionedStore[K, V]{kv: kv, keys: keys, values: values, history: history.Milliseconds(),
		now: func() int64 { return ctx.StreamTime().UnixMilli() }}, nil
}

// Get returns key's value as of asOf: the version with the latest
// validFrom at or before asOf, and that validFrom; found is false if
// there is none, if it is a deletion, or if asOf is older than the
// history the store keeps (stream time − History).
func (s VersionedStore[K, V]) Get(key K, asOf time.Time) (value V, validFrom time.Time, found bool, err error) {
	kb, err := s.keys.Serialize(key)
	if err != nil {
		return value, validFrom, false, err
	}
	at := asOf.UnixMilli()
	if at < s.now()-s.history {
		return value, validFrom, false, nil
	}
	vs, err := versionsUntil(s.kv, keyPrefix(kb), at)
	if err != nil || len(vs) == 0 || vs[len(vs)-1].value == nil {
		return value, validFrom, false, err
	}
	last := vs[len(vs)-1]
	value, err = s.values.Deserialize(last.value)
	return value, time.UnixMilli(last.validFrom), err == nil, err
}

type versionedSource[K, V any] struct {
	store   string
	history int64
	keys    serde.Serde[K]
	values  serde.Serde[V]
	dropped func()
	ctx     exactly.ProcessorContext[K, Change[V]]
	kv      store.KeyValueStore[[]byte, []byte]
}

func (p *versionedSource[K, V]) Init(ctx exactly.ProcessorContext[K, Change[V]]) (err error) {
	p.ctx = ctx
	p.kv, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.store)
	return err
}

func (p *versionedSource[K, V]) Process(rec exactly.Record[K, optional[V]]) error {
	ts, st := rec.Timestamp.UnixMilli(), p.ctx.StreamTime().UnixMilli()
	if ts < st-p.history {
		p.dropped() // older than any time the store still answers for
		return nil
	}
	kb, err := p.keys.Serialize(rec.Key)
	if err != nil {
		return err
	}
	var vb []byte
	if rec.Value.Present {
		if vb, err = p.values.Serialize(rec.Value.Value); err != nil {
			return err
		}
	}
	prefix := keyPrefix(kb)
	vs, err := versionsUntil(p.kv, prefix, 1<<62)
	if err != nil {
		return err
	}
	if err := p.kv.Put(versionKey(prefix, ts), encodeVersion(vb, rec.Value.Present)); err != nil {
		return err
	}
	// Forget the versions no query within the history can reach: those
	// older than the one valid at stream time − History.
	horizon := st - p.history
	for i := 0; i+1 < len(vs) && vs[i+1].validFrom <= horizon && vs[i+1].validFrom <= ts; i++ {
		if err := p.kv.Delete(versionKey(prefix, vs[i].validFrom)); err != nil {
			return err
		}
	}
	if len(vs) > 0 && ts < vs[len(vs)-1].validFrom {
		return nil // a change to the past: the current value stays
	}
	var c Change[V]
	if len(vs) > 0 && vs[len(vs)-1].value != nil {
		if c.Old, err = p.values.Deserialize(vs[len(vs)-1].value); err != nil {
			return err
		}
		c.HasOld = true
	}
	c.New, c.HasNew = rec.Value.Value, rec.Value.Present
	if !c.HasOld && !c.HasNew {
		return nil
	}
	p.ctx.Forward(exactly.Record[K, Change[V]]{Key: rec.Key, Value: c, Timestamp: rec.Timestamp, Headers: rec.Headers})
	return nil
}

func (p *versionedSource[K, V]) Close() error { return nil }

// VersionedTable reads a topic as a versioned table (Kafka Streams'
// versioned KTable, KIP-889): besides its latest value, the store called
// storeName keeps each key's versions of the last history of stream time,
// each valid from its record's timestamp until the next version's, so a
// stream joined with it (Join, LeftJoin) joins each record with the value
// valid at the record's timestamp: a late order joins the price of its
// time, not today's. A record with an older timestamp than the key's
// latest version corrects the history without changing the current value;
// one older than stream time − history is dropped
// (dropped_records_total{reason="late"}). The table's downstream
// operations see the changes of its current value. Versions of a key
// older than the one valid at stream time − history are forgotten as the
// key is written again. Read the history from a processor with
// GetVersionedStore.
func VersionedTable[K, V any](sb *StreamsBuilder, topic string, keys serde.Serde[K], values serde.Serde[V], storeName string, history time.Duration, m Materialized) KTable[K, V] {
	if history <= 0 {
		sb.b.AddError(fmt.Errorf("versioned table %q: history must be positive", storeName))
	}
	src := StreamFrom(sb, exactly.Source[K, optional[V]]{Topics: []string{topic}, Keys: keys, Values: optionalSerde(values)})
	name := sb.name("KTABLE-SOURCE")
	dropped := sb.dropped.WithLabelValues("late").Inc
	exactly.AddProcessor(sb.b, name, func() exactly.Processor[K, optional[V], K, Change[V]] {
		return &versionedSource[K, V]{store: storeName, history: history.Milliseconds(), keys: keys, values: values, dropped: dropped}
	}, src.node)
	exactly.AddStore(sb.b, exactly.Store[[]byte, []byte]{Name: storeName, Keys: serde.Bytes, Values: serde.Bytes, Persistent: m.Persistent}, name)
	return KTable[K, V]{sb: sb, node: name, keys: keys, values: values, versioned: storeName, history: history}
}

// temporalJoiner joins each stream record with the versioned table's
// value valid at the record's timestamp.
type temporalJoiner[K, V, VT, VR any] struct {
	store   string
	history time.Duration
	keys    serde.Serde[K]
	values  serde.Serde[VT]
	left    bool
	join    func(K, V, VT, bool) VR
	ctx     exactly.ProcessorContext[K, VR]
	table   VersionedStore[K, VT]
}

func (p *temporalJoiner[K, V, VT, VR]) Init(ctx exactly.ProcessorContext[K, VR]) (err error) {
	p.ctx = ctx
	p.table, err = GetVersionedStore(ctx, p.store, p.keys, p.values, p.history)
	return err
}

func (p *temporalJoiner[K, V, VT, VR]) Process(rec exactly.Record[K, V]) error {
	other, _, found, err := p.table.Get(rec.Key, rec.Timestamp)
	if err != nil {
		return err
	}
	if !found && !p.left {
		return nil
	}
	p.ctx.Forward(exactly.Record[K, VR]{Key: rec.Key, Value: p.join(rec.Key, rec.Value, other, found), Timestamp: rec.Timestamp, Headers: rec.Headers})
	return nil
}

func (p *temporalJoiner[K, V, VT, VR]) Close() error { return nil }

// QueryAsOf answers an interactive query of a versioned table's store:
// key's value as of asOf, from the committed state of the partitions this
// instance holds (route the query to the key's instance as for any other
// store). found is false when there is no such version within the
// history this instance's store still holds.
func QueryAsOf[K, V any](ctx context.Context, app *exactly.App, storeName string, keys serde.Serde[K], values serde.Serde[V], key K, asOf time.Time) (value V, validFrom time.Time, found bool, err error) {
	kb, err := keys.Serialize(key)
	if err != nil {
		return value, validFrom, false, err
	}
	prefix := keyPrefix(kb)
	entries, err := exactly.QueryRange[[]byte, []byte](ctx, app, storeName, versionKey(prefix, 0), versionKey(prefix, asOf.UnixMilli()+1), 1<<20)
	if err != nil || len(entries) == 0 {
		return value, validFrom, false, err
	}
	last := entries[len(entries)-1]
	if len(last.Value) == 0 || last.Value[0] != 1 {
		return value, validFrom, false, nil
	}
	value, err = values.Deserialize(last.Value[1:])
	return value, time.UnixMilli(int64(binary.BigEndian.Uint64(last.Key[len(prefix):]))), err == nil, err
}
