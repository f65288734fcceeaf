package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
)

// taskDir is where a task's persistent stores live.
func (r *Runner) taskDir(id topo.TaskID) string {
	return filepath.Join(r.stateDir, id.String())
}

// errDirHeld says a store directory stayed open in this process too long.
var errDirHeld = errors.New("the store directory is still open in this process")

// openPersistent opens the task's Pebble store and returns the function
// that hands the directory back once the store is closed. A directory is
// open at most once per process: with several workers, the one a task moves
// to waits until the one it left has closed it (bounded by the rebalance
// timeout).
func (r *Runner) openPersistent(ctx context.Context, id topo.TaskID, log *slog.Logger) (*store.Pebble, func(), error) {
	p, release, err := r.openStoreDir(ctx, r.taskDir(id), log.With("task", id))
	if err != nil {
		return nil, nil, fmt.Errorf("open store of task %s: %w", id, err)
	}
	return p, release, nil
}

// openStoreDir opens the Pebble store in dir, once per process (see
// openPersistent). Only a store Pebble reports as corrupt is wiped, to be
// rebuilt from the changelogs; any other failure (a lock, no file
// descriptors, a full disk) is returned and deletes nothing.
func (r *Runner) openStoreDir(ctx context.Context, dir string, log *slog.Logger) (*store.Pebble, func(), error) {
	release, err := r.acquireDir(ctx, dir, r.cfg.RebalanceTimeout)
	if err != nil {
		return nil, nil, err
	}
	if err := store.CheckFreeSpace(dir); err != nil {
		release()
		return nil, nil, err
	}
	slow := time.AfterFunc(10*time.Second, func() {
		log.Warn("opening a store is taking long", "dir", dir)
	})
	p, err := store.OpenPebbleWith(dir, r.storeOptions())
	slow.Stop()
	if err != nil && store.IsCorrupt(err) {
		log.Warn("local store corrupt; wiping it to rebuild from the changelogs", "dir", dir, "err", err)
		if rmErr := os.RemoveAll(dir); rmErr != nil {
			release()
			return nil, nil, fmt.Errorf("wipe %s: %w", dir, rmErr)
		}
		p, err = store.OpenPebbleWith(dir, r.storeOptions())
	}
	if err != nil {
		release()
		return nil, nil, err
	}
	return p, release, nil
}

// storeOptions tune the persistent stores as the configuration says.
func (r *Runner) storeOptions() store.PebbleOptions {
	return store.PebbleOptions{Cache: r.blockCache, MemTableSize: r.cfg.StoreMemTableSize, Sync: r.cfg.StoreSyncWrites}
}

// acquireDir marks dir as open in this process, waiting up to wait for a
// previous holder to release it.
func (r *Runner) acquireDir(ctx context.Context, dir string, wait time.Duration) (release func(), err error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		r.mu.Lock()
		held := r.openDirs[dir]
		if held == nil {
			if r.openDirs == nil {
				r.openDirs = map[string]chan struct{}{}
			}
			done := make(chan struct{})
			r.openDirs[dir] = done
			r.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					r.mu.Lock()
					delete(r.openDirs, dir)
					r.mu.Unlock()
					close(done)
				})
			}, nil
		}
		r.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, fmt.Errorf("%w after %v (%s)", errDirHeld, wait, dir)
		}
	}
}

// closeStores closes the task's stores once no reader uses them, then hands
// its directory back.
func (lt *liveTask) closeStores() {
	if lt.query != nil {
		lt.query.close()
	}
	if lt.persistent != nil {
		lt.persistent.Close()
		lt.persistent = nil
	}
	if lt.release != nil {
		lt.release()
		lt.release = nil
	}
}

// queryTarget is what interactive queries and the store metrics may read
// of a local task: its backends, which hold committed data only. Readers
// hold it open; the task's stores close only after the last reader is done,
// and a closed target reads as not local.
type queryTarget struct {
	mu                 sync.RWMutex
	closed             bool
	memory, persistent store.Backend
}

// read runs f on the backend holding a store (persistent or not) unless
// the target was closed.
func (q *queryTarget) read(persistent bool, f func(store.Backend) error) (ok bool, err error) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return false, nil
	}
	if persistent {
		return true, f(q.persistent)
	}
	return true, f(q.memory)
}

func (q *queryTarget) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

func pebbleOrNil(p *store.Pebble) store.Backend {
	if p == nil {
		return nil
	}
	return p
}
