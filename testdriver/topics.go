package testdriver

import (
	"fmt"
	"slices"
	"time"

	"github.com/exactly-go/exactly"
	engine "github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// InputTopic pipes typed records into a topic.
type InputTopic[K, V any] struct {
	d      *Driver
	name   string
	keys   serde.Serde[K]
	values serde.Serde[V]
}

// CreateInputTopic returns a typed writer for topic.
func CreateInputTopic[K, V any](d *Driver, topic string, keys serde.Serde[K], values serde.Serde[V]) *InputTopic[K, V] {
	return &InputTopic[K, V]{d: d, name: topic, keys: keys, values: values}
}

// PipeInput appends a record and processes it (with a commit, unless commits
// are manual). The error is the task's, if processing failed.
func (in *InputTopic[K, V]) PipeInput(key K, value V, timestamp time.Time) error {
	return in.PipeRecord(exactly.Record[K, V]{Key: key, Value: value, Timestamp: timestamp})
}

// PipeRecord appends rec, with its headers, and processes it.
func (in *InputTopic[K, V]) PipeRecord(rec exactly.Record[K, V]) error {
	kb, err := in.keys.Serialize(rec.Key)
	if err != nil {
		return fmt.Errorf("serialize key for %s: %w", in.name, err)
	}
	vb, err := in.values.Serialize(rec.Value)
	if err != nil {
		return fmt.Errorf("serialize value for %s: %w", in.name, err)
	}
	return in.d.PipeBytes(in.name, kb, vb, rec.Timestamp, rec.Headers...)
}

// OutputTopic reads the committed records of a topic, in the order they were
// committed.
type OutputTopic[K, V any] struct {
	d      *Driver
	name   string
	keys   serde.Serde[K]
	values serde.Serde[V]
	read   int
}

// CreateOutputTopic returns a typed reader for topic, positioned at its
// start.
func CreateOutputTopic[K, V any](d *Driver, topic string, keys serde.Serde[K], values serde.Serde[V]) *OutputTopic[K, V] {
	return &OutputTopic[K, V]{d: d, name: topic, keys: keys, values: values}
}

// IsEmpty reports whether every committed record has been read.
func (out *OutputTopic[K, V]) IsEmpty() bool { return out.read >= len(out.d.topic(out.name).all) }

// QueueSize returns how many committed records are unread.
func (out *OutputTopic[K, V]) QueueSize() int { return len(out.d.topic(out.name).all) - out.read }

// ReadRecords returns every unread committed record.
func (out *OutputTopic[K, V]) ReadRecords() ([]exactly.Record[K, V], error) {
	all := out.d.topic(out.name).all
	recs := make([]exactly.Record[K, V], 0, len(all)-out.read)
	for ; out.read < len(all); out.read++ {
		rec, err := out.decode(&all[out.read].raw)
		if err != nil {
			return recs, err
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// ReadKeyValuesToMap reads every unread record and returns the last value
// per key (a table's view of the topic); tombstones are not representable
// with typed values and are skipped.
func (out *OutputTopic[K, V]) ReadKeyValuesToMap() (map[string]V, error) {
	all := out.d.topic(out.name).all
	m := map[string]V{}
	for ; out.read < len(all); out.read++ {
		raw := &all[out.read].raw
		if raw.Value == nil {
			delete(m, string(raw.Key))
			continue
		}
		rec, err := out.decode(raw)
		if err != nil {
			return m, err
		}
		m[string(raw.Key)] = rec.Value
	}
	return m, nil
}

func (out *OutputTopic[K, V]) decode(raw *topo.Raw) (exactly.Record[K, V], error) {
	var rec exactly.Record[K, V]
	var err error
	if rec.Key, err = out.keys.Deserialize(raw.Key); err != nil {
		return rec, fmt.Errorf("%s@%d/%d key: %w", out.name, raw.Partition, raw.Offset, err)
	}
	if rec.Value, err = out.values.Deserialize(raw.Value); err != nil {
		return rec, fmt.Errorf("%s@%d/%d value: %w", out.name, raw.Partition, raw.Offset, err)
	}
	rec.Timestamp = time.UnixMilli(raw.Timestamp)
	rec.Headers = raw.Headers
	return rec, nil
}

// KeyValueStore returns a read view of a store of the task for partition
// (sub-topologies reading one-partition topics have partition 0). Reads
// include the task's uncommitted writes, as the processors see them.
func KeyValueStore[K, V any](d *Driver, name string, partition int32) (store.ReadOnlyKeyValueStore[K, V], error) {
	if err := d.checkRunning(); err != nil {
		return nil, err
	}
	for id, lt := range d.tasks {
		if id.Partition != partition {
			continue
		}
		kv, ok := lt.task.KV(name)
		if !ok {
			continue
		}
		spec, _ := d.topo.Store(name)
		keys, ok1 := spec.Keys.(serde.Serde[K])
		values, ok2 := spec.Values.(serde.Serde[V])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("store %q holds %v -> %v", name, spec.KeyType, spec.ValueType)
		}
		return engine.Typed(kv, keys, values), nil
	}
	return nil, fmt.Errorf("no task holds store %q for partition %d", name, partition)
}

// StoreNames returns the names of the topology's state stores, sorted.
func (d *Driver) StoreNames() []string {
	var names []string
	for _, sub := range d.topo.Subtopologies() {
		names = append(names, sub.Stores...)
	}
	slices.Sort(names)
	return names
}

// StoreEntries returns how many live entries store name holds, summed over
// the partitions of its tasks and including their uncommitted writes: what
// a test of bounded state compares as the input grows. It walks the store.
func (d *Driver) StoreEntries(name string) (int64, error) {
	if err := d.checkRunning(); err != nil {
		return 0, err
	}
	if _, ok := d.topo.Store(name); !ok {
		return 0, fmt.Errorf("testdriver: the topology has no store %q", name)
	}
	var total int64
	for _, lt := range d.tasks {
		kv, ok := lt.task.KV(name)
		if !ok {
			continue
		}
		n, err := kv.ApproximateNumEntries()
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// StoreCachedValues returns how many decoded values the typed views of store
// name keep in memory beside their backend, summed over the partitions of
// its tasks, and their size as the cache counts it (keys and encoded values
// plus a fixed overhead per value): the cache of committed values, which
// holds the values in use within a bound per store and task, and the
// decoded values of uncommitted writes are not counted. A test of bounded
// memory compares it as the input grows.
func (d *Driver) StoreCachedValues(name string) (values, bytes int64, err error) {
	if err := d.checkRunning(); err != nil {
		return 0, 0, err
	}
	if _, ok := d.topo.Store(name); !ok {
		return 0, 0, fmt.Errorf("testdriver: the topology has no store %q", name)
	}
	for _, lt := range d.tasks {
		if kv, ok := lt.task.KV(name); ok {
			v, b := kv.CachedValues()
			values, bytes = values+int64(v), bytes+int64(b)
		}
	}
	return values, bytes, nil
}
