package serde

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func TestRoundTrips(t *testing.T) {
	for _, v := range []int64{0, 1, -1, math.MaxInt64, math.MinInt64} {
		b, _ := Int64.Serialize(v)
		got, err := Int64.Deserialize(b)
		if err != nil || got != v {
			t.Fatalf("int64 %d: got %d, %v", v, got, err)
		}
	}
	b, _ := String.Serialize("héllo")
	if s, err := String.Deserialize(b); err != nil || s != "héllo" {
		t.Fatalf("string: %q %v", s, err)
	}
	type T struct {
		A string         `json:"a"`
		M map[string]int `json:"m"`
	}
	js := JSON[T]()
	b, _ = js.Serialize(T{A: "x", M: map[string]int{"b": 2, "a": 1}})
	if string(b) != `{"a":"x","m":{"a":1,"b":2}}` {
		t.Fatalf("json not canonical: %s", b)
	}
	if v, err := js.Deserialize(b); err != nil || v.M["b"] != 2 {
		t.Fatalf("json: %+v %v", v, err)
	}
}

func TestInvalidInputIsAnErrorNotAPanic(t *testing.T) {
	cases := map[string]func() error{
		"int64 short":  func() error { _, err := Int64.Deserialize([]byte{1, 2}); return err },
		"string utf8":  func() error { _, err := String.Deserialize([]byte{0xff, 0xfe}); return err },
		"json garbage": func() error { _, err := JSON[map[string]int]().Deserialize([]byte("{nope")); return err },
		"json empty":   func() error { _, err := JSON[map[string]int]().Deserialize(nil); return err },
		"json utf8":    func() error { _, err := JSON[string]().Deserialize([]byte{'"', 0xff, '"'}); return err },
	}
	for name, f := range cases {
		if err := f(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: want ErrInvalid, got %v", name, err)
		}
	}
}

func FuzzJSONDeserialize(f *testing.F) {
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte{0xff})
	s := JSON[map[string]any]()
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := s.Deserialize(b)
		if err != nil {
			return
		}
		if _, err := s.Serialize(v); err != nil {
			t.Fatalf("decoded value does not re-encode: %v", err)
		}
	})
}

// TestAppendAppendsWhatSerializeReturns: the serdes that implement
// Appender append exactly Serialize's bytes after the caller's.
func TestAppendAppendsWhatSerializeReturns(t *testing.T) {
	check := func(name string, got, want []byte) {
		t.Helper()
		if !bytes.Equal(got, want) {
			t.Errorf("%s: Append gives %q, want %q", name, got, want)
		}
	}
	prefix := []byte("prefix/")
	for _, v := range []string{"", "o-000123", "ünïcode"} {
		want, _ := String.Serialize(v)
		got, err := String.(Appender[string]).Append(bytes.Clone(prefix), v)
		if err != nil {
			t.Fatal(err)
		}
		check("String", got, append(bytes.Clone(prefix), want...))
	}
	for _, v := range [][]byte{nil, {}, {0, 1, 0xff}} {
		want, _ := Bytes.Serialize(v)
		got, err := Bytes.(Appender[[]byte]).Append(bytes.Clone(prefix), v)
		if err != nil {
			t.Fatal(err)
		}
		check("Bytes", got, append(bytes.Clone(prefix), want...))
	}
	for _, v := range []int64{0, -1, 1 << 40} {
		want, _ := Int64.Serialize(v)
		got, err := Int64.(Appender[int64]).Append(bytes.Clone(prefix), v)
		if err != nil {
			t.Fatal(err)
		}
		check("Int64", got, append(bytes.Clone(prefix), want...))
	}
}
