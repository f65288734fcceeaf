package store

import (
	"encoding/json"
	"fmt"
	"slices"
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
	for i := range 5 * cacheGeneration {
		s.Put(fmt.Sprint(i), tally{N: int64(i)})
		if i%1000 == 999 {
			if err := txn.Commit(map[string]int64{"tallies": int64(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := txn.Commit(nil); err != nil {
		t.Fatal(err)
	}
	if n := txn.stores["tallies"].cache.len(); n > 2*cacheGeneration {
		t.Fatalf("the cache holds %d values, more than its bound %d", n, 2*cacheGeneration)
	}
	for _, i := range []int{0, 5*cacheGeneration - 1} {
		if v, ok := get(t, s, fmt.Sprint(i)); !ok || v.N != int64(i) {
			t.Fatalf("%d = %+v %v", i, v, ok)
		}
	}
}
