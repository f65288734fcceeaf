package reorder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
)

// The buffer's store holds three kinds of entries, told apart by their
// first byte, so that one store (and one changelog topic) holds the waiting
// events:
//
//	tagEntry  len(key) key ts id [n]  -> a buffered event (entry)
//	tagExpiry expiresAt entry-key     -> empty; the expiry index
//	tagCount                          -> number of buffered events
//
// Key states live in a store of their own, which expires them with the
// store's TTL (KeyStateTTL).
//
// The key is length-prefixed so that no key's entries can interleave with
// another's, whatever bytes keys hold; ts and expiresAt are written by
// appendTime so that byte order is time order, before the epoch too.
const (
	tagEntry  = 'b'
	tagExpiry = 'x'
	tagCount  = 'n'
)

func keyPrefix(key []byte) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(key)+8+16)
	b = append(b, tagEntry)
	b = binary.AppendUvarint(b, uint64(len(key)))
	return append(b, key...)
}

// appendTime appends epoch milliseconds big-endian with the sign bit
// flipped, so that the bytes of negative times sort before those of
// positive ones.
func appendTime(b []byte, ms int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(ms)^signBit)
}

func readTime(b []byte) int64 { return int64(binary.BigEndian.Uint64(b) ^ signBit) }

const signBit = 1 << 63

func entryKey(key []byte, ts int64, id string) []byte {
	b := appendTime(keyPrefix(key), ts)
	return append(b, id...)
}

func expiryKey(expiresAt int64, entry []byte) []byte {
	b := make([]byte, 0, 9+len(entry))
	b = appendTime(append(b, tagExpiry), expiresAt)
	return append(b, entry...)
}

func expiryBound(upTo int64) []byte {
	return appendTime([]byte{tagExpiry}, upTo)
}

func parseExpiryKey(k []byte) (expiresAt int64, entry []byte, err error) {
	if len(k) < 9 || k[0] != tagExpiry {
		return 0, nil, fmt.Errorf("malformed expiry index key %x", k)
	}
	return readTime(k[1:9]), k[9:], nil
}

var countKey = []byte{tagCount}

// keyStateSerde encodes a KeyState as a byte of flags (keyOpened,
// keyWaiting), the last sequence number as a uvarint and, with keyWaiting,
// the bound on the events waiting as a uvarint. Earlier versions wrote no
// keyWaiting: their states read as not knowing what waits.
type keyStateSerde struct{}

const (
	keyOpened  = 1 << 0
	keyWaiting = 1 << 1
)

func (keyStateSerde) Serialize(s KeyState) ([]byte, error) {
	b := make([]byte, 1, 1+2*binary.MaxVarintLen32)
	if s.Opened {
		b[0] |= keyOpened
	}
	if s.waiting > 0 {
		b[0] |= keyWaiting
	}
	b = binary.AppendUvarint(b, s.LastSequence)
	if s.waiting > 0 {
		b = binary.AppendUvarint(b, uint64(s.waiting-1))
	}
	return b, nil
}

func (keyStateSerde) Deserialize(b []byte) (KeyState, error) {
	malformed := errors.New("malformed key state")
	if len(b) < 2 || b[0]&^(keyOpened|keyWaiting) != 0 {
		return KeyState{}, malformed
	}
	flags := b[0]
	st := KeyState{Opened: flags&keyOpened != 0}
	last, n := binary.Uvarint(b[1:])
	if n <= 0 {
		return KeyState{}, malformed
	}
	st.LastSequence, b = last, b[1+n:]
	if flags&keyWaiting != 0 {
		waiting, n := binary.Uvarint(b)
		if n <= 0 || waiting >= math.MaxUint32 {
			return KeyState{}, malformed
		}
		st.waiting, b = uint32(waiting)+1, b[n:]
	}
	if len(b) != 0 {
		return KeyState{}, malformed
	}
	return st, nil
}

// entry is a buffered event: the typed record to release, in serialized
// form, and the input record it came from, to dead-letter on expiry.
type entry struct {
	expiresAt int64
	timestamp int64
	value     []byte
	headers   []exactly.Header
	source    *exactly.SourceRecord // nil when buffered outside of an input record
}

const entryFormat = 1

func (e *entry) encode() []byte {
	b := []byte{entryFormat}
	b = binary.AppendVarint(b, e.expiresAt)
	b = binary.AppendVarint(b, e.timestamp)
	b = appendBytes(b, e.value)
	b = appendHeaders(b, e.headers)
	if e.source == nil {
		return append(b, 0)
	}
	s := e.source
	b = append(b, 1)
	b = appendBytes(b, []byte(s.Topic))
	b = binary.AppendVarint(b, int64(s.Partition))
	b = binary.AppendVarint(b, s.Offset)
	b = appendBytes(b, s.Key)
	b = appendBytes(b, s.Value)
	b = appendHeaders(b, s.Headers)
	return binary.AppendVarint(b, s.Timestamp.UnixMilli())
}

// appendBytes writes len+1 then the bytes, so that nil (0) and empty (1)
// survive the round trip: a null Kafka key is not an empty one.
func appendBytes(b, v []byte) []byte {
	if v == nil {
		return binary.AppendUvarint(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(v))+1)
	return append(b, v...)
}

func appendHeaders(b []byte, hs []exactly.Header) []byte {
	b = binary.AppendUvarint(b, uint64(len(hs)))
	for _, h := range hs {
		b = appendBytes(b, []byte(h.Key))
		b = appendBytes(b, h.Value)
	}
	return b
}

// readBytes reads what appendBytes wrote, as a copy.
func readBytes(r *serde.Reader) []byte {
	n := r.Uvarint()
	if n == 0 {
		return nil
	}
	return append([]byte{}, r.Bytes(n-1)...)
}

// readHeaders reads what appendHeaders wrote.
func readHeaders(r *serde.Reader) []exactly.Header {
	n := r.Uvarint()
	if n > uint64(r.Len()) {
		r.Bytes(n) // fails
		return nil
	}
	var hs []exactly.Header
	for range n {
		hs = append(hs, exactly.Header{Key: string(readBytes(r)), Value: readBytes(r)})
	}
	return hs
}

func decodeEntry(b []byte) (*entry, error) {
	r := serde.NewReader(b, "buffered entry")
	if r.Byte() != entryFormat {
		return nil, fmt.Errorf("buffered entry: unknown format")
	}
	e := &entry{expiresAt: r.Varint(), timestamp: r.Varint(), value: readBytes(r), headers: readHeaders(r)}
	if r.Byte() == 1 {
		s := &exactly.SourceRecord{
			Topic:     string(readBytes(r)),
			Partition: int32(r.Varint()),
			Offset:    r.Varint(),
			Key:       readBytes(r),
			Value:     readBytes(r),
			Headers:   readHeaders(r),
		}
		s.Timestamp = time.UnixMilli(r.Varint())
		e.source = s
	}
	return e, r.Err(true)
}
