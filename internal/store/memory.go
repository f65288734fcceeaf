package store

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sync"

	"github.com/google/btree"
)

// Memory is an in-process Backend. Its contents live as long as the value:
// after a process dies, its stores are rebuilt from their changelogs.
//
// Point reads and writes of a store that nothing iterates cost a hash
// lookup, not an ordered search: each namespace of the key layout (a
// store's data, its expiry index, its checkpoints) is kept apart, and is
// ordered from the first iteration over it on. Keys outside the layout are
// accepted too, and kept ordered.
type Memory struct {
	mu     sync.RWMutex
	spaces map[string]*memSpace
	sorted []*memSpace // spaces in the order of their prefixes
	raw    *memSpace   // keys that are in no namespace
	closed bool
}

// memSpace holds the keys of one namespace: in points until something
// iterates it, in tree from then on.
type memSpace struct {
	prefix []byte
	end    []byte            // prefixEnd(prefix)
	points map[string]kvItem // by the key after the prefix; nil once ordered
	tree   *btree.BTreeG[kvItem]
}

// kvItem is one entry; key is the whole key, prefix included.
type kvItem struct{ key, value []byte }

func newMemSpace(prefix []byte, ordered bool) *memSpace {
	s := &memSpace{prefix: prefix, end: prefixEnd(prefix)}
	if ordered {
		s.order()
	} else {
		s.points = map[string]kvItem{}
	}
	return s
}

// order moves the space's entries into a tree, where they stay.
func (s *memSpace) order() {
	if s.tree != nil {
		return
	}
	s.tree = suffixTree(len(s.prefix), func(it kvItem) []byte { return it.key })
	for _, it := range s.points {
		s.tree.ReplaceOrInsert(it)
	}
	s.points = nil
}

func (s *memSpace) get(key []byte) (kvItem, bool) {
	if s.tree != nil {
		return s.tree.Get(kvItem{key: key})
	}
	it, ok := s.points[unsafeString(key[len(s.prefix):])]
	return it, ok
}

func (s *memSpace) set(it kvItem) {
	if s.tree != nil {
		s.tree.ReplaceOrInsert(it)
		return
	}
	s.points[unsafeString(it.key[len(s.prefix):])] = it
}

func (s *memSpace) delete(key []byte) {
	if s.tree != nil {
		s.tree.Delete(kvItem{key: key})
		return
	}
	delete(s.points, unsafeString(key[len(s.prefix):]))
}

func (s *memSpace) deleteRange(lower, upper []byte) {
	var doomed []kvItem
	s.visit(lower, upper, func(it kvItem) { doomed = append(doomed, it) })
	for _, it := range doomed {
		s.delete(it.key)
	}
}

func (s *memSpace) len() int {
	if s.tree != nil {
		return s.tree.Len()
	}
	return len(s.points)
}

// visit calls f for the space's entries in [lower, upper) (nil: unbounded),
// in ascending order once the space is ordered, in no order before.
func (s *memSpace) visit(lower, upper []byte, f func(kvItem)) {
	if s.tree == nil {
		for _, it := range s.points {
			if inRange(it.key, lower, upper) {
				f(it)
			}
		}
		return
	}
	ascend(s.tree, s.prefix, lower, upper, func(k []byte) kvItem { return kvItem{key: k} }, func(it kvItem) bool { f(it); return true })
}

// suffixTree returns an empty tree of items whose keys all share a prefix
// of n bytes, ordered by what follows it.
func suffixTree[T any](n int, key func(T) []byte) *btree.BTreeG[T] {
	return btree.NewG(32, func(a, b T) bool { return bytes.Compare(key(a)[n:], key(b)[n:]) < 0 })
}

// ascend visits the items of tr, a tree of keys that all start with
// prefix ordered by what follows it, that lie in [lower, upper) (nil:
// unbounded), in ascending order. probe makes an item of a key to search by.
func ascend[T any](tr *btree.BTreeG[T], prefix, lower, upper []byte, probe func([]byte) T, visit func(T) bool) {
	// Bounds outside the prefix's keys bound nothing on their side, or
	// leave nothing in range.
	if lower != nil && !bytes.HasPrefix(lower, prefix) {
		if bytes.Compare(lower, prefix) > 0 {
			return
		}
		lower = nil
	}
	if upper != nil && !bytes.HasPrefix(upper, prefix) {
		if bytes.Compare(upper, prefix) < 0 {
			return
		}
		upper = nil
	}
	switch {
	case lower == nil && upper == nil:
		tr.Ascend(visit)
	case upper == nil:
		tr.AscendGreaterOrEqual(probe(lower), visit)
	case lower == nil:
		tr.AscendLessThan(probe(upper), visit)
	default:
		tr.AscendRange(probe(lower), probe(upper), visit)
	}
}

func inRange(key, lower, upper []byte) bool {
	return (lower == nil || bytes.Compare(key, lower) >= 0) && (upper == nil || bytes.Compare(key, upper) < 0)
}

// splitNamespace returns the length of the namespace key starts with, or 0
// if key is not in the layout namespace describes.
func splitNamespace(key []byte) int {
	if len(key) == 0 || (key[0] != kindData && key[0] != kindIndex && key[0] != kindCheckpoint) {
		return 0
	}
	n, w := binary.Uvarint(key[1:])
	if w <= 0 || n > uint64(len(key)-1-w) {
		return 0
	}
	return 1 + w + int(n)
}

// NewMemory returns an empty in-memory backend.
func NewMemory() *Memory {
	return &Memory{spaces: map[string]*memSpace{}, raw: newMemSpace(nil, true)}
}

// space returns the space key belongs to, nil if it has none yet.
func (m *Memory) space(key []byte) *memSpace {
	n := splitNamespace(key)
	if n == 0 {
		return m.raw
	}
	return m.spaces[unsafeString(key[:n])]
}

// Get implements Backend.
func (m *Memory) Get(key []byte) ([]byte, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, false, ErrClosed
	}
	s := m.space(key)
	if s == nil {
		return nil, false, nil
	}
	it, ok := s.get(key)
	return it.value, ok, nil
}

// overlapping returns the spaces that may hold keys in [lower, upper), in
// the order of their keys, and whether raw keys may be in it too.
func (m *Memory) overlapping(lower, upper []byte) ([]*memSpace, bool) {
	// The first space that ends after lower, up to the first that starts
	// at or after upper.
	i, _ := slices.BinarySearchFunc(m.sorted, lower, func(s *memSpace, lower []byte) int {
		if s.end != nil && bytes.Compare(s.end, lower) <= 0 {
			return -1
		}
		return 1
	})
	j := i
	for j < len(m.sorted) && (upper == nil || bytes.Compare(m.sorted[j].prefix, upper) < 0) {
		j++
	}
	return m.sorted[i:j], m.raw.len() > 0
}

// NewIter implements Backend. The iterator sees a snapshot of the range taken
// when it is created.
func (m *Memory) NewIter(lower, upper []byte) (Iter, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	var items []kvItem
	add := func(it kvItem) { items = append(items, it) }
	spaces, raw := m.overlapping(lower, upper)
	for _, s := range spaces {
		s.order()
		s.visit(lower, upper, add)
	}
	if raw {
		m.raw.visit(lower, upper, add)
		if len(spaces) > 0 {
			// Raw keys may fall between the namespaces' keys.
			slices.SortFunc(items, func(a, b kvItem) int { return bytes.Compare(a.key, b.key) })
		}
	}
	return &sliceIter{items: items, pos: -1}, nil
}

// Apply implements Backend.
func (m *Memory) Apply(ops []Op) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, op := range ops {
		switch op.Kind {
		case OpSet:
			it := kvItem{key: op.Key, value: op.Value}
			if !op.Owned {
				it = kvItem{key: bytes.Clone(op.Key), value: bytes.Clone(op.Value)}
			}
			s := m.space(it.key)
			if s == nil {
				n := splitNamespace(it.key)
				s = newMemSpace(it.key[:n:n], false)
				m.spaces[unsafeString(s.prefix)] = s
				i, _ := slices.BinarySearchFunc(m.sorted, s.prefix, func(s *memSpace, p []byte) int { return bytes.Compare(s.prefix, p) })
				m.sorted = slices.Insert(m.sorted, i, s)
			}
			s.set(it)
		case OpDelete:
			if s := m.space(op.Key); s != nil {
				s.delete(op.Key)
			}
		case OpDeleteRange:
			spaces, raw := m.overlapping(op.Key, op.End)
			var whole []*memSpace
			for _, s := range spaces {
				if bytes.Compare(op.Key, s.prefix) <= 0 && (op.End == nil || bytes.Compare(s.end, op.End) <= 0) {
					whole = append(whole, s)
					continue
				}
				s.deleteRange(op.Key, op.End)
			}
			for _, s := range whole {
				delete(m.spaces, unsafeString(s.prefix))
				m.sorted = slices.DeleteFunc(m.sorted, func(o *memSpace) bool { return o == s })
			}
			if raw {
				m.raw.deleteRange(op.Key, op.End)
			}
		}
	}
	return nil
}

// Close implements Backend.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

type sliceIter struct {
	items []kvItem
	pos   int
}

func (s *sliceIter) Next() bool    { s.pos++; return s.pos < len(s.items) }
func (s *sliceIter) Key() []byte   { return s.items[s.pos].key }
func (s *sliceIter) Value() []byte { return s.items[s.pos].value }
func (s *sliceIter) Close() error  { return nil }
