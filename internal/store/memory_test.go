package store

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestMemoryAgreesWithASortedModel drives Memory with random sets, deletes,
// range deletes, point reads and iterations over keys of several stores'
// namespaces and keys outside them, and checks every answer against a plain
// sorted model: the namespaces' maps, their ordering on first iteration and
// the merge of raw keys must never change what a Backend answers.
func TestMemoryAgreesWithASortedModel(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			m := NewMemory()
			model := map[string][]byte{}
			names := []string{"a", "ab", "dedup-store", "x\xff"}
			key := func() []byte {
				suffix := []byte{byte('a' + r.IntN(6)), byte('a' + r.IntN(6))}[:1+r.IntN(2)]
				switch r.IntN(5) {
				case 0:
					return append([]byte{byte(r.IntN(256))}, suffix...) // outside the layout, or a broken one
				case 1:
					return binaryCheckpoint(names[r.IntN(len(names))], r.IntN(3))
				default:
					ns := namespace([]byte{kindData, kindIndex}[r.IntN(2)], names[r.IntN(len(names))])
					return append(ns, suffix...)
				}
			}
			bound := func() []byte {
				if r.IntN(6) == 0 {
					return nil
				}
				k := key()
				return k[:r.IntN(len(k)+1)]
			}
			modelRange := func(lower, upper []byte) []string {
				var out []string
				for k := range model {
					if inRange([]byte(k), lower, upper) {
						out = append(out, k)
					}
				}
				slices.Sort(out)
				return out
			}
			for step := range 3000 {
				switch op := r.IntN(10); {
				case op < 4:
					k, v := key(), []byte(fmt.Sprint(step))
					if err := m.Apply([]Op{{Kind: OpSet, Key: bytes.Clone(k), Value: v, Owned: r.IntN(2) == 0}}); err != nil {
						t.Fatal(err)
					}
					model[string(k)] = v
				case op < 5:
					k := key()
					if err := m.Apply([]Op{{Kind: OpDelete, Key: k}}); err != nil {
						t.Fatal(err)
					}
					delete(model, string(k))
				case op < 6 && step%7 == 0:
					lower, upper := bound(), bound()
					if lower == nil {
						lower = []byte{}
					}
					if err := m.Apply([]Op{{Kind: OpDeleteRange, Key: lower, End: upper}}); err != nil {
						t.Fatal(err)
					}
					for _, k := range modelRange(lower, upper) {
						delete(model, k)
					}
				case op < 8:
					k := key()
					v, ok, err := m.Get(k)
					if err != nil {
						t.Fatal(err)
					}
					want, wantOK := model[string(k)]
					if ok != wantOK || !bytes.Equal(v, want) {
						t.Fatalf("step %d: Get(%q) = %q, %v; want %q, %v", step, k, v, ok, want, wantOK)
					}
				default:
					lower, upper := bound(), bound()
					it, err := m.NewIter(lower, upper)
					if err != nil {
						t.Fatal(err)
					}
					var got []string
					for it.Next() {
						got = append(got, string(it.Key()))
						if want := model[string(it.Key())]; !bytes.Equal(it.Value(), want) {
							t.Fatalf("step %d: value of %q = %q, want %q", step, it.Key(), it.Value(), want)
						}
					}
					if want := modelRange(lower, upper); !slices.Equal(got, want) {
						t.Fatalf("step %d: NewIter(%q, %q) = %q, want %q", step, lower, upper, got, want)
					}
				}
			}
		})
	}
}

func binaryCheckpoint(name string, partition int) []byte {
	if partition == 0 {
		return checkpointKey(name)
	}
	return partitionCheckpointKey(name, int32(partition))
}
