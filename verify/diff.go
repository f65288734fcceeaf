package verify

import (
	"bytes"
	"encoding/binary"
	"slices"
)

// DifferenceKind says how a committed record departs from the replay.
type DifferenceKind int

// The kinds of difference between committed output and the replay.
const (
	// Duplicate is a committed record the replay produces fewer times than
	// it was committed.
	Duplicate DifferenceKind = iota
	// Missing is a record the replay produces that the committed output
	// lacks.
	Missing
	// Different is a committed record in the place of a different record
	// the replay produces there (another value, headers or timestamp).
	Different
	// Unexpected is a committed record the replay does not produce at all:
	// a write by a producer outside the application, or records of an
	// aborted transaction made visible to read_committed readers.
	Unexpected
	// OutOfOrder is a record committed in another place among its key's
	// records than the replay produces it.
	OutOfOrder
)

func (k DifferenceKind) String() string {
	switch k {
	case Duplicate:
		return "duplicate"
	case Missing:
		return "missing"
	case Different:
		return "different"
	case Unexpected:
		return "unexpected"
	default:
		return "out of order"
	}
}

// side is one record of a comparison with its identity: what must be
// equal for the committed record to be the replayed one.
type side struct {
	rec *Record
	id  string
}

// finding is one difference inside a key's records, before it is named
// with its topic.
type finding struct {
	kind      DifferenceKind
	committed *Record
	replayed  *Record
}

// identity is what the verifier compares of a record: value, timestamp
// and headers (except those in ignore), in their order. Keys and
// partitions are compared by grouping.
func identity(r *Record, ignore []string) string {
	var b []byte
	b = binary.AppendVarint(b, r.Timestamp.UnixMilli())
	b = appendBytes(b, r.Value, r.Value == nil)
	for _, h := range r.Headers {
		if slices.Contains(ignore, h.Key) {
			continue
		}
		b = appendBytes(b, []byte(h.Key), false)
		b = appendBytes(b, h.Value, h.Value == nil)
	}
	return string(b)
}

func appendBytes(b, v []byte, null bool) []byte {
	if null {
		return binary.AppendVarint(b, -1)
	}
	b = binary.AppendVarint(b, int64(len(v)))
	return append(b, v...)
}

// maxAlignCells bounds the table of the ordered comparison (rows times
// columns of the part that differs); past it the differing part is
// compared as a multiset.
const maxAlignCells = 1 << 22

// diffOrdered compares the records of one key where the replay fixes
// their order (one task produced them all): an alignment of the two
// sequences (longest common subsequence, after the common prefix and
// suffix) leaves records only the replay has and records only the commit
// has; an extra committed record that the replay has elsewhere is out of
// order or a duplicate, one facing a replayed record in the same gap is a
// different value, and the rest are missing or unexpected.
func diffOrdered(want, got []side) []finding {
	pre := 0
	for pre < len(want) && pre < len(got) && want[pre].id == got[pre].id {
		pre++
	}
	suf := 0
	for suf < len(want)-pre && suf < len(got)-pre && want[len(want)-1-suf].id == got[len(got)-1-suf].id {
		suf++
	}
	w, g := want[pre:len(want)-suf], got[pre:len(got)-suf]
	if len(w) == 0 && len(g) == 0 {
		return nil
	}
	if len(w)*len(g) > maxAlignCells {
		return diffMultiset(want, got)
	}
	return classify(want, w, g, align(w, g))
}

// gap is a stretch of an alignment left unmatched: indexes of replayed
// records (dels) and of committed records (ins).
type gap struct{ dels, ins []int }

// align matches w and g along a longest common subsequence and returns
// the gaps between matched records.
func align(w, g []side) []gap {
	n, m := len(w), len(g)
	// lcs[i*(m+1)+j] is the longest common subsequence of w[i:] and g[j:].
	lcs := make([]int32, (n+1)*(m+1))
	at := func(i, j int) int32 { return lcs[i*(m+1)+j] }
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			v := max(at(i+1, j), at(i, j+1))
			if w[i].id == g[j].id {
				v = at(i+1, j+1) + 1
			}
			lcs[i*(m+1)+j] = v
		}
	}
	var gaps []gap
	open := false
	current := func() *gap {
		if !open {
			gaps, open = append(gaps, gap{}), true
		}
		return &gaps[len(gaps)-1]
	}
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && w[i].id == g[j].id:
			open = false
			i, j = i+1, j+1
		case j < m && (i == n || at(i, j+1) >= at(i+1, j)):
			c := current()
			c.ins = append(c.ins, j)
			j++
		default:
			c := current()
			c.dels = append(c.dels, i)
			i++
		}
	}
	return gaps
}

// classify names the unmatched records of an alignment of w and g (the
// differing middles of want and got).
func classify(want, w, g []side, gaps []gap) []finding {
	inWant := map[string]bool{}
	for _, s := range want {
		inWant[s.id] = true
	}
	var out []finding
	usedDel, usedIns := map[int]bool{}, map[int]bool{}
	// An unmatched committed record equal to an unmatched replayed one in
	// another gap sits elsewhere than the replay puts it.
	for _, gp := range gaps {
		for _, jj := range gp.ins {
			for _, other := range gaps {
				for _, ii := range other.dels {
					if !usedIns[jj] && !usedDel[ii] && w[ii].id == g[jj].id {
						usedDel[ii], usedIns[jj] = true, true
						out = append(out, finding{kind: OutOfOrder, committed: g[jj].rec, replayed: w[ii].rec})
					}
				}
			}
		}
	}
	for _, gp := range gaps {
		var dels, ins []int
		for _, ii := range gp.dels {
			if !usedDel[ii] {
				dels = append(dels, ii)
			}
		}
		for _, jj := range gp.ins {
			switch {
			case usedIns[jj]:
			case inWant[g[jj].id]:
				out = append(out, finding{kind: Duplicate, committed: g[jj].rec, replayed: findByID(want, g[jj].id)})
			default:
				ins = append(ins, jj)
			}
		}
		k := min(len(dels), len(ins))
		for x := range k {
			out = append(out, finding{kind: Different, committed: g[ins[x]].rec, replayed: w[dels[x]].rec})
		}
		for _, ii := range dels[k:] {
			out = append(out, finding{kind: Missing, replayed: w[ii].rec})
		}
		for _, jj := range ins[k:] {
			out = append(out, finding{kind: Unexpected, committed: g[jj].rec})
		}
	}
	return out
}

func findByID(s []side, id string) *Record {
	for i := range s {
		if s[i].id == id {
			return s[i].rec
		}
	}
	return nil
}

// diffMultiset compares the records of one key where the replay does not
// fix their order (several tasks produced them, and their commits
// interleave as the run's timing had it): each committed record is matched
// to an equal replayed one; a committed record left over is a duplicate
// when the replay has it, unexpected otherwise, and a replayed record left
// over is missing.
func diffMultiset(want, got []side) []finding {
	left := map[string][]*Record{}
	inWant := map[string]bool{}
	for _, s := range want {
		left[s.id] = append(left[s.id], s.rec)
		inWant[s.id] = true
	}
	var out []finding
	for _, s := range got {
		if recs := left[s.id]; len(recs) > 0 {
			left[s.id] = recs[1:]
			continue
		}
		if inWant[s.id] {
			out = append(out, finding{kind: Duplicate, committed: s.rec, replayed: findByID(want, s.id)})
		} else {
			out = append(out, finding{kind: Unexpected, committed: s.rec})
		}
	}
	for _, s := range want {
		if recs := left[s.id]; len(recs) > 0 && recs[0] == s.rec {
			left[s.id] = recs[1:]
			out = append(out, finding{kind: Missing, replayed: s.rec})
		}
	}
	return out
}

// diffTable compares the final value per key of one changelog partition.
func diffTable(want, got map[string]*Record) []finding {
	var out []finding
	for _, k := range sortedKeys(want, got) {
		w, g := want[k], got[k]
		switch {
		case g == nil:
			out = append(out, finding{kind: Missing, replayed: w})
		case w == nil:
			out = append(out, finding{kind: Unexpected, committed: g})
		case !bytes.Equal(w.Value, g.Value):
			out = append(out, finding{kind: Different, committed: g, replayed: w})
		}
	}
	return out
}
