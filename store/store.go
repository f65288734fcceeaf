// Package store holds the interfaces through which processors use state
// stores: [KeyValueStore] to read and write, [ReadOnlyKeyValueStore] for
// what only reads, and [Iterator] to walk a range of keys.
//
// A processor gets a store with exactly.GetKeyValueStore after declaring it
// with exactly.AddStore. Writes are buffered per task: the task reads them
// back at once, and they reach the store's local copy, together with the
// task's outputs, changelog records and input offsets, only when the task
// commits. An aborted or crashed task loses all of them, never some, so a
// store never holds data that is not part of a committed transaction.
//
// A store keeps the values a task writes or reads decoded, so that the next
// read of the same key does not decode it again: values written since the
// last commit live, decoded, beside their bytes in the task's write buffer
// and go with it on abort; a bounded cache holds committed values. Readers
// of committed state (interactive queries) never see the buffer. Values are
// shared only through copies: Get returns a copy and Put keeps a copy, so a
// processor may change a value it read or wrote without changing the
// store. This works for value types without pointers, slices, maps,
// channels, functions or interfaces, copied by assignment, and for types
// with a method Clone() V returning a deep copy (on V or *V); values of
// other types are decoded at every read.
//
// Keys are ordered by the bytes their serde produces: ranges and prefixes
// follow that order, which for serde.String is the strings' byte order and
// for serde.Int64 the numeric order of non-negative values.
package store

import (
	"errors"
	"time"
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
	Range(from, to K) (Iterator[K, V], error)
	// Prefix iterates entries whose serialized key starts with the
	// serialized prefix (useful for composite string keys).
	Prefix(prefix K) (Iterator[K, V], error)
	// All iterates every entry in serialized key order.
	All() (Iterator[K, V], error)
	// ApproximateNumEntries returns about how many entries the store holds.
	// It walks the store: use it in tests and metrics, not per record.
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
	// The store must have been declared with a TTL or as expiring;
	// otherwise it returns an error wrapping [ErrNotExpiring].
	PutExpiring(key K, value V, expiresAt time.Time) error
	// Delete removes key.
	Delete(key K) error
	// SweepExpired deletes the entries whose expiry stream time has reached
	// and returns how many; its cost grows with that number only. The
	// deletions are logged and committed like any other write.
	SweepExpired() (int, error)
}

// Iterator walks entries of a store in the byte order of their serialized
// keys. It sees the task's uncommitted writes as Get does. Always Close it.
type Iterator[K, V any] interface {
	// Next advances to the next entry; it returns false at the end or on
	// an error, which Close then returns.
	Next() bool
	// Key returns the current entry's key.
	Key() K
	// Value returns the current entry's value.
	Value() V
	// Close releases the iterator and returns the first error it met.
	Close() error
}

// ErrNotExpiring is wrapped by the error of PutExpiring on a store declared
// without a TTL and without Expiring.
var ErrNotExpiring = errors.New("store: per-entry expiry needs a store opened with TTL or Expiring")
