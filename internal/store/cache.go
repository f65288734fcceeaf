package store

import (
	"encoding/binary"
	"reflect"
)

// The typed views of a store keep decoded values, so that a value written
// or read by a task is not decoded again (a typed record cache, as Kafka
// Streams keeps a byte cache in front of its stores):
//
//   - a value written in the current commit interval is kept, decoded,
//     beside its bytes in the write buffer (pendingEntry.decoded): it is
//     dropped with them on abort or when a failed record's writes are
//     undone, and becomes a committed value when the buffer commits;
//   - a committed value, read from the backend or written by a commit,
//     is kept in the store's valueCache, a bounded cache in front of the
//     backend, valid because only the task's own commits change the
//     backend (Restore and Wipe empty it).
//
// Interactive queries read the backend through a Txn of their own, so they
// never see the write buffer or its decoded values. The bytes stay the
// truth: the changelog and the backend get the serialized value, and a
// value the cache no longer holds is decoded from them again.
//
// A decoded value is shared between the cache and whoever reads it unless
// it is copied: Get hands out a copy and Put keeps a copy, so a processor
// that changes a value it read or wrote does not change what the store
// holds. Values are cached only for types that can be copied that way:
// types without pointers, slices, maps, channels, functions or interfaces
// (copied by assignment), and types with a Clone method returning a deep
// copy (see cloneFuncFor).

// A store's cache of committed values holds the values in use: those used
// in the task's current and previous commit intervals, within a bound. It
// keeps two generations; a value put into the cache (read from the
// backend, written by a commit, or found in the previous generation) goes
// into the current one. Each commit of the task's write buffer starts a
// new generation, the current one becoming the previous one and the
// oldest being dropped, so that a value not used for a whole commit
// interval leaves the cache; so does a generation that has taken
// cacheGenerationPuts values or cacheGenerationBytes bytes, so that the
// cache never holds more than twice either bound, however long the
// interval. The cache therefore grows with the keys in use per interval,
// not with the keys the task has ever seen. A value's size is counted as
// its key and encoded bytes plus cacheEntryOverhead; its decoded form
// usually takes a small multiple of its encoded size.
const (
	cacheGenerationPuts  = 1024
	cacheGenerationBytes = 256 << 10
	cacheEntryOverhead   = 64
)

// valueCache holds decoded committed values of one store of one task,
// within the bounds above.
type valueCache struct {
	current, previous map[string]cachedValue
	// puts and bytes count what the current generation took; prevBytes is
	// the size of the previous one.
	puts             int
	bytes, prevBytes int
	expiring         bool
}

// cachedValue is a decoded committed value, its expiry (never if none) and
// its size as counted against the cache's bound.
type cachedValue struct {
	expiry  int64
	decoded any
	size    int
}

func newValueCache(expiring bool) *valueCache {
	return &valueCache{current: map[string]cachedValue{}, expiring: expiring}
}

// entrySize is the size counted for a cached value of key whose encoded
// form has n bytes.
func entrySize(key []byte, n int) int { return len(key) + n + cacheEntryOverhead }

// get returns the cached value of key; a nil cache holds nothing.
func (c *valueCache) get(key []byte) (cachedValue, bool) {
	if c == nil {
		return cachedValue{}, false
	}
	if v, ok := c.current[string(key)]; ok {
		return v, true
	}
	if v, ok := c.previous[string(key)]; ok {
		c.put(key, v)
		return v, true
	}
	return cachedValue{}, false
}

func (c *valueCache) put(key []byte, v cachedValue) {
	if c == nil {
		return
	}
	if c.puts >= cacheGenerationPuts || c.bytes+v.size > cacheGenerationBytes {
		c.rotate()
	}
	if old, ok := c.current[string(key)]; ok {
		c.bytes -= old.size
	} else if old, ok := c.previous[string(key)]; ok {
		// An older value of key in the previous generation is stale.
		delete(c.previous, string(key))
		c.prevBytes -= old.size
	}
	c.current[string(key)] = v
	c.bytes += v.size
	c.puts++
}

// rotate starts a new generation: the current one becomes the previous
// one, and the previous one is dropped.
func (c *valueCache) rotate() {
	if len(c.current) == 0 && len(c.previous) == 0 {
		return
	}
	// The dropped generation's map is cleared and reused: its memory is
	// bounded like a generation.
	dropped := c.previous
	if dropped == nil {
		dropped = make(map[string]cachedValue, len(c.current))
	}
	clear(dropped)
	c.previous, c.current = c.current, dropped
	c.prevBytes, c.bytes, c.puts = c.bytes, 0, 0
}

func (c *valueCache) delete(key []byte) {
	if v, ok := c.current[string(key)]; ok {
		delete(c.current, string(key))
		c.bytes -= v.size
	}
	if v, ok := c.previous[string(key)]; ok {
		delete(c.previous, string(key))
		c.prevBytes -= v.size
	}
}

func (c *valueCache) clear() {
	c.current, c.previous = map[string]cachedValue{}, nil
	c.puts, c.bytes, c.prevBytes = 0, 0, 0
}

// len returns the number of values cached and their size as counted
// against the bound.
func (c *valueCache) len() (int, int) {
	if c == nil {
		return 0, 0
	}
	return len(c.current) + len(c.previous), c.bytes + c.prevBytes
}

// committed updates the cache with a buffered write of its store that
// the backend now holds: its decoded value, or nothing for a deletion or
// a write without one.
func (c *valueCache) committed(e *pendingEntry) {
	key := e.key[len(e.kv.dataPrefix):]
	if e.deleted || e.decoded == nil {
		c.delete(key)
		return
	}
	exp := int64(never)
	if c.expiring {
		if len(e.value) < 8 {
			c.delete(key)
			return
		}
		exp = int64(binary.BigEndian.Uint64(e.value))
	}
	c.put(key, cachedValue{expiry: exp, decoded: e.decoded, size: entrySize(key, len(e.value))})
}

// cloneFuncFor returns how a value of type V is copied so that the copy
// shares no mutable memory with the original, or nil if there is no such
// way and values of V are not cached. A type without references is copied
// by assignment; another type qualifies with a method
//
//	func (v V) Clone() V    or    func (v *V) Clone() V
//
// that returns a deep copy.
func cloneFuncFor[V any]() func(*V) V {
	if _, ok := any(new(V)).(interface{ Clone() V }); ok {
		return func(p *V) V { return any(p).(interface{ Clone() V }).Clone() }
	}
	if referenceFree(reflect.TypeFor[V]()) {
		return func(p *V) V { return *p }
	}
	return nil
}

// referenceFree reports whether values of t hold no pointer, slice, map,
// channel, function or interface, so that assignment copies them whole.
// Strings are immutable and count as values.
func referenceFree(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.String:
		return true
	case reflect.Array:
		return referenceFree(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !referenceFree(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}
