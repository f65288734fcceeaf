package orders

import (
	"encoding/binary"
	"errors"
	"fmt"

	json "github.com/goccy/go-json"

	"github.com/exactly-go/exactly/serde"
)

// The application's JSON (the input envelope, the projections it emits,
// events waiting in the reorder buffer) goes through github.com/goccy/go-json,
// which decodes and encodes as encoding/json does (the same errors for the
// same input, the same bytes for the same value; tests check both against
// encoding/json) at a fraction of its cost. Events in the plain form
// producers write are parsed in one pass before that (plainEvent), with
// the same result. The aggregate the projection
// store holds is not a wire contract: it is stored in a compact binary
// form (AggregateSerde).

// AggregateSerde is the serde of the projection store's values: a binary
// encoding of Aggregate, versioned by its first byte. It also reads the
// JSON encoding that earlier versions stored (a value starting with '{'),
// so a store or changelog written by them is read as before.
type AggregateSerde struct{}

// aggregateFormat is the first byte of the binary encoding; JSON values
// start with '{'.
const aggregateFormat = 1

// Serialize encodes a.
func (AggregateSerde) Serialize(a Aggregate) ([]byte, error) {
	p := &a.Projection
	n := 64 + len(p.OrderID) + len(p.CustomerID) + len(p.Status) + len(p.TrackingNumber) + len(p.LastEventID) +
		len(a.Created.EventID) + len(a.Updated.EventID) + len(a.Shipped.EventID) + len(a.Last.EventID)
	for _, it := range p.Items {
		n += len(it.SKU) + 2*binary.MaxVarintLen64 + 1
	}
	b := make([]byte, 0, n)
	b = append(b, aggregateFormat)
	b = appendString(b, p.OrderID)
	b = appendString(b, p.CustomerID)
	b = appendString(b, string(p.Status))
	if p.Items == nil {
		b = binary.AppendUvarint(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(p.Items))+1)
	}
	for _, it := range p.Items {
		b = appendString(b, it.SKU)
		b = binary.AppendVarint(b, it.Quantity)
		b = binary.AppendVarint(b, it.PriceCents)
	}
	b = appendString(b, p.TrackingNumber)
	b = binary.AppendVarint(b, p.CreatedAt)
	b = binary.AppendVarint(b, p.UpdatedAt)
	b = binary.AppendVarint(b, p.ShippedAt)
	b = binary.AppendVarint(b, p.Version)
	b = appendString(b, p.LastEventID)
	for _, r := range []*EventRef{&a.Created, &a.Updated, &a.Shipped, &a.Last} {
		b = binary.AppendVarint(b, r.Timestamp)
		b = appendString(b, r.EventID)
	}
	return binary.AppendUvarint(b, a.Sequence), nil
}

// Deserialize decodes the binary encoding, or the JSON one of earlier
// versions.
func (AggregateSerde) Deserialize(b []byte) (Aggregate, error) {
	var a Aggregate
	if len(b) > 0 && b[0] == '{' {
		err := json.Unmarshal(b, &a)
		return a, err
	}
	if len(b) == 0 || b[0] != aggregateFormat {
		return a, errors.New("orders: unknown aggregate encoding")
	}
	r := serde.NewReader(b[1:], "aggregate")
	str := func() string { return string(r.Bytes(r.Uvarint())) }
	p := &a.Projection
	p.OrderID = str()
	p.CustomerID = str()
	p.Status = Status(str())
	if n := r.Uvarint(); n > 0 {
		if n-1 > uint64(r.Len()) {
			return a, errors.New("orders: malformed aggregate")
		}
		p.Items = make([]LineItem, n-1)
		for i := range p.Items {
			p.Items[i] = LineItem{SKU: str(), Quantity: r.Varint(), PriceCents: r.Varint()}
		}
	}
	p.TrackingNumber = str()
	p.CreatedAt = r.Varint()
	p.UpdatedAt = r.Varint()
	p.ShippedAt = r.Varint()
	p.Version = r.Varint()
	p.LastEventID = str()
	for _, ref := range []*EventRef{&a.Created, &a.Updated, &a.Shipped, &a.Last} {
		ref.Timestamp = r.Varint()
		ref.EventID = str()
	}
	a.Sequence = r.Uvarint()
	if err := r.Err(true); err != nil {
		return Aggregate{}, fmt.Errorf("orders: %w", err)
	}
	return a, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// jsonSerde is serde.JSON through the application's JSON library.
type jsonSerde[T any] struct{}

func (jsonSerde[T]) Serialize(v T) ([]byte, error) { return json.Marshal(v) }

func (jsonSerde[T]) Deserialize(b []byte) (T, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("decode %T: %w", v, err)
	}
	return v, nil
}

// eventSerde stores events in the reorder buffer in their wire format.
type eventSerde struct{}

func (eventSerde) Serialize(e Event) ([]byte, error) { return e.MarshalJSON() }

func (eventSerde) Deserialize(b []byte) (Event, error) {
	e, err := Decoder{}.decodeValue(b, false)
	if err != nil {
		return Event{}, err
	}
	return e, nil
}
