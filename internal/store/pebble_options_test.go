package store

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// fsyncs counts the write-ahead-log fsyncs of p so far.
func fsyncs(t *testing.T, p *Pebble) uint64 {
	t.Helper()
	h := p.db.Metrics().LogWriter.FsyncLatency
	if h == nil {
		return 0
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestPebbleOptionsShareTheCacheSizeTheMemtableAndSync: stores opened with
// one BlockCache share it; a larger memtable holds writes a small one
// flushes; Sync fsyncs every applied batch, and the default none.
func TestPebbleOptionsShareTheCacheSizeTheMemtableAndSync(t *testing.T) {
	cache := NewBlockCache(32 << 20)
	defer cache.Release()
	if got := cache.c.MaxSize(); got != 32<<20 {
		t.Errorf("cache size %d; want 32 MiB", got)
	}
	value := bytes.Repeat([]byte("v"), 1024)
	write := func(p *Pebble, n int) {
		t.Helper()
		for i := 0; i < n; i += 100 {
			var ops []Op
			for j := i; j < i+100 && j < n; j++ {
				ops = append(ops, Op{Kind: OpSet, Key: fmt.Appendf(nil, "k%06d", j), Value: value})
			}
			if err := p.Apply(ops); err != nil {
				t.Fatal(err)
			}
		}
	}

	a, err := OpenPebbleWith(t.TempDir(), PebbleOptions{Cache: cache, MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := OpenPebbleWith(t.TempDir(), PebbleOptions{Cache: cache, MemTableSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	write(a, 8<<10) // 8 MiB
	write(b, 8<<10)
	for deadline := time.Now().Add(10 * time.Second); a.db.Metrics().Flush.Count == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("8 MiB written to a 1 MiB memtable were never flushed")
		}
	}
	if n := b.db.Metrics().Flush.Count; n != 0 {
		t.Errorf("8 MiB written to a 64 MiB memtable were flushed %d times; want none", n)
	}
	if err := b.db.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Pebble{a, b} {
		if _, ok, err := p.Get([]byte("k000001")); !ok || err != nil {
			t.Fatalf("get: %v %v", ok, err)
		}
	}
	if ma, mb := a.db.Metrics().BlockCache, b.db.Metrics().BlockCache; ma.Size == 0 || ma.Size != mb.Size {
		t.Errorf("block cache sizes %d and %d; want one shared cache holding the blocks both read", ma.Size, mb.Size)
	}

	// The log syncs itself a few times whatever the option, as it is
	// created (1 to 3 times, varying from run to run, so the two counts are
	// not compared with each other); Sync adds one per batch.
	counts := map[bool]uint64{}
	for _, sync := range []bool{false, true} {
		s, err := OpenPebbleWith(t.TempDir(), PebbleOptions{Sync: sync})
		if err != nil {
			t.Fatal(err)
		}
		write(s, 1000) // 10 batches, 1 MiB: no memtable rotation
		counts[sync] = fsyncs(t, s)
		s.Close()
	}
	if counts[true] < 10 || counts[false] > 3 {
		t.Errorf("fsyncs for 10 batches: %d with Sync, %d without; want one a batch more with it, next to none without", counts[true], counts[false])
	}
}
