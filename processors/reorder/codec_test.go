package reorder

import (
	"bytes"
	"math"
	"testing"
)

// TestKeysOrderBySignedTime checks that entry and expiry keys sort, byte
// by byte, as their signed timestamps do, and that expiry keys parse back.
func TestKeysOrderBySignedTime(t *testing.T) {
	times := []int64{math.MinInt64, -86_400_000, -1, 0, 1, 1732260000000, math.MaxInt64}
	for i := 1; i < len(times); i++ {
		lo, hi := times[i-1], times[i]
		if bytes.Compare(entryKey([]byte("k"), lo, "e"), entryKey([]byte("k"), hi, "e")) >= 0 {
			t.Errorf("entry key at %d does not sort before the one at %d", lo, hi)
		}
		if bytes.Compare(expiryKey(lo, []byte("e")), expiryKey(hi, []byte("e"))) >= 0 {
			t.Errorf("expiry key at %d does not sort before the one at %d", lo, hi)
		}
		if k := expiryKey(lo, []byte("e")); bytes.Compare(k, expiryBound(hi)) >= 0 {
			t.Errorf("expiry key at %d is not below the bound at %d", lo, hi)
		}
	}
	for _, ts := range times {
		at, entry, err := parseExpiryKey(expiryKey(ts, []byte("entry")))
		if err != nil || at != ts || string(entry) != "entry" {
			t.Errorf("parseExpiryKey(expiryKey(%d)) = %d, %q, %v", ts, at, entry, err)
		}
	}
}

// TestKeyStatesRoundTripAndEarlierOnesKnowNothingOfWhatWaits checks the
// key state encoding, and that a state written by an earlier version
// (flags 0 or 1, then the last sequence number) reads as not knowing how
// many events wait, so that the buffer is read.
func TestKeyStatesRoundTripAndEarlierOnesKnowNothingOfWhatWaits(t *testing.T) {
	for _, st := range []KeyState{{}, {Opened: true}, {LastSequence: 300}, KeyState{Opened: true, LastSequence: 7}.withWaiting(0),
		KeyState{LastSequence: 2}.withWaiting(3), KeyState{Opened: true}.withWaiting(math.MaxUint32 - 1)} {
		b, err := keyStateSerde{}.Serialize(st)
		if err != nil {
			t.Fatal(err)
		}
		got, err := keyStateSerde{}.Deserialize(b)
		if err != nil || got != st {
			t.Fatalf("%+v round-trips to %+v (%v)", st, got, err)
		}
		for n := range len(b) {
			if _, err := (keyStateSerde{}).Deserialize(b[:n]); err == nil {
				t.Fatalf("%d of the %d bytes of %+v decode", n, len(b), st)
			}
		}
	}
	for _, old := range [][]byte{{0, 0}, {1, 5}, {1, 0x80, 0x01}} {
		st, err := keyStateSerde{}.Deserialize(old)
		if _, known := st.knownWaiting(); err != nil || known {
			t.Fatalf("earlier state %x reads as %+v (%v), knowing what waits", old, st, err)
		}
	}
	if st := (KeyState{}).withWaiting(0); st != (KeyState{}) {
		t.Fatalf("a key with nothing released and nothing waiting has state %+v, not the zero state", st)
	}
}
