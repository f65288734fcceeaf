package dsl

import (
	"encoding/binary"
	"fmt"

	"github.com/exactly-go/exactly/serde"
)

// Change is one update of a table as it flows between table operations:
// the key's value before (Old, if HasOld) and after (New, if HasNew), as
// Kafka Streams' Change<V>. An insert has no Old, a deletion no New.
// Operations downstream of a table see both, so an aggregation subtracts
// the old value before adding the new one, and a filter or a join can
// retract a result it emitted before.
type Change[V any] struct {
	Old, New       V
	HasOld, HasNew bool
}

// ChangeSerde encodes a Change as one flags byte (1: has old, 2: has new),
// the old value's length as a uvarint, the old value's bytes and the new
// value's bytes, each value encoded with values. Table operations use it
// where changes cross a topic (the repartition topic of a table grouping).
func ChangeSerde[V any](values serde.Serde[V]) serde.Serde[Change[V]] {
	return serde.Funcs[Change[V]]{
		SerializeFunc: func(c Change[V]) ([]byte, error) {
			var flags byte
			var old, nw []byte
			var err error
			if c.HasOld {
				flags |= 1
				if old, err = values.Serialize(c.Old); err != nil {
					return nil, err
				}
			}
			if c.HasNew {
				flags |= 2
				if nw, err = values.Serialize(c.New); err != nil {
					return nil, err
				}
			}
			b := binary.AppendUvarint([]byte{flags}, uint64(len(old)))
			return append(append(b, old...), nw...), nil
		},
		DeserializeFunc: func(b []byte) (Change[V], error) {
			var c Change[V]
			if len(b) < 2 || b[0] > 3 {
				return c, fmt.Errorf("%w: change of %d bytes", serde.ErrInvalid, len(b))
			}
			n, w := binary.Uvarint(b[1:])
			if w <= 0 || uint64(len(b)-1-w) < n {
				return c, fmt.Errorf("%w: change with a bad old-value length", serde.ErrInvalid)
			}
			old, nw := b[1+w:1+w+int(n)], b[1+w+int(n):]
			var err error
			if b[0]&1 != 0 {
				if c.Old, err = values.Deserialize(old); err != nil {
					return c, err
				}
				c.HasOld = true
			}
			if b[0]&2 != 0 {
				if c.New, err = values.Deserialize(nw); err != nil {
					return c, err
				}
				c.HasNew = true
			}
			return c, nil
		},
	}
}

// optional is a value that may be a tombstone (a record with a null
// value).
type optional[V any] struct {
	Value   V
	Present bool
}

// optionalSerde reads a null value (nil bytes) as absent and writes an
// absent value as null; other values go through values, so a value that
// does not decode is still a deserialization error.
func optionalSerde[V any](values serde.Serde[V]) serde.Serde[optional[V]] {
	return serde.Funcs[optional[V]]{
		SerializeFunc: func(o optional[V]) ([]byte, error) {
			if !o.Present {
				return nil, nil
			}
			return values.Serialize(o.Value)
		},
		DeserializeFunc: func(b []byte) (optional[V], error) {
			if b == nil {
				return optional[V]{}, nil
			}
			v, err := values.Deserialize(b)
			return optional[V]{Value: v, Present: err == nil}, err
		},
	}
}
