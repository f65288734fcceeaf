package store

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly/serde"
	public "github.com/exactly-go/exactly/store"
)

// Typed returns the typed view processors use of raw, through the given
// serdes.
func Typed[K, V any](raw *KV, keys serde.Serde[K], values serde.Serde[V]) public.KeyValueStore[K, V] {
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

func (s *typedKV[K, V]) Range(from, to K) (public.Iterator[K, V], error) {
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

func (s *typedKV[K, V]) Prefix(prefix K) (public.Iterator[K, V], error) {
	pb, err := s.key(prefix)
	if err != nil {
		return nil, err
	}
	return s.wrap(s.raw.Prefix(pb))
}

func (s *typedKV[K, V]) All() (public.Iterator[K, V], error) { return s.wrap(s.raw.Range(nil, nil)) }

func (s *typedKV[K, V]) wrap(raw *RawIter, err error) (public.Iterator[K, V], error) {
	if err != nil {
		return nil, err
	}
	return &iterator[K, V]{raw: raw, keys: s.keys, values: s.values}, nil
}

func (s *typedKV[K, V]) ApproximateNumEntries() (int64, error) { return s.raw.ApproximateNumEntries() }

func (s *typedKV[K, V]) SweepExpired() (int, error) { return s.raw.SweepExpired() }

// iterator walks typed entries of a store.
type iterator[K, V any] struct {
	raw    *RawIter
	keys   serde.Serde[K]
	values serde.Serde[V]
	key    K
	value  V
	err    error
}

// Next advances to the next entry; it returns false at the end or on error
// (see Close).
func (it *iterator[K, V]) Next() bool {
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
func (it *iterator[K, V]) Key() K { return it.key }

// Value returns the current entry's value.
func (it *iterator[K, V]) Value() V { return it.value }

// Close releases the iterator and returns the first error it met.
func (it *iterator[K, V]) Close() error {
	if err := it.raw.Close(); err != nil && it.err == nil {
		it.err = err
	}
	return it.err
}
