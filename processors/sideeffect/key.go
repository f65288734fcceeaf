package sideeffect

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// KeyFrom derives an idempotency key from an event's identity: the same
// namespace and identity always give the same key, on any machine and in
// any process, and different ones give different keys (SHA-256 of the
// length-prefixed fields, so ("ab", "c") and ("a", "bc") differ).
//
// The key is formatted as a UUID of version 8 (RFC 9562, name-based on
// SHA-256), which payment gateways accept as an idempotency key. It contains
// nothing random and no clock: a replayed event gets the key of its first
// delivery, which is what lets the external system recognise the retry.
//
// Choose identity so that two events meaning the same business command share
// it (for a payment, the payment order's id), not the Kafka offset or the
// event id of a resend.
func KeyFrom(namespace string, identity ...string) string {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, field := range append([]string{namespace}, identity...) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(field)))])
		h.Write([]byte(field))
	}
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x80 // version 8
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}
