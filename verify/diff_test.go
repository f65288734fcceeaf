package verify

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
)

// sides makes records whose identity is their value, one letter each.
func sides(values string) []side {
	var out []side
	for i, v := range values {
		r := &Record{Offset: int64(i), Value: []byte(string(v)), Timestamp: time.UnixMilli(1)}
		out = append(out, side{rec: r, id: identity(r, nil)})
	}
	return out
}

func render(fs []finding) []string {
	var out []string
	for _, f := range fs {
		s := f.kind.String()
		if f.committed != nil {
			s += fmt.Sprintf(" got %s@%d", f.committed.Value, f.committed.Offset)
		}
		if f.replayed != nil {
			s += fmt.Sprintf(" want %s", f.replayed.Value)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// TestDiffNamesEachKindOfDifference compares one key's replayed and
// committed records: each way the committed sequence can depart from the
// replay is named as such, and equal sequences give nothing.
func TestDiffNamesEachKindOfDifference(t *testing.T) {
	for _, tc := range []struct {
		name, want, got   string
		ordered, multiset []string
	}{
		{name: "equal", want: "abc", got: "abc"},
		{name: "duplicate", want: "abc", got: "abcb", ordered: []string{"duplicate got b@3 want b"}, multiset: []string{"duplicate got b@3 want b"}},
		{name: "missing", want: "abc", got: "ac", ordered: []string{"missing want b"}, multiset: []string{"missing want b"}},
		{name: "different", want: "abc", got: "axc", ordered: []string{"different got x@1 want b"}, multiset: []string{"missing want b", "unexpected got x@1"}},
		{name: "unexpected", want: "abc", got: "abcz", ordered: []string{"unexpected got z@3"}, multiset: []string{"unexpected got z@3"}},
		{name: "out of order", want: "abc", got: "bac", ordered: []string{"out of order got b@0 want b"}},
		{name: "all missing", want: "ab", got: "", ordered: []string{"missing want a", "missing want b"}, multiset: []string{"missing want a", "missing want b"}},
		{name: "nothing expected", want: "", got: "q", ordered: []string{"unexpected got q@0"}, multiset: []string{"unexpected got q@0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := render(diffOrdered(sides(tc.want), sides(tc.got))); !slices.Equal(got, tc.ordered) {
				t.Errorf("ordered: %v, want %v", got, tc.ordered)
			}
			if got := render(diffMultiset(sides(tc.want), sides(tc.got))); !slices.Equal(got, tc.multiset) {
				t.Errorf("multiset: %v, want %v", got, tc.multiset)
			}
		})
	}
}

// TestDiffOfLongSequencesFallsBackToAMultiset compares sequences whose
// differing parts are too long to align cell by cell: records are still
// matched by content (extra ones found), only their order is not checked.
func TestDiffOfLongSequencesFallsBackToAMultiset(t *testing.T) {
	long := strings.Repeat("ab", 3000)
	want := sides("x" + long + "y")
	got := sides("y" + long + "x" + "z")
	if len(want)*len(got) <= maxAlignCells {
		t.Fatal("sequences short enough to align: the test proves nothing")
	}
	if got := render(diffOrdered(want, got)); !slices.Equal(got, []string{"unexpected got z@6002"}) {
		t.Fatalf("%v", got)
	}
}

// TestIdentityIgnoresOnlyTheNamedHeaders compares records that differ in
// an ignored header (equal) and in another one (different).
func TestIdentityIgnoresOnlyTheNamedHeaders(t *testing.T) {
	a := &Record{Value: []byte("v"), Headers: []exactly.Header{{Key: "exactly.error.message", Value: []byte("stack 1")}, {Key: "h", Value: []byte("1")}}}
	b := &Record{Value: []byte("v"), Headers: []exactly.Header{{Key: "exactly.error.message", Value: []byte("stack 2")}, {Key: "h", Value: []byte("1")}}}
	c := &Record{Value: []byte("v"), Headers: []exactly.Header{{Key: "exactly.error.message", Value: []byte("stack 1")}, {Key: "h", Value: []byte("2")}}}
	ignore := []string{"exactly.error.message"}
	if identity(a, ignore) != identity(b, ignore) {
		t.Error("an ignored header made records differ")
	}
	if identity(a, ignore) == identity(c, ignore) {
		t.Error("a compared header did not make records differ")
	}
	if identity(&Record{Value: nil}, nil) == identity(&Record{Value: []byte{}}, nil) {
		t.Error("a null value equals an empty one")
	}
}
