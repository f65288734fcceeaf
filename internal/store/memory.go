package store

import (
	"bytes"
	"sync"

	"github.com/google/btree"
)

// Memory is an in-process Backend. Its contents live as long as the value:
// after a process dies, its stores are rebuilt from their changelogs.
type Memory struct {
	mu     sync.RWMutex
	tree   *btree.BTreeG[kvItem]
	closed bool
}

type kvItem struct{ key, value []byte }

func lessItem(a, b kvItem) bool { return bytes.Compare(a.key, b.key) < 0 }

// NewMemory returns an empty in-memory backend.
func NewMemory() *Memory {
	return &Memory{tree: btree.NewG(32, lessItem)}
}

// Get implements Backend.
func (m *Memory) Get(key []byte) ([]byte, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, false, ErrClosed
	}
	it, ok := m.tree.Get(kvItem{key: key})
	return it.value, ok, nil
}

// NewIter implements Backend. The iterator sees a snapshot of the range taken
// when it is created.
func (m *Memory) NewIter(lower, upper []byte) (Iter, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	var items []kvItem
	visit := func(it kvItem) bool { items = append(items, it); return true }
	if upper == nil {
		m.tree.AscendGreaterOrEqual(kvItem{key: lower}, visit)
	} else {
		m.tree.AscendRange(kvItem{key: lower}, kvItem{key: upper}, visit)
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
			m.tree.ReplaceOrInsert(it)
		case OpDelete:
			m.tree.Delete(kvItem{key: op.Key})
		case OpDeleteRange:
			var doomed []kvItem
			m.tree.AscendRange(kvItem{key: op.Key}, kvItem{key: op.End}, func(it kvItem) bool {
				doomed = append(doomed, it)
				return true
			})
			for _, it := range doomed {
				m.tree.Delete(it)
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
