package dsl

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// BufferFullPolicy says what a suppression does when its buffer is full.
type BufferFullPolicy int

// The policies of a full suppression buffer.
const (
	// FailWhenFull fails the record that overfills the buffer: with the
	// builder's default FailOnError the task stops, naming the buffer, and
	// nothing is emitted before its time (Kafka Streams'
	// shutDownWhenFull).
	FailWhenFull BufferFullPolicy = iota
	// EmitEarlyWhenFull emits the entries due soonest until the buffer
	// fits again, before their time (Kafka Streams' emitEarlyWhenFull).
	EmitEarlyWhenFull
)

// BufferConfig bounds a suppression buffer; the zero value is unbounded.
type BufferConfig struct {
	// MaxRecords bounds the number of keys buffered; 0: no bound.
	MaxRecords int
	// MaxBytes bounds the bytes buffered (serialized keys and values);
	// 0: no bound.
	MaxBytes int
	// WhenFull is what happens when a bound is passed; default
	// FailWhenFull.
	WhenFull BufferFullPolicy
}

// Suppressed says how long a suppressed table holds each key's updates
// back; make one with UntilWindowCloses or UntilTimeLimit.
type Suppressed struct {
	untilWindowCloses bool
	timeLimit         time.Duration
	buffer            BufferConfig
}

// UntilWindowCloses holds each window's updates until the window closes
// (its end plus the aggregation's grace, and gap, for sessions), then
// emits its final value once (Kafka Streams'
// Suppressed.untilWindowCloses). Only for windowed tables; buffer may not
// emit early, which would break the promise of final results.
func UntilWindowCloses(buffer BufferConfig) Suppressed {
	return Suppressed{untilWindowCloses: true, buffer: buffer}
}

// UntilTimeLimit holds each key's updates until limit of stream time has
// passed since the first of them was held, then emits the latest (Kafka
// Streams' Suppressed.untilTimeLimit): at most one update per key per
// limit.
func UntilTimeLimit(limit time.Duration, buffer BufferConfig) Suppressed {
	return Suppressed{timeLimit: limit, buffer: buffer}
}

// bufferEntry is one key's held update: the value emitted last (Old of
// the first held change) and the latest, with when to emit it.
type bufferEntry struct {
	deadline, timestamp int64
	change              []byte // ChangeSerde
}

func (e bufferEntry) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(e.deadline))
	b = binary.BigEndian.AppendUint64(b, uint64(e.timestamp))
	return append(b, e.change...)
}

func decodeBufferEntry(b []byte) (bufferEntry, error) {
	if len(b) < 16 {
		return bufferEntry{}, fmt.Errorf("%w: suppression buffer entry of %d bytes", serde.ErrInvalid, len(b))
	}
	return bufferEntry{deadline: int64(binary.BigEndian.Uint64(b)), timestamp: int64(binary.BigEndian.Uint64(b[8:])), change: b[16:]}, nil
}

// sizeKey holds the buffer's record count and bytes in the index store;
// every index key is longer.
var sizeKey = []byte{}

type suppressor[K, V any] struct {
	name       string
	s          Suppressed
	closeAfter int64
	keys       serde.Serde[K]
	changes    serde.Serde[Change[V]]
	stores     [2]string // entries by key, index by deadline
	ctx        exactly.ProcessorContext[K, Change[V]]
	entries    store.KeyValueStore[[]byte, []byte]
	index      store.KeyValueStore[[]byte, []byte]
}

func (p *suppressor[K, V]) Init(ctx exactly.ProcessorContext[K, Change[V]]) (err error) {
	p.ctx = ctx
	if p.entries, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.stores[0]); err != nil {
		return err
	}
	if p.index, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.stores[1]); err != nil {
		return err
	}
	// Entries fall due as stream time passes, whether or not a record
	// reaches this node.
	_, err = ctx.Schedule(time.Second, exactly.StreamTime, func(time.Time) error { return p.emitDue() })
	return err
}

func (p *suppressor[K, V]) size() (n, bytes int64, err error) {
	b, ok, err := p.index.Get(sizeKey)
	if err != nil || !ok {
		return 0, 0, err
	}
	return int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:])), nil
}

func (p *suppressor[K, V]) grow(dn, dbytes int64) error {
	n, b, err := p.size()
	if err != nil {
		return err
	}
	return p.index.Put(sizeKey, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(n+dn)), uint64(b+dbytes)))
}

func indexKey(deadline int64, kb []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(deadline)), kb...)
}

func (p *suppressor[K, V]) Process(rec exactly.Record[K, Change[V]]) error {
	kb, err := p.keys.Serialize(rec.Key)
	if err != nil {
		return err
	}
	raw, held, err := p.entries.Get(kb)
	if err != nil {
		return err
	}
	var e bufferEntry
	c := rec.Value
	if held {
		if e, err = decodeBufferEntry(raw); err != nil {
			return err
		}
		first, err := p.changes.Deserialize(e.change)
		if err != nil {
			return err
		}
		c.Old, c.HasOld = first.Old, first.HasOld // what was emitted last stays the old value
	} else if p.s.untilWindowCloses {
		w, _ := any(rec.Key).(windowedKey)
		e.deadline = w.lastMs() + p.closeAfter + 1
	} else {
		e.deadline = rec.Timestamp.UnixMilli() + p.s.timeLimit.Milliseconds()
	}
	e.timestamp = rec.Timestamp.UnixMilli()
	if e.change, err = p.changes.Serialize(c); err != nil {
		return err
	}
	entry := e.encode()
	if held {
		err = p.grow(0, int64(len(entry)-len(raw)))
	} else {
		err = p.grow(1, int64(len(kb)+len(entry)))
		if err == nil {
			err = p.index.Put(indexKey(e.deadline, kb), []byte{})
		}
	}
	if err == nil {
		err = p.entries.Put(kb, entry)
	}
	if err != nil {
		return err
	}
	if err := p.emitDue(); err != nil {
		return err
	}
	return p.enforceBounds()
}

// emitDue emits every entry whose deadline stream time has reached.
func (p *suppressor[K, V]) emitDue() error {
	due, err := p.indexKeys(binary.BigEndian.AppendUint64(nil, uint64(p.ctx.StreamTime().UnixMilli())+1))
	if err != nil {
		return err
	}
	for _, k := range due {
		if err := p.emit(k); err != nil {
			return err
		}
	}
	return nil
}

// indexKeys returns the index keys before upper (nil: all), soonest due
// first.
func (p *suppressor[K, V]) indexKeys(upper []byte) ([][]byte, error) {
	it, err := p.index.Range(nil, upper)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for it.Next() {
		if len(it.Key()) > 0 {
			keys = append(keys, bytes.Clone(it.Key()))
		}
	}
	return keys, it.Close()
}

// emit forwards the entry of index key ik and forgets it.
func (p *suppressor[K, V]) emit(ik []byte) error {
	kb := ik[8:]
	raw, ok, err := p.entries.Get(kb)
	if err != nil {
		return err
	}
	if err := p.index.Delete(ik); err != nil {
		return err
	}
	if !ok {
		return nil
	}
	if err := p.entries.Delete(kb); err != nil {
		return err
	}
	if err := p.grow(-1, -int64(len(kb)+len(raw))); err != nil {
		return err
	}
	e, err := decodeBufferEntry(raw)
	if err != nil {
		return err
	}
	c, err := p.changes.Deserialize(e.change)
	if err != nil {
		return err
	}
	if !c.HasOld && !c.HasNew {
		return nil // inserted and deleted while held: nothing happened
	}
	k, err := p.keys.Deserialize(kb)
	if err != nil {
		return err
	}
	p.ctx.Forward(exactly.Record[K, Change[V]]{Key: k, Value: c, Timestamp: time.UnixMilli(e.timestamp)})
	return nil
}

// enforceBounds emits early, soonest due first, or fails while the
// buffer is over a bound.
func (p *suppressor[K, V]) enforceBounds() error {
	b := p.s.buffer
	var queue [][]byte
	for {
		n, size, err := p.size()
		if err != nil {
			return err
		}
		if (b.MaxRecords <= 0 || n <= int64(b.MaxRecords)) && (b.MaxBytes <= 0 || size <= int64(b.MaxBytes)) {
			return nil
		}
		if b.WhenFull == FailWhenFull {
			return fmt.Errorf("suppression %q: buffer full (%d records, %d bytes; bounds %d records, %d bytes): raise the bounds, or emit early with EmitEarlyWhenFull",
				p.name, n, size, b.MaxRecords, b.MaxBytes)
		}
		if queue == nil {
			if queue, err = p.indexKeys(nil); err != nil {
				return err
			}
		}
		if len(queue) == 0 {
			return nil
		}
		if err := p.emit(queue[0]); err != nil {
			return err
		}
		queue = queue[1:]
	}
}

func (p *suppressor[K, V]) Close() error { return nil }

// Suppress holds the table's updates back and emits, per key, the latest
// one when s says (Kafka Streams' KTable.suppress): with
// UntilWindowCloses, each window's final value once; with UntilTimeLimit,
// at most one update per key per time limit. Each emitted update carries
// as its old value the one emitted before it, so operations downstream
// stay consistent; a key inserted and deleted while held emits nothing.
//
// The buffer is a pair of logged stores, name-buffer and
// name-buffer-index: what is held survives a crash and is emitted exactly
// once. Its bounds and the policy when full are s's BufferConfig. Time is
// stream time: entries fall due as records advance it. Invalid
// suppressions (UntilWindowCloses on a table that is not windowed, or
// with EmitEarlyWhenFull and a bound) are reported by Build.
func (t KTable[K, V]) Suppress(name string, s Suppressed) KTable[K, V] {
	sb := t.sb
	switch {
	case s.untilWindowCloses && !t.windowed:
		sb.b.AddError(fmt.Errorf("suppression %q: UntilWindowCloses needs a windowed table (a windowed, session or sliding aggregation)", name))
	case s.untilWindowCloses && s.buffer.WhenFull == EmitEarlyWhenFull && (s.buffer.MaxRecords > 0 || s.buffer.MaxBytes > 0):
		sb.b.AddError(fmt.Errorf("suppression %q: UntilWindowCloses cannot emit early; use FailWhenFull or an unbounded buffer", name))
	case !s.untilWindowCloses && s.timeLimit <= 0:
		sb.b.AddError(fmt.Errorf("suppression %q: the time limit must be positive", name))
	case s.buffer.MaxRecords < 0 || s.buffer.MaxBytes < 0:
		sb.b.AddError(fmt.Errorf("suppression %q: buffer bounds must not be negative", name))
	}
	stores := [2]string{name + "-buffer", name + "-buffer-index"}
	keys, changes, closeAfter := t.keys, ChangeSerde(t.values), t.closeAfter
	exactly.AddProcessor(sb.b, name, func() exactly.Processor[K, Change[V], K, Change[V]] {
		return &suppressor[K, V]{name: name, s: s, closeAfter: closeAfter, keys: keys, changes: changes, stores: stores}
	}, t.node)
	for _, n := range stores {
		exactly.AddStore(sb.b, exactly.Store[[]byte, []byte]{Name: n, Keys: serde.Bytes, Values: serde.Bytes}, name)
	}
	t.node, t.Store = name, ""
	return t
}
