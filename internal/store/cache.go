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

// cacheGeneration is the number of committed values each generation of a
// store's cache holds per task: the cache holds at most twice that.
const cacheGeneration = 2048

// valueCache holds decoded committed values of one store of one task. It
// is bounded by two generations: when the current one is full it becomes
// the previous one and the oldest is dropped; a value found in the previous
// generation moves to the current one, so values in use stay.
type valueCache struct {
	current, previous map[string]cachedValue
	expiring          bool
}

// cachedValue is a decoded committed value and its expiry (never if none).
type cachedValue struct {
	expiry  int64
	decoded any
}

func newValueCache(expiring bool) *valueCache {
	return &valueCache{current: map[string]cachedValue{}, expiring: expiring}
}

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
	if len(c.current) >= cacheGeneration {
		c.previous, c.current = c.current, make(map[string]cachedValue, cacheGeneration)
	}
	c.current[string(key)] = v
}

func (c *valueCache) delete(key []byte) {
	delete(c.current, string(key))
	delete(c.previous, string(key))
}

func (c *valueCache) clear() {
	c.current, c.previous = map[string]cachedValue{}, nil
}

// len returns the number of keys cached.
func (c *valueCache) len() int {
	n := len(c.current)
	for k := range c.previous {
		if _, ok := c.current[k]; !ok {
			n++
		}
	}
	return n
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
	c.put(key, cachedValue{expiry: exp, decoded: e.decoded})
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
