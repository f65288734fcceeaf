// Package serde turns typed keys and values into the bytes Kafka carries and
// back. Every Serde is deterministic: the same value always serializes to the
// same bytes, which changelogs, dedup and deterministic ids rely on.
package serde

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Serde converts values of type T to and from bytes. Deserialize must return
// an error, never panic, on input it cannot decode: such records go to the
// deserialization error handler (fail or dead-letter), never silently away.
type Serde[T any] interface {
	Serialize(v T) ([]byte, error)
	Deserialize(b []byte) (T, error)
}

// Appender is implemented by serdes that can write a value's bytes after
// bytes the caller has: Append returns dst with the bytes Serialize would
// return for v appended. The state stores use it to make a store key in
// one buffer, without a slice of its own for the serialized key. String,
// Bytes and Int64 implement it.
type Appender[T any] interface {
	Append(dst []byte, v T) ([]byte, error)
}

// ErrInvalid is wrapped by every decoding error of the serdes in this package.
var ErrInvalid = errors.New("serde: invalid input")

// Funcs adapts a pair of functions to a Serde.
type Funcs[T any] struct {
	SerializeFunc   func(T) ([]byte, error)
	DeserializeFunc func([]byte) (T, error)
}

// Serialize calls SerializeFunc.
func (f Funcs[T]) Serialize(v T) ([]byte, error) { return f.SerializeFunc(v) }

// Deserialize calls DeserializeFunc.
func (f Funcs[T]) Deserialize(b []byte) (T, error) { return f.DeserializeFunc(b) }

// String is UTF-8 text. Deserialize rejects invalid UTF-8 so that binary junk
// on a text topic is reported, not carried along.
var String Serde[string] = stringSerde{}

type stringSerde struct{}

func (stringSerde) Serialize(v string) ([]byte, error)          { return []byte(v), nil }
func (stringSerde) Append(dst []byte, v string) ([]byte, error) { return append(dst, v...), nil }
func (stringSerde) Deserialize(b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%w: string is not valid UTF-8", ErrInvalid)
	}
	return string(b), nil
}

// Bytes passes bytes through unchanged. Serialize returns the slice it was
// given; Deserialize returns a copy, safe to keep.
var Bytes Serde[[]byte] = bytesSerde{}

type bytesSerde struct{}

func (bytesSerde) Serialize(v []byte) ([]byte, error)          { return v, nil }
func (bytesSerde) Append(dst []byte, v []byte) ([]byte, error) { return append(dst, v...), nil }
func (bytesSerde) Deserialize(b []byte) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	return append([]byte(nil), b...), nil
}

// Int64 is an 8-byte big-endian two's-complement integer, the encoding of
// Kafka's LongSerializer, so other clients can read it.
var Int64 Serde[int64] = int64Serde{}

type int64Serde struct{}

func (int64Serde) Serialize(v int64) ([]byte, error) {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(v)), nil
}
func (int64Serde) Append(dst []byte, v int64) ([]byte, error) {
	return binary.BigEndian.AppendUint64(dst, uint64(v)), nil
}
func (int64Serde) Deserialize(b []byte) (int64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: int64 needs 8 bytes, got %d", ErrInvalid, len(b))
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// JSON encodes T with encoding/json. Maps are written with sorted keys, so
// equal values give equal bytes. Deserialize rejects null, trailing data and
// invalid UTF-8.
func JSON[T any]() Serde[T] { return jsonSerde[T]{} }

type jsonSerde[T any] struct{}

func (jsonSerde[T]) Serialize(v T) ([]byte, error) { return json.Marshal(v) }
func (jsonSerde[T]) Deserialize(b []byte) (T, error) {
	var v T
	if !utf8.Valid(b) {
		return v, fmt.Errorf("%w: JSON is not valid UTF-8", ErrInvalid)
	}
	if len(b) == 0 {
		return v, fmt.Errorf("%w: empty JSON value", ErrInvalid)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return v, nil
}
