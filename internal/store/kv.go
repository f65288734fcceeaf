package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	public "github.com/exactly-go/exactly/store"
)

// Options configure one store.
type Options struct {
	// TTL, when positive, makes every Put expire TTL after the stream time at
	// which it was written. Expired entries are invisible to reads at once and
	// are deleted (and logged as tombstones) by SweepExpired.
	TTL time.Duration
	// Expiring enables per-entry expiry (PutExpiring) without a default TTL.
	// It is implied by TTL > 0. It changes the stored and logged value format
	// (an 8-byte expiry precedes the value), so it is fixed for a store's life.
	Expiring bool
}

// KV is one named store inside a Txn, on raw bytes. Reads see the task's
// buffered writes; writes are buffered until the Txn commits.
type KV struct {
	txn         *Txn
	name        string
	dataPrefix  []byte
	indexPrefix []byte
	// data and index are the write buffer's spaces of the two prefixes.
	data, index *pendingSpace
	expiring    bool
	ttl         int64 // milliseconds
	now         func() int64
	// cache holds decoded values of committed entries when a typed view
	// caches values (nil otherwise); see valueCache.
	cache *valueCache
	// uncached: a typed view must not cache committed values, because the
	// backend changes behind this KV (a global store).
	uncached bool
	// scratch holds the data key of a point read, which nothing keeps.
	scratch []byte
	// swept is the expiry up to which the buffer holds the deletion of
	// every index entry (-1: not known), so that a sweep does not read
	// again the entries an earlier one deleted while the backend still
	// holds them until the commit. Whatever drops buffered deletions or
	// changes the backend behind the buffer resets it (forgetSweeps).
	swept int64
}

// Open returns the store called name within the buffer. now reports the
// task's stream time in epoch milliseconds; expiry is measured against it.
func (t *Txn) Open(name string, opts Options, now func() int64) *KV {
	if kv, ok := t.stores[name]; ok {
		return kv
	}
	kv := &KV{
		txn:         t,
		name:        name,
		dataPrefix:  dataPrefix(name),
		indexPrefix: indexPrefix(name),
		expiring:    opts.Expiring || opts.TTL > 0,
		ttl:         opts.TTL.Milliseconds(),
		now:         now,
		swept:       -1,
	}
	kv.data, kv.index = t.space(kv.dataPrefix), t.space(kv.indexPrefix)
	t.stores[name] = kv
	return kv
}

// Name returns the store's name.
func (s *KV) Name() string { return s.name }

func (s *KV) dataKey(key []byte) []byte {
	return append(append(make([]byte, 0, len(s.dataPrefix)+len(key)), s.dataPrefix...), key...)
}

// readKey is dataKey in a buffer reused by the next call: for reads only.
func (s *KV) readKey(key []byte) []byte {
	s.scratch = append(append(s.scratch[:0], s.dataPrefix...), key...)
	return s.scratch
}

func (s *KV) indexKey(expiry int64, key []byte) []byte {
	b := make([]byte, 0, len(s.indexPrefix)+8+len(key))
	b = append(b, s.indexPrefix...)
	b = binary.BigEndian.AppendUint64(b, uint64(expiry))
	return append(b, key...)
}

// Get returns the value of key, or false if it is absent or expired.
func (s *KV) Get(key []byte) ([]byte, bool, error) { return s.getData(s.readKey(key)) }

// getData is Get of the data key dk.
func (s *KV) getData(dk []byte) ([]byte, bool, error) {
	raw, ok, err := s.txn.get(s.data, dk)
	if err != nil || !ok {
		return nil, false, err
	}
	return s.visible(raw)
}

func (s *KV) visible(raw []byte) ([]byte, bool, error) {
	v, _, ok, err := s.visibleAt(raw)
	return v, ok, err
}

// visibleAt is visible, also returning the entry's expiry (never on a
// store without expiry).
func (s *KV) visibleAt(raw []byte) ([]byte, int64, bool, error) {
	if !s.expiring {
		return raw, never, true, nil
	}
	exp, v, err := decodeExpiring(raw)
	if err != nil {
		return nil, 0, false, fmt.Errorf("store %s: %w", s.name, err)
	}
	if exp <= s.now() {
		return nil, 0, false, nil
	}
	return v, exp, true, nil
}

// Put sets key to value; a nil value deletes the key. On a store with a TTL
// the entry expires TTL after the current stream time.
func (s *KV) Put(key, value []byte) error { return s.put(s.dataKey(key), value, nil) }

// put is Put of the data key dk, a key made for the write buffer to keep,
// keeping decoded as the typed value that value encodes when the store
// caches decoded values.
func (s *KV) put(dk, value []byte, decoded any) error {
	if value == nil {
		return s.deleteData(dk)
	}
	if !s.expiring {
		s.txn.write(s.data, dk, value, false, false, s, decoded)
		return nil
	}
	exp := int64(never)
	if s.ttl > 0 {
		exp = max(s.now(), 0) + s.ttl
	}
	s.putExpiring(dk, value, exp, decoded)
	return nil
}

// PutExpiring sets key to value until stream time reaches expiresAt (epoch
// milliseconds).
func (s *KV) PutExpiring(key, value []byte, expiresAt int64) error {
	return s.putExpiringChecked(s.dataKey(key), value, expiresAt, nil)
}

// putExpiringChecked is PutExpiring of the data key dk (see put).
func (s *KV) putExpiringChecked(dk, value []byte, expiresAt int64, decoded any) error {
	if !s.expiring {
		return fmt.Errorf("store %s: %w", s.name, public.ErrNotExpiring)
	}
	if value == nil {
		return s.deleteData(dk)
	}
	s.putExpiring(dk, value, expiresAt, decoded)
	return nil
}

func (s *KV) putExpiring(dk, value []byte, exp int64, decoded any) {
	key := dk[len(s.dataPrefix):]
	s.txn.write(s.data, dk, encodeExpiring(exp, value), false, true, s, decoded)
	if exp != never {
		// An older index entry of this key, if any, is left in place: the
		// sweep recognises it as stale because the expiry no longer matches.
		s.txn.write(s.index, s.indexKey(exp, key), []byte{}, false, true, nil, nil)
		if exp <= s.swept {
			s.swept = exp - 1
		}
	}
}

// Delete removes key.
func (s *KV) Delete(key []byte) error { return s.deleteData(s.dataKey(key)) }

// deleteData is Delete of the data key dk (see put).
func (s *KV) deleteData(dk []byte) error {
	s.txn.write(s.data, dk, nil, true, true, s, nil)
	return nil
}

// lookup is what a read of one key found: the visible value, and its
// decoded form when the store caches one.
type lookup struct {
	found bool
	// value is the stored value without its expiry; nil when decoded came
	// from the cache of committed values.
	value   []byte
	decoded any
	// entry is the buffered write the value comes from, nil if it comes
	// from the backend; expiry is the entry's expiry (never if none).
	entry  *pendingEntry
	expiry int64
}

// getDecoded reads the data key dk as Get does, from the write buffer,
// then the cache of committed decoded values, then the backend.
func (s *KV) getDecoded(dk []byte) (lookup, error) {
	key := dk[len(s.dataPrefix):]
	if e, ok := s.data.entries[unsafeString(dk)]; ok {
		if e.deleted {
			return lookup{}, nil
		}
		v, exp, visible, err := s.visibleAt(e.value)
		if err != nil || !visible {
			return lookup{}, err
		}
		return lookup{found: true, value: v, decoded: e.decoded, entry: e, expiry: exp}, nil
	}
	if c, ok := s.cache.get(key); ok {
		if s.expiring && c.expiry <= s.now() {
			// Expired: invisible, and of no more use to the cache.
			s.cache.delete(key)
			return lookup{}, nil
		}
		return lookup{found: true, decoded: c.decoded, expiry: c.expiry}, nil
	}
	raw, ok, err := s.txn.backend.Get(dk)
	if err != nil || !ok {
		return lookup{}, err
	}
	v, exp, visible, err := s.visibleAt(raw)
	if err != nil || !visible {
		return lookup{}, err
	}
	return lookup{found: true, value: v, expiry: exp}, nil
}

// remember keeps decoded as the decoded form of the value l found at the
// data key dk, so that the next read does not decode it again.
func (s *KV) remember(dk []byte, l lookup, decoded any) {
	if l.entry != nil {
		l.entry.decoded = decoded
		return
	}
	key := dk[len(s.dataPrefix):]
	s.cache.put(key, cachedValue{expiry: l.expiry, decoded: decoded, size: entrySize(key, len(l.value))})
}

// CachedValues returns how many decoded committed values typed views of
// the store keep in memory for this task, and their size as the cache
// counts it against its bound (keys and encoded values plus a fixed
// overhead per value); see valueCache.
func (s *KV) CachedValues() (values, bytes int) { return s.cache.len() }

// Range iterates the live entries with from <= key < to in key byte order; a
// nil from starts at the first key, a nil to runs to the last.
func (s *KV) Range(from, to []byte) (*RawIter, error) {
	lower := s.dataKey(from)
	upper := prefixEnd(s.dataPrefix)
	if to != nil {
		upper = s.dataKey(to)
	}
	m, err := s.txn.iter(s.data, lower, upper)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", s.name, err)
	}
	return &RawIter{store: s, m: m}, nil
}

// Prefix iterates the live entries whose key starts with prefix.
func (s *KV) Prefix(prefix []byte) (*RawIter, error) {
	end := prefixEnd(prefix)
	if end == nil {
		return s.Range(prefix, nil)
	}
	return s.Range(prefix, end)
}

// ApproximateNumEntries returns the number of live entries. It walks the
// store, so it suits metrics and tests rather than the per-record path.
func (s *KV) ApproximateNumEntries() (int64, error) {
	it, err := s.Range(nil, nil)
	if err != nil {
		return 0, err
	}
	var n int64
	for it.Next() {
		n++
	}
	return n, it.Close()
}

// SweepExpired deletes every entry whose expiry is at or before the current
// stream time and returns how many it deleted. Its cost is proportional to
// the number of expired (and superseded) index entries, not to the store's
// size. Deletions are buffered and logged like any other write.
func (s *KV) SweepExpired() (int, error) {
	if !s.expiring {
		return 0, nil
	}
	now := s.now()
	if now < 0 {
		return 0, nil
	}
	if now <= s.swept {
		return 0, nil
	}
	lower := binary.BigEndian.AppendUint64(bytes.Clone(s.indexPrefix), uint64(s.swept+1))
	upper := binary.BigEndian.AppendUint64(bytes.Clone(s.indexPrefix), uint64(now)+1)
	m, err := s.txn.iter(s.index, lower, upper)
	if err != nil {
		return 0, fmt.Errorf("sweep %s: %w", s.name, err)
	}
	type due struct {
		indexKey []byte
		expiry   int64
	}
	var found []due
	for m.Next() {
		k := m.key
		found = append(found, due{indexKey: bytes.Clone(k), expiry: int64(binary.BigEndian.Uint64(k[len(s.indexPrefix):]))})
	}
	if err := m.Close(); err != nil {
		return 0, fmt.Errorf("sweep %s: %w", s.name, err)
	}
	deleted := 0
	for _, d := range found {
		key := d.indexKey[len(s.indexPrefix)+8:]
		raw, ok, err := s.txn.get(s.data, s.dataKey(key))
		if err != nil {
			return deleted, fmt.Errorf("sweep %s: %w", s.name, err)
		}
		if ok {
			exp, _, err := decodeExpiring(raw)
			if err != nil {
				return deleted, fmt.Errorf("sweep %s: %w", s.name, err)
			}
			if exp == d.expiry {
				s.txn.write(s.data, s.dataKey(key), nil, true, true, s, nil)
				deleted++
			}
		}
		s.txn.write(s.index, d.indexKey, nil, true, true, nil, nil)
	}
	s.swept = now
	return deleted, nil
}

// forgetSweeps resets what the store knows of earlier sweeps, when the
// buffered deletions they made are dropped or the backend changes.
func (s *KV) forgetSweeps() { s.swept = -1 }

// RawIter walks live entries of one store; keys are the store's keys.
type RawIter struct {
	store      *KV
	m          *mergeIter
	key, value []byte
	err        error
}

// Next advances to the next live entry.
func (it *RawIter) Next() bool {
	for it.err == nil && it.m.Next() {
		v, ok, err := it.store.visible(it.m.value)
		if err != nil {
			it.err = err
			return false
		}
		if ok {
			it.key, it.value = it.m.key[len(it.store.dataPrefix):], v
			return true
		}
	}
	return false
}

// Key returns the current key; valid until Next.
func (it *RawIter) Key() []byte { return it.key }

// Value returns the current value; valid until Next.
func (it *RawIter) Value() []byte { return it.value }

// Close releases the iterator and returns the first error met.
func (it *RawIter) Close() error {
	if err := it.m.Close(); err != nil && it.err == nil {
		it.err = err
	}
	return it.err
}
