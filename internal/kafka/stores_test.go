package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
)

func storeWorker(t *testing.T) (*worker, *worker) {
	r := &Runner{stateDir: t.TempDir(), cfg: Config{RebalanceTimeout: 5 * time.Second}}
	log := slog.New(slog.DiscardHandler)
	return &worker{r: r, log: log}, &worker{r: r, index: 1, log: log}
}

func putKeys(t *testing.T, p *store.Pebble, n int) {
	t.Helper()
	ops := make([]store.Op, 0, n)
	for i := range n {
		ops = append(ops, store.Op{Kind: store.OpSet, Key: fmt.Appendf(nil, "k%06d", i), Value: []byte("v")})
	}
	if err := p.Apply(ops); err != nil {
		t.Fatal(err)
	}
}

func files(t *testing.T, dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return len(entries)
}

// TestStoreLockedElsewhereIsNeverWiped: a store another holder has open (a
// lock, not corruption) fails to open and loses no file.
func TestStoreLockedElsewhereIsNeverWiped(t *testing.T) {
	w, _ := storeWorker(t)
	id := topo.TaskID{Partition: 1}
	db, err := pebble.Open(w.r.taskDir(id), &pebble.Options{Logger: quietPebble{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Set([]byte("k"), []byte("v"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	before := files(t, w.r.taskDir(id))
	if p, release, err := w.r.openPersistent(context.Background(), id, w.log); err == nil {
		p.Close()
		release()
		t.Fatal("a store locked by another holder opened")
	}
	if after := files(t, w.r.taskDir(id)); after != before {
		t.Fatalf("the locked store's directory had %d files before the failed open and %d after", before, after)
	}
	if _, closer, err := db.Get([]byte("k")); err != nil {
		t.Fatalf("the holder lost its data: %v", err)
	} else {
		closer.Close()
	}
}

// TestTaskDirectoryMovesBetweenWorkersOnlyWhenClosed: with several workers
// in one process, the worker a task moves to waits until the worker it
// left has closed the store, and then finds its data.
func TestTaskDirectoryMovesBetweenWorkersOnlyWhenClosed(t *testing.T) {
	leaving, taking := storeWorker(t)
	id := topo.TaskID{Partition: 2}
	p, release, err := leaving.r.openPersistent(context.Background(), id, leaving.log)
	if err != nil {
		t.Fatal(err)
	}
	putKeys(t, p, 100)
	closed := make(chan time.Time, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		p.Close()
		closed <- time.Now()
		release()
	}()
	q, release2, err := taking.r.openPersistent(context.Background(), id, taking.log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q.Close(); release2() }()
	opened := time.Now()
	if at := <-closed; opened.Before(at) {
		t.Fatal("the store opened in the second worker before the first closed it")
	}
	if _, ok, err := q.Get([]byte("k000099")); err != nil || !ok {
		t.Fatalf("the data written before the move is gone (found %v, err %v)", ok, err)
	}

	// A holder that never lets go makes the open fail after the wait,
	// deleting nothing.
	taking.r.cfg.RebalanceTimeout = 100 * time.Millisecond
	if _, _, err := leaving.r.openPersistent(context.Background(), id, leaving.log); err == nil {
		t.Fatal("opened a store another worker holds")
	}
	if _, ok, _ := q.Get([]byte("k000099")); !ok {
		t.Fatal("the failed open lost data")
	}
}

// TestCorruptStoreIsWipedForRebuild: a store whose files Pebble reports as
// corrupt is wiped and opens empty, to be restored from the changelog.
func TestCorruptStoreIsWipedForRebuild(t *testing.T) {
	w, _ := storeWorker(t)
	id := topo.TaskID{Partition: 3}
	p, release, err := w.r.openPersistent(context.Background(), id, w.log)
	if err != nil {
		t.Fatal(err)
	}
	putKeys(t, p, 10)
	p.Close()
	release()
	manifests, _ := filepath.Glob(filepath.Join(w.r.taskDir(id), "MANIFEST-*"))
	if len(manifests) == 0 {
		t.Fatal("no manifest to damage")
	}
	for _, m := range manifests {
		if err := os.WriteFile(m, []byte("this is not a pebble manifest, it is damaged beyond repair"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p, release, err = w.r.openPersistent(context.Background(), id, w.log)
	if err != nil {
		t.Fatalf("a corrupt store was not rebuilt: %v", err)
	}
	defer func() { p.Close(); release() }()
	if _, ok, _ := p.Get([]byte("k000001")); ok {
		t.Fatal("the corrupt store's data survived the wipe")
	}
}

// TestReadersKeepAClosingStoreOpen: a query or a metrics scrape that has
// started reading finishes before the store closes, and one that starts
// after the close reads nothing instead of a closed database (which
// panics in Pebble).
func TestReadersKeepAClosingStoreOpen(t *testing.T) {
	w, _ := storeWorker(t)
	id := topo.TaskID{Partition: 4}
	p, release, err := w.r.openPersistent(context.Background(), id, w.log)
	if err != nil {
		t.Fatal(err)
	}
	putKeys(t, p, 50_000)
	lt := &liveTask{id: id, persistent: p, release: release}
	lt.query = &queryTarget{persistent: p}

	reading, done := make(chan struct{}), make(chan int, 1)
	go func() {
		lt.query.read(true, func(persistent store.Backend) error {
			close(reading)
			time.Sleep(100 * time.Millisecond) // the close arrives meanwhile
			it, err := persistent.NewIter(nil, nil)
			if err != nil {
				return err
			}
			n := 0
			for it.Next() {
				n++
			}
			done <- n
			return it.Close()
		})
	}()
	<-reading
	lt.closeStores()
	if n := <-done; n != 50_000 {
		t.Fatalf("the reader saw %d entries of 50000", n)
	}
	if ok, _ := lt.query.read(true, func(store.Backend) error { panic("read a closed store") }); ok {
		t.Fatal("a closed store was offered to a reader")
	}
}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
