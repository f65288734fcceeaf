package store

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly/serde"
	public "github.com/exactly-go/exactly/store"
)

// Typed returns the typed view processors use of raw, through the given
// serdes. When values of V can be copied safely (see cloneFuncFor), the view
// caches decoded values in raw's write buffer and in a bounded cache of
// committed values, so that a value written or read before is not decoded
// again; Get then returns a copy of the cached value and Put keeps a copy of
// the value it is given.
func Typed[K, V any](raw *KV, keys serde.Serde[K], values serde.Serde[V]) public.KeyValueStore[K, V] {
	s := &typedKV[K, V]{raw: raw, keys: keys, values: values, clone: cloneFuncFor[V]()}
	if a, ok := keys.(serde.Appender[K]); ok {
		s.appendKey = a.Append
	}
	if raw.uncached {
		s.clone = nil
	}
	if s.clone != nil && raw.cache == nil {
		raw.cache = newValueCache(raw.expiring)
	}
	return s
}

type typedKV[K, V any] struct {
	raw    *KV
	keys   serde.Serde[K]
	values serde.Serde[V]
	// clone copies a cached value; nil when values are not cached.
	clone func(*V) V
	// appendKey serializes a key after the bytes it is given, when the key
	// serde can (serde.Appender): data keys are then made in one buffer.
	appendKey func([]byte, K) ([]byte, error)
}

// DisableValueCache makes typed views of k decode every read: for a store
// whose backend is written from outside its task (a global store), where
// cached committed values would go stale.
func (k *KV) DisableValueCache() { k.uncached, k.cache = true, nil }

func (s *typedKV[K, V]) Name() string { return s.raw.name }

func (s *typedKV[K, V]) key(k K) ([]byte, error) {
	b, err := s.keys.Serialize(k)
	if err != nil {
		return nil, fmt.Errorf("store %s: serialize key: %w", s.raw.name, err)
	}
	return b, nil
}

// readKey returns the data key of k for a read, in the store's scratch
// buffer: valid until the store's next read.
func (s *typedKV[K, V]) readKey(k K) ([]byte, error) {
	if s.appendKey == nil {
		kb, err := s.key(k)
		if err != nil {
			return nil, err
		}
		return s.raw.readKey(kb), nil
	}
	b, err := s.appendKey(append(s.raw.scratch[:0], s.raw.dataPrefix...), k)
	if err != nil {
		return nil, fmt.Errorf("store %s: serialize key: %w", s.raw.name, err)
	}
	s.raw.scratch = b
	return b, nil
}

// writeKey returns the data key of k for a write: a buffer of its own, for
// the write buffer to keep.
func (s *typedKV[K, V]) writeKey(k K) ([]byte, error) {
	if s.appendKey == nil {
		kb, err := s.key(k)
		if err != nil {
			return nil, err
		}
		return s.raw.dataKey(kb), nil
	}
	b, err := s.appendKey(append(make([]byte, 0, len(s.raw.dataPrefix)+24), s.raw.dataPrefix...), k)
	if err != nil {
		return nil, fmt.Errorf("store %s: serialize key: %w", s.raw.name, err)
	}
	return b, nil
}

func (s *typedKV[K, V]) Get(k K) (V, bool, error) {
	var zero V
	dk, err := s.readKey(k)
	if err != nil {
		return zero, false, err
	}
	if s.clone == nil {
		vb, ok, err := s.raw.getData(dk)
		if err != nil || !ok {
			return zero, false, err
		}
		v, err := s.values.Deserialize(vb)
		if err != nil {
			return zero, false, fmt.Errorf("store %s: deserialize value: %w", s.raw.name, err)
		}
		return v, true, nil
	}
	l, err := s.raw.getDecoded(dk)
	if err != nil || !l.found {
		return zero, false, err
	}
	if p, ok := l.decoded.(*V); ok {
		return s.clone(p), true, nil
	}
	if l.value == nil {
		// Cached by a view of another value type: read the bytes.
		vb, ok, err := s.raw.getData(dk)
		if err != nil || !ok {
			return zero, false, err
		}
		l.value = vb
	}
	p := new(V)
	if *p, err = s.values.Deserialize(l.value); err != nil {
		return zero, false, fmt.Errorf("store %s: deserialize value: %w", s.raw.name, err)
	}
	s.raw.remember(dk, l, p)
	return s.clone(p), true, nil
}

// cached returns the copy of v that the store keeps decoded, or nil when
// values are not cached.
func (s *typedKV[K, V]) cached(v V) any {
	if s.clone == nil {
		return nil
	}
	p := new(V)
	*p = v
	*p = s.clone(p)
	return p
}

// encode returns the data key of k (see writeKey) and v's bytes.
func (s *typedKV[K, V]) encode(k K, v V) ([]byte, []byte, error) {
	kb, err := s.writeKey(k)
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
	dk, vb, err := s.encode(k, v)
	if err != nil {
		return err
	}
	return s.raw.put(dk, vb, s.cached(v))
}

func (s *typedKV[K, V]) PutExpiring(k K, v V, expiresAt time.Time) error {
	dk, vb, err := s.encode(k, v)
	if err != nil {
		return err
	}
	return s.raw.putExpiringChecked(dk, vb, expiresAt.UnixMilli(), s.cached(v))
}

func (s *typedKV[K, V]) Delete(k K) error {
	dk, err := s.writeKey(k)
	if err != nil {
		return err
	}
	return s.raw.deleteData(dk)
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
