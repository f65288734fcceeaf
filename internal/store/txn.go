package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/google/btree"
)

// Txn is the write buffer of one task: every store write of the task lands
// here first, reads see it (read-your-writes), and only Commit moves it to the
// Backend, in one atomic batch together with the stores' checkpoints. Discard
// drops it. A Txn is used by one goroutine, the task's.
type Txn struct {
	backend Backend
	// spaces holds the buffered writes per namespace (a store's data, its
	// expiry index), by the namespace's prefix.
	spaces map[string]*pendingSpace
	// dirty lists the spaces holding writes, pending how many.
	dirty   []*pendingSpace
	pending int
	stores  map[string]*KV

	// undo records the previous pending state of each key written since
	// BeginRecord, so that one record's effects can be rolled back alone.
	undo     []undoRecord
	tracking bool
}

// pendingSpace holds the buffered writes of one namespace. Point reads and
// writes go through a map; the space is also kept ordered, in a tree, once
// something iterated it (a range read, a sweep of the expiry index), so that
// stores nobody iterates pay no ordered search per write.
type pendingSpace struct {
	prefix  []byte
	entries map[string]*pendingEntry // by whole key; nil while empty
	// hint is how many keys the last batch held, the next map's room: a
	// commit drops the map rather than clearing it, which would keep the
	// room of the largest batch ever for good.
	hint int
	tree *btree.BTreeG[*pendingEntry] // nil until the space is iterated
}

// pendingEntry is one buffered write. Once buffered it is not changed,
// except that decoded may be filled in by a read: undo records point to
// replaced entries, which must stay as they were.
type pendingEntry struct {
	key     []byte
	value   []byte
	deleted bool
	// owned reports that the buffer made value itself (keys it always
	// makes), so that a backend may keep it: nobody else holds it.
	owned bool
	// kv is the store of a data key (nil for index keys), so that a commit
	// can move decoded values into the store's cache.
	kv *KV
	// decoded is the typed value value encodes, when the store caches
	// decoded values (see valueCache); nil otherwise.
	decoded any
}

type undoRecord struct {
	space *pendingSpace
	key   []byte
	prev  *pendingEntry // nil: the key was not pending
}

// NewTxn returns an empty write buffer over backend.
func NewTxn(backend Backend) *Txn {
	return &Txn{backend: backend, spaces: map[string]*pendingSpace{}, stores: map[string]*KV{}}
}

// space returns the buffer's space of the namespace prefix.
func (t *Txn) space(prefix []byte) *pendingSpace {
	if sp, ok := t.spaces[string(prefix)]; ok {
		return sp
	}
	sp := &pendingSpace{prefix: prefix}
	t.spaces[string(prefix)] = sp
	return sp
}

// order keeps the space ordered from now on.
func (sp *pendingSpace) order() {
	if sp.tree != nil {
		return
	}
	sp.tree = suffixTree(len(sp.prefix), func(e *pendingEntry) []byte { return e.key })
	for _, e := range sp.entries {
		sp.tree.ReplaceOrInsert(e)
	}
}

// sorted returns the space's entries in key order.
func (sp *pendingSpace) sorted() []*pendingEntry {
	out := make([]*pendingEntry, 0, len(sp.entries))
	if sp.tree != nil {
		sp.tree.Ascend(func(e *pendingEntry) bool { out = append(out, e); return true })
		return out
	}
	for _, e := range sp.entries {
		out = append(out, e)
	}
	n := len(sp.prefix)
	slices.SortFunc(out, func(a, b *pendingEntry) int { return bytes.Compare(a.key[n:], b.key[n:]) })
	return out
}

// reset empties the space for the next batch.
func (sp *pendingSpace) reset() {
	sp.hint = len(sp.entries)
	sp.entries = nil
	if sp.tree != nil {
		sp.tree.Clear(false)
	}
}

// Backend returns the backend the buffer commits to.
func (t *Txn) Backend() Backend { return t.backend }

// Change is one changelog record: the store key and its encoded value, nil
// for a deletion (a tombstone in the changelog topic).
type Change struct {
	Key   []byte
	Value []byte
}

// Changes returns the changes buffered for store name since the last Commit
// or Discard, one per key (the latest write wins), in key order.
func (t *Txn) Changes(name string) []Change {
	kv, ok := t.stores[name]
	if !ok || len(kv.data.entries) == 0 {
		return nil
	}
	entries := kv.data.sorted()
	out := make([]Change, 0, len(entries))
	for _, e := range entries {
		c := Change{Key: e.key[len(kv.dataPrefix):]}
		if !e.deleted {
			c.Value = e.value
		}
		out = append(out, c)
	}
	return out
}

// Dirty reports whether anything is buffered.
func (t *Txn) Dirty() bool { return t.pending > 0 }

// Commit applies every buffered write and the given checkpoints (store name
// to the changelog offset the store is now current up to) to the backend in
// one atomic batch, then empties the buffer. On error nothing was applied and
// the buffer is kept.
func (t *Txn) Commit(checkpoints map[string]int64) error {
	ops := make([]Op, 0, t.pending+len(checkpoints))
	for _, sp := range t.dirty {
		for _, e := range sp.entries {
			if e.deleted {
				ops = append(ops, Op{Kind: OpDelete, Key: e.key, Owned: true})
			} else {
				ops = append(ops, Op{Kind: OpSet, Key: e.key, Value: e.value, Owned: e.owned})
			}
		}
	}
	for name, offset := range checkpoints {
		ops = append(ops, Op{Kind: OpSet, Key: checkpointKey(name), Value: binary.BigEndian.AppendUint64(nil, uint64(offset)), Owned: true})
	}
	if len(ops) == 0 {
		return nil
	}
	if err := t.backend.Apply(ops); err != nil {
		return fmt.Errorf("apply committed writes: %w", err)
	}
	for _, kv := range t.stores {
		if kv.cache != nil {
			kv.cache.rotate()
		}
	}
	for _, sp := range t.dirty {
		for _, e := range sp.entries {
			if e.kv != nil && e.kv.cache != nil {
				e.kv.cache.committed(e)
			}
		}
	}
	t.clear()
	return nil
}

// clear empties the buffer.
func (t *Txn) clear() {
	for _, sp := range t.dirty {
		sp.reset()
	}
	clear(t.dirty)
	t.dirty = t.dirty[:0]
	t.pending = 0
	t.undo = t.undo[:0]
}

// Discard drops every buffered write; the backend is untouched.
func (t *Txn) Discard() {
	t.forgetSweeps()
	t.clear()
	t.tracking = false
}

func (t *Txn) forgetSweeps() {
	for _, kv := range t.stores {
		kv.forgetSweeps()
	}
}

// BeginRecord starts a savepoint: writes from here on can be undone by
// EndRecord(false) without touching earlier buffered writes.
func (t *Txn) BeginRecord() {
	t.undo = t.undo[:0]
	t.tracking = true
}

// EndRecord closes the savepoint opened by BeginRecord, keeping its writes
// when keep is true and undoing them otherwise.
func (t *Txn) EndRecord(keep bool) {
	if !keep {
		t.forgetSweeps()
		for i := len(t.undo) - 1; i >= 0; i-- {
			u := t.undo[i]
			sp := u.space
			if u.prev == nil {
				delete(sp.entries, unsafeString(u.key))
				if sp.tree != nil {
					sp.tree.Delete(&pendingEntry{key: u.key})
				}
				t.pending--
			} else {
				sp.entries[unsafeString(u.prev.key)] = u.prev
				if sp.tree != nil {
					sp.tree.ReplaceOrInsert(u.prev)
				}
			}
		}
	}
	t.undo = t.undo[:0]
	t.tracking = false
}

// Checkpoint returns the committed changelog offset store name is current up
// to, and false if the store has none (never committed, or wiped).
func (t *Txn) Checkpoint(name string) (int64, bool, error) {
	return t.checkpoint(name, checkpointKey(name))
}

// PartitionCheckpoint is Checkpoint for one partition of a store that
// holds every partition of its topic (a global store), each partition
// with a checkpoint of its own.
func (t *Txn) PartitionCheckpoint(name string, partition int32) (int64, bool, error) {
	return t.checkpoint(name, partitionCheckpointKey(name, partition))
}

func (t *Txn) checkpoint(name string, key []byte) (int64, bool, error) {
	v, ok, err := t.backend.Get(key)
	if err != nil || !ok {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, false, fmt.Errorf("store %s: corrupt checkpoint (%d bytes)", name, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), true, nil
}

// Wipe deletes store name's data, expiry index and checkpoints (its own
// and its partitions') from the backend, so that it can be rebuilt from its
// changelog from offset 0.
func (t *Txn) Wipe(name string) error {
	if kv, ok := t.stores[name]; ok {
		kv.forgetSweeps()
		if kv.cache != nil {
			kv.cache.clear()
		}
	}
	data, index := dataPrefix(name), indexPrefix(name)
	return t.backend.Apply([]Op{
		{Kind: OpDeleteRange, Key: data, End: prefixEnd(data)},
		{Kind: OpDeleteRange, Key: index, End: prefixEnd(index)},
		{Kind: OpDeleteRange, Key: checkpointKey(name), End: prefixEnd(checkpointKey(name))},
	})
}

// Restore applies changelog records of store name directly to the backend,
// together with the checkpoint next (the offset after the last record), in
// one atomic batch. The buffer must hold nothing for the store.
func (t *Txn) Restore(name string, changes []Change, next int64) error {
	return t.restore(name, checkpointKey(name), changes, next)
}

// RestorePartition is Restore for the records of one partition of a store
// that holds every partition of its topic: next becomes that partition's
// checkpoint (PartitionCheckpoint).
func (t *Txn) RestorePartition(name string, partition int32, changes []Change, next int64) error {
	return t.restore(name, partitionCheckpointKey(name, partition), changes, next)
}

func (t *Txn) restore(name string, checkpoint []byte, changes []Change, next int64) error {
	kv, ok := t.stores[name]
	if !ok {
		return fmt.Errorf("restore: store %q is not open", name)
	}
	kv.forgetSweeps()
	if kv.cache != nil {
		kv.cache.clear()
	}
	ops := make([]Op, 0, 2*len(changes)+1)
	for _, c := range changes {
		key := kv.dataKey(c.Key)
		if c.Value == nil {
			ops = append(ops, Op{Kind: OpDelete, Key: key})
			continue
		}
		ops = append(ops, Op{Kind: OpSet, Key: key, Value: c.Value})
		if kv.expiring {
			exp, _, err := decodeExpiring(c.Value)
			if err != nil {
				return fmt.Errorf("restore %s: %w", name, err)
			}
			if exp != never {
				ops = append(ops, Op{Kind: OpSet, Key: kv.indexKey(exp, c.Key)})
			}
		}
	}
	ops = append(ops, Op{Kind: OpSet, Key: checkpoint, Value: binary.BigEndian.AppendUint64(nil, uint64(next))})
	return t.backend.Apply(ops)
}

// get reads key of the space sp: its buffered write, else the backend.
func (t *Txn) get(sp *pendingSpace, key []byte) ([]byte, bool, error) {
	if e, ok := sp.entries[unsafeString(key)]; ok {
		if e.deleted {
			return nil, false, nil
		}
		return e.value, true, nil
	}
	return t.backend.Get(key)
}

// unsafeString is b as a string without a copy, for keys nobody changes.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// write buffers a write of key, a key of the space sp the caller made for
// it; owned says the same of value. kv and decoded are set for data keys of
// a store that caches decoded values (see pendingEntry).
func (t *Txn) write(sp *pendingSpace, key, value []byte, deleted, owned bool, kv *KV, decoded any) {
	e := &pendingEntry{key: key, value: value, deleted: deleted, owned: owned, kv: kv, decoded: decoded}
	if sp.entries == nil {
		sp.entries = make(map[string]*pendingEntry, sp.hint)
		t.dirty = append(t.dirty, sp)
	}
	prev, had := sp.entries[unsafeString(key)]
	sp.entries[unsafeString(key)] = e
	if !had {
		t.pending++
	}
	if sp.tree != nil {
		sp.tree.ReplaceOrInsert(e)
	}
	if t.tracking {
		t.undo = append(t.undo, undoRecord{space: sp, key: key, prev: prev})
	}
}

// iter merges the buffer and the backend over [lower, upper), a range
// within the space sp: buffered entries shadow the backend's, buffered
// deletions hide them.
func (t *Txn) iter(sp *pendingSpace, lower, upper []byte) (*mergeIter, error) {
	var buffered []*pendingEntry
	sp.order()
	ascend(sp.tree, sp.prefix, lower, upper, func(k []byte) *pendingEntry { return &pendingEntry{key: k} }, func(e *pendingEntry) bool {
		buffered = append(buffered, e)
		return true
	})
	base, err := t.backend.NewIter(lower, upper)
	if err != nil {
		return nil, err
	}
	m := &mergeIter{buffered: buffered, base: base}
	m.baseOK = base.Next()
	return m, nil
}

type mergeIter struct {
	buffered   []*pendingEntry
	base       Iter
	baseOK     bool
	advance    bool // the base's current entry was handed out; step past it on Next
	key, value []byte
}

func (m *mergeIter) Next() bool {
	if m.advance {
		m.advance = false
		m.baseOK = m.base.Next()
	}
	for {
		var fromBuffer *pendingEntry
		switch {
		case len(m.buffered) > 0 && m.baseOK:
			c := bytes.Compare(m.buffered[0].key, m.base.Key())
			if c <= 0 {
				fromBuffer = m.buffered[0]
				m.buffered = m.buffered[1:]
				if c == 0 {
					m.baseOK = m.base.Next()
				}
			}
		case len(m.buffered) > 0:
			fromBuffer = m.buffered[0]
			m.buffered = m.buffered[1:]
		case !m.baseOK:
			return false
		}
		if fromBuffer != nil {
			if fromBuffer.deleted {
				continue
			}
			m.key, m.value = fromBuffer.key, fromBuffer.value
			return true
		}
		m.key, m.value = m.base.Key(), m.base.Value()
		m.advance = true
		return true
	}
}

func (m *mergeIter) Close() error { return m.base.Close() }

// Key layout in a backend, per store name N:
//
//	'd' len(N) N key          data (value, or expiry+value for expiring stores)
//	't' len(N) N expiry key   expiry index (empty value)
//	'c' len(N) N              checkpoint (8-byte big-endian offset)
//	'c' len(N) N uvarint(P)   checkpoint of partition P, for a store holding
//	                          every partition of its topic (a global store)
const (
	kindData       = 'd'
	kindIndex      = 't'
	kindCheckpoint = 'c'
)

func namespace(kind byte, name string) []byte {
	b := append([]byte{kind}, binary.AppendUvarint(nil, uint64(len(name)))...)
	return append(b, name...)
}

func dataPrefix(name string) []byte    { return namespace(kindData, name) }
func indexPrefix(name string) []byte   { return namespace(kindIndex, name) }
func checkpointKey(name string) []byte { return namespace(kindCheckpoint, name) }

// partitionCheckpointKey lies within the range of checkpointKey(name)'s
// prefix, so that Wipe removes it with the store's own checkpoint.
func partitionCheckpointKey(name string, partition int32) []byte {
	return binary.AppendUvarint(checkpointKey(name), uint64(partition))
}

// prefixEnd returns the smallest key greater than every key starting with p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// never is the expiry of an entry that does not expire.
const never = math.MaxInt64

func encodeExpiring(expiry int64, value []byte) []byte {
	b := make([]byte, 8, 8+len(value))
	binary.BigEndian.PutUint64(b, uint64(expiry))
	return append(b, value...)
}

func decodeExpiring(b []byte) (expiry int64, value []byte, err error) {
	if len(b) < 8 {
		return 0, nil, fmt.Errorf("corrupt expiring value (%d bytes)", len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), b[8:], nil
}
