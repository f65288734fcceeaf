package store

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
)

// Pebble is a persistent Backend on a Pebble database in its own directory.
// Batches are applied without fsync unless PebbleOptions.Sync says
// otherwise: a batch lost to a machine crash only leaves the store behind
// its checkpoint, and restore catches it up from the changelog, which is
// the source of truth.
type Pebble struct {
	db   *pebble.DB
	dir  string
	sync bool
}

// PebbleOptions tune a Pebble store. The zero value is Pebble's defaults:
// a block cache of the store's own (8 MiB), a 4 MiB memtable, no fsync.
type PebbleOptions struct {
	// Cache is a block cache shared with other stores; nil gives the store
	// a cache of its own.
	Cache *BlockCache
	// MemTableSize is the size in bytes of the memtable, where writes
	// gather before they are flushed to disk; 0 is Pebble's default, 4 MiB.
	MemTableSize int64
	// Sync makes every applied batch durable (fsync of the write-ahead
	// log) before Apply returns.
	Sync bool
}

// BlockCache is a cache of uncompressed blocks read from disk that stores
// opened with it share.
type BlockCache struct{ c *pebble.Cache }

// NewBlockCache returns a block cache of size bytes. Its memory is taken as
// blocks are read, not at once. Release it once no store will be opened
// with it any more; stores still open keep it until they close.
func NewBlockCache(size int64) *BlockCache { return &BlockCache{c: pebble.NewCache(size)} }

// Release drops the caller's reference to the cache.
func (c *BlockCache) Release() { c.c.Unref() }

// OpenPebble opens (creating if needed) the Pebble database in dir with
// Pebble's defaults. It fails if another process holds the directory.
func OpenPebble(dir string) (*Pebble, error) { return OpenPebbleWith(dir, PebbleOptions{}) }

// OpenPebbleWith opens (creating if needed) the Pebble database in dir,
// tuned by o. It fails if another process holds the directory.
func OpenPebbleWith(dir string, o PebbleOptions) (*Pebble, error) {
	opts := &pebble.Options{Logger: quietLogger{}}
	if o.Cache != nil {
		opts.Cache = o.Cache.c
	}
	if o.MemTableSize > 0 {
		opts.MemTableSize = uint64(o.MemTableSize)
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("open pebble store in %s: %w", dir, err)
	}
	return &Pebble{db: db, dir: dir, sync: o.Sync}, nil
}

// MinFreeBytes is the free space a persistent store's file system must
// have before the store is opened or a commit is applied to it. Below it,
// CheckFreeSpace fails: Pebble does not fail cleanly when the disk fills up
// under it (it can panic while rotating its log, or hang while opening).
const MinFreeBytes = 32 << 20

// CheckFreeSpace returns an error wrapping syscall.ENOSPC ("no space left
// on device") when the file system holding dir has less than MinFreeBytes
// available.
func CheckFreeSpace(dir string) error {
	var st syscall.Statfs_t
	for d := dir; ; d = filepath.Dir(d) {
		if err := syscall.Statfs(d, &st); err == nil {
			break
		} else if !errors.Is(err, syscall.ENOENT) || d == filepath.Dir(d) {
			return fmt.Errorf("state directory %s: %w", dir, err)
		}
	}
	if free := st.Bavail * uint64(st.Bsize); free < MinFreeBytes {
		return fmt.Errorf("state directory %s has %d bytes free, less than the %d a store needs: free space or move the state directory: %w",
			dir, free, MinFreeBytes, syscall.ENOSPC)
	}
	return nil
}

// IsCorrupt reports whether err says a store's files are damaged, so that
// the store must be rebuilt from its changelog. A store that could not be
// opened for another reason (a lock, no file descriptors, a full disk) is
// not corrupt.
func IsCorrupt(err error) bool { return pebble.IsCorruptionError(err) }

// Dir returns the directory the database lives in.
func (p *Pebble) Dir() string { return p.dir }

// Get implements Backend.
func (p *Pebble) Get(key []byte) ([]byte, bool, error) {
	v, closer, err := p.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := bytes.Clone(v)
	return out, true, closer.Close()
}

// NewIter implements Backend.
func (p *Pebble) NewIter(lower, upper []byte) (Iter, error) {
	it, err := p.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	return &pebbleIter{it: it}, nil
}

// Apply implements Backend in one Pebble batch.
func (p *Pebble) Apply(ops []Op) error {
	b := p.db.NewBatch()
	defer b.Close()
	for _, op := range ops {
		var err error
		switch op.Kind {
		case OpSet:
			err = b.Set(op.Key, op.Value, nil)
		case OpDelete:
			err = b.Delete(op.Key, nil)
		case OpDeleteRange:
			err = b.DeleteRange(op.Key, op.End, nil)
		}
		if err != nil {
			return err
		}
	}
	if p.sync {
		return b.Commit(pebble.Sync)
	}
	return b.Commit(pebble.NoSync)
}

// Close implements Backend.
func (p *Pebble) Close() error { return p.db.Close() }

type pebbleIter struct {
	it      *pebble.Iterator
	started bool
}

func (p *pebbleIter) Next() bool {
	if !p.started {
		p.started = true
		return p.it.First()
	}
	return p.it.Next()
}
func (p *pebbleIter) Key() []byte   { return p.it.Key() }
func (p *pebbleIter) Value() []byte { return p.it.Value() }
func (p *pebbleIter) Close() error  { return p.it.Close() }

// quietLogger drops Pebble's informational messages; errors reach callers
// through return values.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}

// Sync makes every batch applied so far durable on disk.
func (p *Pebble) Sync() error { return p.db.LogData(nil, pebble.Sync) }
