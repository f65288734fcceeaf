// Package store is the engine behind the state stores of package
// exactly/store: an ordered byte backend (in memory or Pebble), a per-task
// write buffer that gives read-your-writes and reaches the backend only when
// the task commits, changelog extraction and restore, per-entry expiry in
// stream time with a time index, and the typed views processors use.
//
// The invariant the package keeps: a Backend only ever holds writes that were
// committed through Txn.Commit, and each store's checkpoint (the changelog
// offset it is current up to) is written in the same atomic batch as its data.
package store

import "errors"

// Op is one write of an atomic batch applied to a Backend.
type Op struct {
	Kind  OpKind
	Key   []byte
	Value []byte // for OpSet
	End   []byte // for OpDeleteRange: the exclusive end of [Key, End)
	// Owned lets the backend keep Key and Value instead of copying them:
	// the caller never changes them, and they hold no memory that should
	// be freed with something else (a fetched record batch).
	Owned bool
}

// OpKind says what an Op does.
type OpKind uint8

// The kinds of Op.
const (
	OpSet OpKind = iota
	OpDelete
	OpDeleteRange
)

// Backend is an ordered byte key-value engine holding the stores of one task.
// Apply is atomic: after a crash either all of a batch is visible or none of
// it. Implementations are safe for concurrent readers alongside one writer.
type Backend interface {
	// Get returns the value stored under key. The caller must not modify
	// it: it may be the backend's own copy, valid for as long as the
	// caller keeps it.
	Get(key []byte) (value []byte, ok bool, err error)
	// NewIter iterates keys in [lower, upper) in ascending byte order; a nil
	// upper means no upper bound. Keys and values are valid until Next.
	NewIter(lower, upper []byte) (Iter, error)
	// Apply writes all ops atomically, in order.
	Apply(ops []Op) error
	// Close releases the backend. Writes applied before Close are kept by
	// persistent backends.
	Close() error
}

// Iter walks a key range in ascending order.
type Iter interface {
	// Next advances to the next entry and reports whether there is one.
	Next() bool
	Key() []byte
	Value() []byte
	// Close releases the iterator and returns the first error it met.
	Close() error
}

// ErrClosed is returned by a Backend used after Close.
var ErrClosed = errors.New("store: backend closed")
