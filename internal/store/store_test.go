package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/exactly-go/exactly/serde"
	public "github.com/exactly-go/exactly/store"
)

// backends lists every Backend the contract suite runs against.
var backends = map[string]func(t testing.TB) Backend{
	"memory": func(testing.TB) Backend { return NewMemory() },
	"pebble": func(t testing.TB) Backend {
		p, err := OpenPebble(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	},
}

func forEachBackend(t *testing.T, f func(t *testing.T, b Backend)) {
	for name, open := range backends {
		t.Run(name, func(t *testing.T) { f(t, open(t)) })
	}
}

type clock struct{ ms int64 }

func (c *clock) now() int64 { return c.ms }

func openCounts(txn *Txn, c *clock, opts Options) public.KeyValueStore[string, int64] {
	return Typed(txn.Open("counts", opts, c.now), serde.String, serde.Int64)
}

func mustGet(t *testing.T, s public.KeyValueStore[string, int64], k string) (int64, bool) {
	t.Helper()
	v, ok, err := s.Get(k)
	if err != nil {
		t.Fatal(err)
	}
	return v, ok
}

func backendKeys(t *testing.T, b Backend) int {
	t.Helper()
	it, err := b.NewIter([]byte{0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestReadYourWritesBeforeCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		txn := NewTxn(b)
		s := openCounts(txn, &clock{}, Options{})
		s.Put("a", 1)
		s.Put("b", 2)
		s.Delete("b")
		if v, ok := mustGet(t, s, "a"); !ok || v != 1 {
			t.Fatalf("a = %d %v, want 1", v, ok)
		}
		if _, ok := mustGet(t, s, "b"); ok {
			t.Fatal("deleted key b still visible")
		}
		if n := backendKeys(t, b); n != 0 {
			t.Fatalf("backend holds %d keys before commit", n)
		}
	})
}

func TestAbortLeavesBackendUntouched(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		txn := NewTxn(b)
		s := openCounts(txn, &clock{}, Options{})
		s.Put("a", 1)
		if err := txn.Commit(map[string]int64{"counts": 1}); err != nil {
			t.Fatal(err)
		}
		s.Put("a", 2)
		s.Put("b", 3)
		s.Delete("a")
		txn.Discard()
		if v, ok := mustGet(t, s, "a"); !ok || v != 1 {
			t.Fatalf("after abort a = %d %v, want the committed 1", v, ok)
		}
		if _, ok := mustGet(t, s, "b"); ok {
			t.Fatal("aborted write b is visible")
		}
		if cp, _, _ := txn.Checkpoint("counts"); cp != 1 {
			t.Fatalf("checkpoint = %d, want 1", cp)
		}
		// data key + checkpoint key
		if n := backendKeys(t, b); n != 2 {
			t.Fatalf("backend holds %d keys, want 2", n)
		}
	})
}

func TestCommitAppliesWritesAndCheckpointTogether(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		txn := NewTxn(b)
		s := openCounts(txn, &clock{}, Options{})
		for i := range 100 {
			s.Put(fmt.Sprintf("k%03d", i), int64(i))
		}
		if got := len(txn.Changes("counts")); got != 100 {
			t.Fatalf("changes = %d, want 100", got)
		}
		if err := txn.Commit(map[string]int64{"counts": 100}); err != nil {
			t.Fatal(err)
		}
		if txn.Dirty() || len(txn.Changes("counts")) != 0 {
			t.Fatal("buffer not emptied by commit")
		}
		fresh := NewTxn(b) // reads the backend only
		s2 := openCounts(fresh, &clock{}, Options{})
		for i := range 100 {
			if v, ok := mustGet(t, s2, fmt.Sprintf("k%03d", i)); !ok || v != int64(i) {
				t.Fatalf("k%03d = %d %v", i, v, ok)
			}
		}
		if cp, ok, err := fresh.Checkpoint("counts"); err != nil || !ok || cp != 100 {
			t.Fatalf("checkpoint = %d %v %v", cp, ok, err)
		}
	})
}

func TestRangeMergesBufferAndBackend(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		txn := NewTxn(b)
		s := openCounts(txn, &clock{}, Options{})
		for _, k := range []string{"a", "c", "e", "g"} {
			s.Put(k, 1)
		}
		txn.Commit(nil)
		s.Put("b", 2)  // new in buffer
		s.Put("e", 2)  // shadows backend
		s.Delete("c")  // hides backend
		s.Put("zz", 2) // outside range
		it, err := s.Range("a", "z")
		if err != nil {
			t.Fatal(err)
		}
		var got string
		for it.Next() {
			got += fmt.Sprintf("%s=%d ", it.Key(), it.Value())
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		if want := "a=1 b=2 e=2 g=1 "; got != want {
			t.Fatalf("range = %q, want %q", got, want)
		}
		if n, _ := s.ApproximateNumEntries(); n != 5 {
			t.Fatalf("entries = %d, want 5", n)
		}
	})
}

func TestRecordSavepointUndoesOnlyThatRecord(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		txn := NewTxn(b)
		s := openCounts(txn, &clock{}, Options{})
		s.Put("a", 1)
		txn.BeginRecord()
		s.Put("a", 2)
		s.Put("b", 2)
		s.Delete("a")
		txn.EndRecord(false)
		if v, ok := mustGet(t, s, "a"); !ok || v != 1 {
			t.Fatalf("a = %d %v after rollback, want 1", v, ok)
		}
		if _, ok := mustGet(t, s, "b"); ok {
			t.Fatal("b survived rollback")
		}
	})
}

func TestRestoreRebuildsFromChangelog(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		c := &clock{ms: 1000}
		src := NewTxn(NewMemory())
		s := openCounts(src, c, Options{TTL: time.Second})
		s.Put("a", 1)
		s.Put("b", 2)
		log := src.Changes("counts")
		dst := NewTxn(b)
		d := openCounts(dst, c, Options{TTL: time.Second})
		if err := dst.Restore("counts", append(log, Change{Key: []byte("b")}), 3); err != nil {
			t.Fatal(err)
		}
		if v, ok := mustGet(t, d, "a"); !ok || v != 1 {
			t.Fatalf("a = %d %v", v, ok)
		}
		if _, ok := mustGet(t, d, "b"); ok {
			t.Fatal("tombstone not restored")
		}
		c.ms = 2000
		if n, err := d.SweepExpired(); err != nil || n != 1 {
			t.Fatalf("sweep after restore deleted %d (%v), want 1: the index must be rebuilt", n, err)
		}
		if cp, _, _ := dst.Checkpoint("counts"); cp != 3 {
			t.Fatalf("checkpoint %d, want 3", cp)
		}
		if err := dst.Wipe("counts"); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := dst.Checkpoint("counts"); ok || backendKeys(t, b) != 0 {
			t.Fatal("wipe left data or checkpoint")
		}
	})
}

// A store holding every partition of its topic keeps a checkpoint per
// partition, apart from one another and from a store whose name extends
// its own, and a wipe removes them all.
func TestPartitionCheckpointsAreSeparateAndWipedTogether(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		c := &clock{}
		txn := NewTxn(b)
		openCounts(txn, c, Options{})
		txn.Open("counts1", Options{}, c.now)
		for p, next := range []int64{7, 0, 12} {
			if err := txn.RestorePartition("counts", int32(p), []Change{{Key: []byte(fmt.Sprint("k", p)), Value: []byte{1}}}, next); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.Restore("counts1", nil, 5); err != nil {
			t.Fatal(err)
		}
		for p, want := range []int64{7, 0, 12} {
			if cp, ok, err := txn.PartitionCheckpoint("counts", int32(p)); err != nil || !ok || cp != want {
				t.Fatalf("partition %d: checkpoint %d %v %v, want %d", p, cp, ok, err, want)
			}
		}
		if _, ok, _ := txn.PartitionCheckpoint("counts", 3); ok {
			t.Fatal("partition 3 has a checkpoint it was never given")
		}
		if _, ok, _ := txn.Checkpoint("counts"); ok {
			t.Fatal("a partition's checkpoint reads as the store's")
		}
		if err := txn.Wipe("counts"); err != nil {
			t.Fatal(err)
		}
		for p := range 3 {
			if _, ok, _ := txn.PartitionCheckpoint("counts", int32(p)); ok {
				t.Fatalf("wipe left partition %d's checkpoint", p)
			}
		}
		if cp, ok, _ := txn.Checkpoint("counts1"); !ok || cp != 5 {
			t.Fatal("wiping counts touched counts1's checkpoint")
		}
		if n := backendKeys(t, b); n != 1 {
			t.Fatalf("%d keys after the wipe, want counts1's checkpoint alone", n)
		}
	})
}

func TestExpiredEntriesInvisibleAndSwept(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		c := &clock{ms: 0}
		txn := NewTxn(b)
		s := openCounts(txn, c, Options{TTL: 10 * time.Millisecond})
		s.Put("old", 1) // expires at 10
		c.ms = 5
		s.Put("new", 2) // expires at 15
		s.Put("old", 3) // re-put: now expires at 15, old index entry stale
		c.ms = 10
		if n, _ := s.SweepExpired(); n != 0 {
			t.Fatalf("swept %d at 10, want 0 (old was rewritten)", n)
		}
		c.ms = 15
		if _, ok := mustGet(t, s, "new"); ok {
			t.Fatal("expired entry visible before sweep")
		}
		if n, _ := s.SweepExpired(); n != 2 {
			t.Fatalf("swept %d at 15, want 2", n)
		}
		changes := txn.Changes("counts")
		for _, ch := range changes {
			if ch.Value != nil {
				t.Fatalf("change %s is not a tombstone after sweep", ch.Key)
			}
		}
	})
}

func TestPutExpiringNeedsExpiringStore(t *testing.T) {
	txn := NewTxn(NewMemory())
	s := openCounts(txn, &clock{}, Options{})
	if err := s.PutExpiring("a", 1, time.UnixMilli(5)); !errors.Is(err, public.ErrNotExpiring) {
		t.Fatalf("PutExpiring on a plain store: %v, want ErrNotExpiring", err)
	}
}

// TestSweepDeletesExactlyTheExpired fills a store with 1,000,000 entries of
// spread expiries and checks a sweep removes those due and nothing else.
func TestSweepDeletesExactlyTheExpired(t *testing.T) {
	const n = 1_000_000
	c := &clock{}
	txn := NewTxn(NewMemory())
	s := openCounts(txn, c, Options{Expiring: true})
	rng := rand.New(rand.NewPCG(1, 2))
	expiry := make([]int64, n)
	// Loaded the way a restarted task gets it: restored from a changelog.
	log := make([]Change, n)
	for i := range n {
		expiry[i] = 1 + rng.Int64N(1_000_000)
		log[i] = Change{Key: []byte(strconv.Itoa(i)), Value: encodeExpiring(expiry[i], binaryInt64(int64(i)))}
	}
	if err := txn.Restore("counts", log, n); err != nil {
		t.Fatal(err)
	}
	const T = 400_000
	want := 0
	for _, e := range expiry {
		if e <= T {
			want++
		}
	}
	c.ms = T
	got, err := s.SweepExpired()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("swept %d, want %d", got, want)
	}
	if err := txn.Commit(nil); err != nil {
		t.Fatal(err)
	}
	c.ms = 0 // make everything visible again to audit what is left
	it, _ := s.All()
	left := 0
	for it.Next() {
		left++
		if expiry[it.Value()] <= T {
			t.Fatalf("entry %d (expiry %d) survived the sweep at %d", it.Value(), expiry[it.Value()], T)
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if left != n-want {
		t.Fatalf("%d entries left, want %d", left, n-want)
	}
}

// TestPebbleKilledMidStreamKeepsOnlyCommittedBatches kills a process that
// commits batches in a loop and checks that the reopened store holds exactly
// the batches up to its checkpoint, and nothing that was only buffered.
func TestPebbleKilledMidStreamKeepsOnlyCommittedBatches(t *testing.T) {
	if dir := os.Getenv("EXACTLY_STORE_CRASH_DIR"); dir != "" {
		crashChild(dir)
		return
	}
	for round := range 3 {
		dir := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestPebbleKilledMidStreamKeepsOnlyCommittedBatches$")
		cmd.Env = append(os.Environ(), "EXACTLY_STORE_CRASH_DIR="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(300+200*round) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()

		p, err := OpenPebble(dir)
		if err != nil {
			t.Fatalf("reopen after kill: %v", err)
		}
		txn := NewTxn(p)
		s := openCounts(txn, &clock{}, Options{})
		cp, ok, err := txn.Checkpoint("counts")
		if err != nil {
			t.Fatal(err)
		}
		last, lastOK := mustGet(t, s, "last")
		if ok != lastOK || (ok && last != cp) {
			t.Fatalf("checkpoint %d (%v) but last = %d (%v): data and checkpoint diverged", cp, ok, last, lastOK)
		}
		it, _ := s.All()
		for it.Next() {
			if it.Value() > cp {
				t.Fatalf("key %s from batch %d is there, beyond checkpoint %d", it.Key(), it.Value(), cp)
			}
		}
		it.Close()
		for i := int64(1); i <= cp; i++ {
			if _, ok := mustGet(t, s, fmt.Sprintf("b%06d-%02d", i, i%50)); !ok {
				t.Fatalf("committed batch %d lost", i)
			}
		}
		t.Logf("round %d: killed after %d committed batches", round, cp)
		p.Close()
	}
}

func binaryInt64(v int64) []byte { b, _ := serde.Int64.Serialize(v); return b }

func crashChild(dir string) {
	p, err := OpenPebble(dir)
	if err != nil {
		os.Exit(3)
	}
	txn := NewTxn(p)
	s := openCounts(txn, &clock{}, Options{})
	for i := int64(1); ; i++ {
		for j := range 50 {
			s.Put(fmt.Sprintf("b%06d-%02d", i, j), i)
		}
		s.Put("last", i)
		if err := txn.Commit(map[string]int64{"counts": i}); err != nil {
			os.Exit(4)
		}
		// Buffered but never committed: must not survive the kill.
		s.Put("last", i+1)
		s.Put(fmt.Sprintf("b%06d-%02d", i+1, 0), i+1)
		p.Sync()
		txn.Discard()
	}
}

func BenchmarkPutGetThroughBuffer(b *testing.B) {
	for name, open := range backends {
		b.Run(name, func(b *testing.B) {
			txn := NewTxn(open(b))
			s := openCounts(txn, &clock{}, Options{})
			keys := make([]string, 10_000)
			for i := range keys {
				keys[i] = fmt.Sprintf("key-%08d", i*7919)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				k := keys[i%len(keys)]
				v, _, _ := s.Get(k)
				s.Put(k, v+1)
				if i%1000 == 999 {
					if err := txn.Commit(map[string]int64{"counts": int64(i)}); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkSweep shows that a sweep's cost follows the number of expired
// entries, not the store size: compare ns/op across sizes at equal expired.
func BenchmarkSweep(b *testing.B) {
	for _, size := range []int{100_000, 1_000_000} {
		for _, expired := range []int{100, 10_000} {
			b.Run(fmt.Sprintf("size=%d/expired=%d", size, expired), func(b *testing.B) {
				c := &clock{}
				txn := NewTxn(NewMemory())
				s := openCounts(txn, c, Options{Expiring: true})
				// Entries expire one per ms; each swept batch is replaced by as
				// many expiring later, so the store size stays constant.
				for i := range size {
					s.PutExpiring(strconv.Itoa(i), int64(i), time.UnixMilli(int64(i+1)))
				}
				txn.Commit(nil)
				next := size
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					c.ms += int64(expired)
					n, err := s.SweepExpired()
					if err != nil || n != expired {
						b.Fatalf("swept %d (%v), want %d", n, err, expired)
					}
					txn.Commit(nil)
					b.StopTimer()
					for range expired {
						next++
						s.PutExpiring(strconv.Itoa(next), int64(next), time.UnixMilli(int64(next)))
					}
					txn.Commit(nil)
					b.StartTimer()
				}
			})
		}
	}
}

// countingBackend counts the entries its iterators hand out.
type countingBackend struct {
	Backend
	read int
}

type countingIter struct {
	Iter
	b *countingBackend
}

func (c *countingBackend) NewIter(lower, upper []byte) (Iter, error) {
	it, err := c.Backend.NewIter(lower, upper)
	return &countingIter{Iter: it, b: c}, err
}

func (it *countingIter) Next() bool {
	ok := it.Iter.Next()
	if ok {
		it.b.read++
	}
	return ok
}

// TestSweepsBetweenCommitsReadOnlyWhatIsNewlyDue checks that a sweep does
// not read again the entries an earlier sweep deleted in the buffer (which
// the backend holds until the commit), so that frequent sweeps in a long
// commit interval cost what they delete; and that whatever brings those
// entries back (abort, an undone record, a write expiring in the past)
// makes the next sweep find them.
func TestSweepsBetweenCommitsReadOnlyWhatIsNewlyDue(t *testing.T) {
	b := &countingBackend{Backend: NewMemory()}
	c := &clock{}
	txn := NewTxn(b)
	s := openCounts(txn, c, Options{Expiring: true})
	for i := range 1000 {
		s.PutExpiring(strconv.Itoa(i), int64(i), time.UnixMilli(int64(i+1)))
	}
	if err := txn.Commit(map[string]int64{"counts": 1000}); err != nil {
		t.Fatal(err)
	}
	swept, read := 0, 0
	for c.ms = 10; c.ms <= 1000; c.ms += 10 {
		b.read = 0
		n, err := s.SweepExpired()
		if err != nil {
			t.Fatal(err)
		}
		swept, read = swept+n, read+b.read
	}
	if swept != 1000 || read > 1000 {
		t.Fatalf("100 sweeps deleted %d entries reading %d from the backend; want 1000 reading each once", swept, read)
	}

	for name, undo := range map[string]func(){
		"abort": txn.Discard,
		"undone record": func() {
			txn.Discard()
			txn.BeginRecord()
			if n, _ := s.SweepExpired(); n != 1000 {
				t.Fatalf("sweep in a record deleted %d, want 1000", n)
			}
			txn.EndRecord(false)
		},
	} {
		undo()
		if n, _ := s.SweepExpired(); n != 1000 {
			t.Fatalf("after %s the sweep deleted %d, want the 1000 due again", name, n)
		}
	}
	s.PutExpiring("late", 1, time.UnixMilli(5)) // due long ago
	if n, _ := s.SweepExpired(); n != 1 {
		t.Fatalf("an entry written already expired was swept %d times, want 1", n)
	}
}
