package serde

import (
	"encoding/binary"
	"errors"
	"testing"
)

// TestReaderReadsWhatBinaryAppendWrote and stops at the first problem.
func TestReaderReadsWhatBinaryAppendWrote(t *testing.T) {
	b := []byte{7}
	b = binary.AppendUvarint(b, 300)
	b = binary.AppendVarint(b, -5)
	b = binary.AppendUvarint(b, 3)
	b = append(b, "abc"...)
	r := NewReader(b, "thing")
	if c, u, v, s := r.Byte(), r.Uvarint(), r.Varint(), string(r.Bytes(r.Uvarint())); c != 7 || u != 300 || v != -5 || s != "abc" {
		t.Fatalf("read %d %d %d %q", c, u, v, s)
	}
	if err := r.Err(true); err != nil {
		t.Fatal(err)
	}

	trailing := NewReader(append(b, 0), "thing")
	trailing.Byte()
	trailing.Uvarint()
	if err := trailing.Err(false); err != nil {
		t.Fatalf("an unfinished read is not an error: %v", err)
	}
	if err := trailing.Err(true); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bytes left at the end: %v, want ErrInvalid", err)
	}

	short := NewReader([]byte{5, 'a'}, "thing")
	if got := short.Bytes(short.Uvarint()); got != nil {
		t.Fatalf("a run longer than the input read as %q", got)
	}
	if short.Byte() != 0 || short.Varint() != 0 || short.Len() != 0 {
		t.Fatal("reads after a problem return zero values")
	}
	if err := short.Err(false); !errors.Is(err, ErrInvalid) || err.Error() != "serde: invalid input: malformed thing" {
		t.Fatalf("err = %v", err)
	}
}
