package store

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly/serde"
	public "github.com/exactly-go/exactly/store"
)

// order is a value with a slice and a Clone method: cached, and copied on
// the way in and out.
type order struct {
	ID    string   `json:"id"`
	Items []string `json:"items"`
}

func (o order) Clone() order {
	o.Items = slices.Clone(o.Items)
	return o
}

// tally has no references: cached, copied by assignment.
type tally struct {
	N    int64  `json:"n"`
	Name string `json:"name"`
}

// basket has a slice and no Clone: not cached, decoded at every read.
type basket struct {
	Items []string `json:"items"`
}

// countingSerde is JSON that counts the values it decodes.
type countingSerde[V any] struct{ decoded *int }

func (s countingSerde[V]) Serialize(v V) ([]byte, error) { return json.Marshal(v) }
func (s countingSerde[V]) Deserialize(b []byte) (V, error) {
	*s.decoded++
	var v V
	err := json.Unmarshal(b, &v)
	return v, err
}

func openCounting[V any](txn *Txn, name string, opts Options, c *clock) (public.KeyValueStore[string, V], *int) {
	n := new(int)
	return Typed(txn.Open(name, opts, c.now), serde.String, serde.Serde[V](countingSerde[V]{decoded: n})), n
}

func get[V any](t *testing.T, s public.KeyValueStore[string, V], k string) (V, bool) {
	t.Helper()
	v, ok, err := s.Get(k)
	if err != nil {
		t.Fatal(err)
	}
	return v, ok
}

func TestValuesWrittenOrReadAreNotDecodedAgain(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		txn := NewTxn(b)
		s, decoded := openCounting[order](txn, "orders", Options{}, &clock{})
		s.Put("o-1", order{ID: "o-1", Items: []string{"a"}})
		for range 3 {
			if v, ok := get(t, s, "o-1"); !ok || v.ID != "o-1" {
				t.Fatalf("o-1 = %+v %v", v, ok)
			}
		}
		if *decoded != 0 {
			t.Fatalf("a value written in this interval was decoded %d times", *decoded)
		}
		if err := txn.Commit(map[string]int64{"orders": 1}); err != nil {
			t.Fatal(err)
		}
		// The committed value stays cached across the commit.
		get(t, s, "o-1")
		if *decoded != 0 {
			t.Fatalf("a value written in the last interval was decoded %d times after its commit", *decoded)
		}

		// A value read from the backend is decoded once.
		other, decoded2 := openCounting[order](NewTxn(b), "orders", Options{}, &clock{})
		for range 3 {
			get(t, other, "o-1")
		}
		if *decoded2 != 1 {
			t.Fatalf("a committed value read three times was decoded %d times, want 1", *decoded2)
		}
	})
}

func TestCachedValuesAreDiscardedWithTheirTransaction(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		txn := NewTxn(b)
		s, _ := openCounting[tally](txn, "tallies", Options{}, &clock{})
		s.Put("a", tally{N: 1})
		if err := txn.Commit(map[string]int64{"tallies": 1}); err != nil {
			t.Fatal(err)
		}
		s.Put("a", tally{N: 2})
		s.Put("b", tally{N: 3})
		txn.Discard()
		if v, ok := get(t, s, "a"); !ok || v.N != 1 {
			t.Fatalf("after abort a = %+v %v, want the committed 1", v, ok)
		}
		if _, ok := get(t, s, "b"); ok {
			t.Fatal("an aborted write is still visible through the cache")
		}

		// A failed record's writes are undone, decoded values with them.
		txn.BeginRecord()
		s.Put("a", tally{N: 4})
		s.Delete("a")
		s.Put("c", tally{N: 5})
		txn.EndRecord(false)
		if v, ok := get(t, s, "a"); !ok || v.N != 1 {
			t.Fatalf("after undo a = %+v %v, want 1", v, ok)
		}
		if _, ok := get(t, s, "c"); ok {
			t.Fatal("an undone write is still visible through the cache")
		}
	})
}

func TestCachedValuesAreInvisibleToCommittedReadersUntilCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b Backend) {
		txn := NewTxn(b)
		s, _ := openCounting[tally](txn, "tallies", Options{}, &clock{})
		s.Put("a", tally{N: 1})
		get(t, s, "a")
		// An interactive query reads the backend through a Txn of its own.
		query := func() (tally, bool) {
			q, _ := openCounting[tally](NewTxn(b), "tallies", Options{}, &clock{})
			return get(t, q, "a")
		}
		if v, ok := query(); ok {
			t.Fatalf("a query sees the uncommitted %+v", v)
		}
		if err := txn.Commit(map[string]int64{"tallies": 1}); err != nil {
			t.Fatal(err)
		}
		if v, ok := query(); !ok || v.N != 1 {
			t.Fatalf("after commit a query reads %+v %v, want 1", v, ok)
		}
	})
}

func TestChangingAValueReadOrWrittenDoesNotChangeTheStore(t *testing.T) {
	txn := NewTxn(NewMemory())
	s, _ := openCounting[order](txn, "orders", Options{}, &clock{})
	written := order{ID: "o-1", Items: []string{"a", "b"}}
	s.Put("o-1", written)
	written.Items[0] = "changed after Put"
	read, _ := get(t, s, "o-1")
	read.Items[1] = "changed after Get"
	read.ID = "o-2"
	check := func(when string) {
		t.Helper()
		if v, _ := get(t, s, "o-1"); v.ID != "o-1" || !slices.Equal(v.Items, []string{"a", "b"}) {
			t.Fatalf("%s: the store holds %+v, want o-1 [a b]", when, v)
		}
	}
	check("before commit")
	if err := txn.Commit(map[string]int64{"orders": 1}); err != nil {
		t.Fatal(err)
	}
	check("after commit")
	again, _ := get(t, s, "o-1")
	again.Items[0] = "changed after a cached Get"
	check("after changing a value read from the committed cache")
}

func TestValuesWithReferencesAndNoCloneAreNotCached(t *testing.T) {
	txn := NewTxn(NewMemory())
	s, decoded := openCounting[basket](txn, "baskets", Options{}, &clock{})
	s.Put("b", basket{Items: []string{"x"}})
	v, _ := get(t, s, "b")
	v.Items[0] = "changed"
	if v, _ := get(t, s, "b"); v.Items[0] != "x" {
		t.Fatalf("the store holds %+v", v)
	}
	if *decoded != 2 {
		t.Fatalf("decoded %d times, want 2: values of a type with references and no Clone are decoded at each read", *decoded)
	}
	for typ, want := range map[string]bool{
		"tally": cloneFuncFor[tally]() != nil, "order": cloneFuncFor[order]() != nil,
		"int64": cloneFuncFor[int64]() != nil, "[4]byte": cloneFuncFor[[4]byte]() != nil,
		"!basket": cloneFuncFor[basket]() == nil, "![]byte": cloneFuncFor[[]byte]() == nil,
		"!*tally": cloneFuncFor[*tally]() == nil, "!any": cloneFuncFor[any]() == nil,
	} {
		if !want {
			t.Errorf("cacheable(%s) is wrong", typ)
		}
	}
}

func TestCachedValuesExpireWithTheirEntries(t *testing.T) {
	c := &clock{ms: 1000}
	txn := NewTxn(NewMemory())
	s, decoded := openCounting[tally](txn, "ttl", Options{TTL: 10 * time.Millisecond}, c)
	s.Put("a", tally{N: 1}) // expires at 1010
	if err := txn.Commit(map[string]int64{"ttl": 1}); err != nil {
		t.Fatal(err)
	}
	if _, ok := get(t, s, "a"); !ok {
		t.Fatal("a is not visible before its expiry")
	}
	c.ms = 1010
	if v, ok := get(t, s, "a"); ok {
		t.Fatalf("a cached value outlives its expiry: %+v", v)
	}
	if *decoded != 0 {
		t.Fatalf("decoded %d times", *decoded)
	}
}

func TestRestoreAndWipeEmptyTheCache(t *testing.T) {
	b := NewMemory()
	txn := NewTxn(b)
	s, decoded := openCounting[tally](txn, "tallies", Options{}, &clock{})
	s.Put("a", tally{N: 1})
	if err := txn.Commit(map[string]int64{"tallies": 1}); err != nil {
		t.Fatal(err)
	}
	v2, _ := json.Marshal(tally{N: 2})
	if err := txn.Restore("tallies", []Change{{Key: []byte("a"), Value: v2}}, 2); err != nil {
		t.Fatal(err)
	}
	if v, _ := get(t, s, "a"); v.N != 2 || *decoded != 1 {
		t.Fatalf("after restore a = %+v (decoded %d times), want the restored 2", v, *decoded)
	}
	if err := txn.Wipe("tallies"); err != nil {
		t.Fatal(err)
	}
	if v, ok := get(t, s, "a"); ok {
		t.Fatalf("after wipe a = %+v", v)
	}
}

func TestCacheOfCommittedValuesIsBounded(t *testing.T) {
	txn := NewTxn(NewMemory())
	s, _ := openCounting[tally](txn, "tallies", Options{}, &clock{})
	kv := txn.stores["tallies"]
	n := 10 * cacheGenerationPuts
	for i := range n {
		s.Put(fmt.Sprint(i), tally{N: int64(i)})
		if i%(3*cacheGenerationPuts) == 3*cacheGenerationPuts-1 {
			if err := txn.Commit(map[string]int64{"tallies": int64(i)}); err != nil {
				t.Fatal(err)
			}
		}
		checkCacheAccounts(t, kv.cache)
		if values, bytes := kv.CachedValues(); values > 2*cacheGenerationPuts || bytes > 2*cacheGenerationBytes {
			t.Fatalf("after %d puts the cache holds %d values of %d bytes, more than its bounds %d and %d",
				i+1, values, bytes, 2*cacheGenerationPuts, 2*cacheGenerationBytes)
		}
	}
	for _, i := range []int{0, n - 1} {
		if v, ok := get(t, s, fmt.Sprint(i)); !ok || v.N != int64(i) {
			t.Fatalf("%d = %+v %v", i, v, ok)
		}
	}
	// Large values in one commit: the size bound holds the cache, not the
	// count.
	if err := txn.Commit(nil); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 4<<10)
	for i := range 200 {
		s.Put(fmt.Sprint("big", i), tally{N: int64(i), Name: big})
	}
	if err := txn.Commit(nil); err != nil {
		t.Fatal(err)
	}
	checkCacheAccounts(t, kv.cache)
	if values, bytes := kv.CachedValues(); bytes > 2*cacheGenerationBytes || values > 2*cacheGenerationBytes/(4<<10) {
		t.Fatalf("with 4 KiB values the cache holds %d values of %d bytes, more than its bound of %d bytes", values, bytes, 2*cacheGenerationBytes)
	}
}

// TestCacheHoldsTheKeysInUseNotEveryKeySeen is R-PF4 for the cache: over
// a stream in which keys come and go (orders that are created, updated
// over a few commit intervals and done), the cache holds the keys in use,
// so that it
// holds as many values (mean over the second half of the stream) after 10x
// the keys as after 1x, while the values in use keep being served without
// decoding.
func TestCacheHoldsTheKeysInUseNotEveryKeySeen(t *testing.T) {
	run := func(keys int) (values, bytes float64, decodes int) {
		txn := NewTxn(NewMemory())
		s, decoded := openCounting[tally](txn, "orders", Options{}, &clock{})
		const active = 20
		samples := 0
		for k := range keys {
			if k >= keys/2 {
				v, b := txn.stores["orders"].CachedValues()
				values, bytes = values+float64(v), bytes+float64(b)
				samples++
			}
			// Each commit interval uses the active keys, one of them
			// new: a key is created, updated over active intervals, and
			// never used again.
			for u := range min(active, k+1) {
				id := fmt.Sprint(k - u)
				v, _ := get(t, s, id)
				v.N++
				s.Put(id, v)
			}
			if err := txn.Commit(nil); err != nil {
				t.Fatal(err)
			}
		}
		return values / float64(samples), bytes / float64(samples), *decoded
	}
	v1, b1, d1 := run(2 * cacheGenerationPuts)
	v10, b10, d10 := run(20 * cacheGenerationPuts)
	t.Logf("mean 1x: %.1f values, %.0f bytes, %d decodes; 10x: %.1f values, %.0f bytes, %d decodes", v1, b1, d1, v10, b10, d10)
	if v10 > 1.1*v1 || b10 > 1.1*b1 {
		t.Errorf("the cache holds %.1f values of %.0f bytes over 10x the keys, %.1f of %.0f over 1x: want at most 1.1x", v10, b10, v1, b1)
	}
	if d1 != 0 || d10 != 0 {
		t.Errorf("values in use were decoded again (%d times at 1x, %d at 10x)", d1, d10)
	}
}

func TestExpiredValuesLeaveTheCacheWhenRead(t *testing.T) {
	c := &clock{ms: 1000}
	txn := NewTxn(NewMemory())
	s, _ := openCounting[tally](txn, "ttl", Options{TTL: 10 * time.Millisecond}, c)
	s.Put("a", tally{N: 1})
	if err := txn.Commit(map[string]int64{"ttl": 1}); err != nil {
		t.Fatal(err)
	}
	if n, _ := txn.stores["ttl"].CachedValues(); n != 1 {
		t.Fatalf("%d values cached after the commit, want 1", n)
	}
	c.ms = 1010
	get(t, s, "a")
	if n, _ := txn.stores["ttl"].CachedValues(); n != 0 {
		t.Fatalf("%d values cached after a read at the expiry, want 0", n)
	}
}

// checkCacheAccounts fails the test unless the cache's byte counts are the
// sums of its values' sizes and no key is in both generations.
func checkCacheAccounts(t *testing.T, c *valueCache) {
	t.Helper()
	sum := func(m map[string]cachedValue) (n int) {
		for _, v := range m {
			n += v.size
		}
		return n
	}
	if cur, prev := sum(c.current), sum(c.previous); cur != c.bytes || prev != c.prevBytes {
		t.Fatalf("the cache counts %d and %d bytes in its generations, its values add up to %d and %d", c.bytes, c.prevBytes, cur, prev)
	}
	for k := range c.current {
		if _, ok := c.previous[k]; ok {
			t.Fatalf("key %q is in both generations", k)
		}
	}
}
