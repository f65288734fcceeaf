package store

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly/serde"
)

// ReadOnlyKeyValueStore is the read side of a key-value store.
type ReadOnlyKeyValueStore[K, V any] interface {
	// Name returns the store's name.
	Name() string
	// Get returns the value of key and true, or false if the key is absent
	// or expired.
	Get(key K) (V, bool, error)
	// Range iterates entries with from <= key < to, in the byte order of the
	// serialized keys.
	Range(from, to K) (*Iterator[K, V], error)
	// Prefix iterates entries whose serialized key starts with the
	// serialized prefix (useful for composite string keys).
	Prefix(prefix K) (*Iterator[K, V], error)
	// All iterates every entry in serialized key order.
	All() (*Iterator[K, V], error)
	// ApproximateNumEntries returns about how many entries the store holds.
	ApproximateNumEntries() (int64, error)
}

// KeyValueStore is a typed state store. Writes are visible to the task's
// own reads at once and become durable, together with the task's outputs and
// input offsets, only when the task commits; an aborted or crashed task loses
// them all, never some.
type KeyValueStore[K, V any] interface {
	ReadOnlyKeyValueStore[K, V]
	// Put sets key to value. On a store with a TTL the entry expires TTL
	// after the current stream time.
	Put(key K, value V) error
	// PutExpiring sets key to value until stream time reaches expiresAt.
	// The store must have been declared with a TTL or as expiring.
	PutExpiring(key K, value V, expiresAt time.Time) error
	// Delete removes key.
	Delete(key K) error
	// SweepExpired deletes the entries whose expiry stream time has reached
	// and returns how many; its cost grows with that number only.
	SweepExpired() (int, error)
}

// Typed returns a typed view of raw through the given serdes.
func Typed[K, V any](raw *KV, keys serde.Serde[K], values serde.Serde[V]) KeyValueStore[K, V] {
	return &typedKV[K, V]{raw: raw, keys: keys, values: values}
}

type typedKV[K, V any] struct {
	raw    *KV
	keys   serde.Serde[K]
	values serde.Serde[V]
}

func (s *typedKV[K, V]) Name() string { return s.raw.name }

func (s *typedKV[K, V]) key(k K) ([]byte, error) {
	b, err := s.keys.Serialize(k)
	if err != nil {
		return nil, fmt.Errorf("store %s: serialize key: %w", s.raw.name, err)
	}
	return b, nil
}

func (s *typedKV[K, V]) Get(k K) (V, bool, error) {
	var zero V
	kb, err := s.key(k)
	if err != nil {
		return zero, false, err
	}
	vb, ok, err := s.raw.Get(kb)
	if err != nil || !ok {
		return zero, false, err
	}
	v, err := s.values.Deserialize(vb)
	if err != nil {
		return zero, false, fmt.Errorf("store %s: deserialize value: %w", s.raw.name, err)
	}
	return v, true, nil
}

func (s *typedKV[K, V]) encode(k K, v V) ([]byte, []byte, error) {
	kb, err := s.key(k)
	if err != nil {
		return nil, nil, err
	}
	vb, err := s.values.Serialize(v)
	if err != nil {
		return nil, nil, fmt.Errorf("store %s: serialize value: %w", s.raw.name, err)
	}
	if vb == nil {
		vb = []byte{}
	}
	return kb, vb, nil
}

func (s *typedKV[K, V]) Put(k K, v V) error {
	kb, vb, err := s.encode(k, v)
	if err != nil {
		return err
	}
	return s.raw.Put(kb, vb)
}

func (s *typedKV[K, V]) PutExpiring(k K, v V, expiresAt time.Time) error {
	kb, vb, err := s.encode(k, v)
	if err != nil {
		return err
	}
	return s.raw.PutExpiring(kb, vb, expiresAt.UnixMilli())
}

func (s *typedKV[K, V]) Delete(k K) error {
	kb, err := s.key(k)
	if err != nil {
		return err
	}
	return s.raw.Delete(kb)
}

func (s *typedKV[K, V]) Range(from, to K) (*Iterator[K, V], error) {
	fb, err := s.key(from)
	if err != nil {
		return nil, err
	}
	tb, err := s.key(to)
	if err != nil {
		return nil, err
	}
	return s.wrap(s.raw.Range(fb, tb))
}

func (s *typedKV[K, V]) Prefix(prefix K) (*Iterator[K, V], error) {
	pb, err := s.key(prefix)
	if err != nil {
		return nil, err
	}
	return s.wrap(s.raw.Prefix(pb))
}

func (s *typedKV[K, V]) All() (*Iterator[K, V], error) { return s.wrap(s.raw.Range(nil, nil)) }

func (s *typedKV[K, V]) wrap(raw *RawIter, err error) (*Iterator[K, V], error) {
	if err != nil {
		return nil, err
	}
	return &Iterator[K, V]{raw: raw, keys: s.keys, values: s.values}, nil
}

func (s *typedKV[K, V]) ApproximateNumEntries() (int64, error) { return s.raw.ApproximateNumEntries() }

func (s *typedKV[K, V]) SweepExpired() (int, error) { return s.raw.SweepExpired() }

// Iterator walks typed entries of a store. Always Close it.
type Iterator[K, V any] struct {
	raw    *RawIter
	keys   serde.Serde[K]
	values serde.Serde[V]
	key    K
	value  V
	err    error
}

// Next advances to the next entry; it returns false at the end or on error
// (see Close).
func (it *Iterator[K, V]) Next() bool {
	if it.err != nil || !it.raw.Next() {
		return false
	}
	k, err := it.keys.Deserialize(it.raw.Key())
	if err != nil {
		it.err = fmt.Errorf("store %s: deserialize key: %w", it.raw.store.name, err)
		return false
	}
	v, err := it.values.Deserialize(it.raw.Value())
	if err != nil {
		it.err = fmt.Errorf("store %s: deserialize value: %w", it.raw.store.name, err)
		return false
	}
	it.key, it.value = k, v
	return true
}

// Key returns the current entry's key.
func (it *Iterator[K, V]) Key() K { return it.key }

// Value returns the current entry's value.
func (it *Iterator[K, V]) Value() V { return it.value }

// Close releases the iterator and returns the first error it met.
func (it *Iterator[K, V]) Close() error {
	if err := it.raw.Close(); err != nil && it.err == nil {
		it.err = err
	}
	return it.err
}
