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
