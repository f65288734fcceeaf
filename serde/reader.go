package serde

import (
	"encoding/binary"
	"fmt"
)

// Reader reads, in order, the parts of a binary encoding a serde wrote with
// encoding/binary's Append functions: single bytes, varints, and runs of
// bytes whose length the encoding gives. The first problem sticks: every
// read after it returns a zero value, and Err reports it. It holds no copy:
// Bytes returns a part of the input.
type Reader struct {
	b    []byte
	err  error
	what string
}

// NewReader reads b, an encoding of what (named in errors: "malformed
// <what>").
func NewReader(b []byte, what string) *Reader { return &Reader{b: b, what: what} }

func (r *Reader) fail() {
	if r.err == nil {
		r.err = fmt.Errorf("%w: malformed %s", ErrInvalid, r.what)
	}
	r.b = nil
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Varint reads a signed varint.
func (r *Reader) Varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Bytes reads the next n bytes: a part of the input, not a copy.
func (r *Reader) Bytes(n uint64) []byte {
	if n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// Len returns how many bytes are left to read.
func (r *Reader) Len() int { return len(r.b) }

// Err returns the first problem met, or, when end is true and nothing went
// wrong before, an error if bytes are left: the encoding is longer than
// what was read.
func (r *Reader) Err(end bool) error {
	if r.err == nil && end && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: malformed %s: trailing bytes", ErrInvalid, r.what)
	}
	return r.err
}
