package orders

import (
	"bytes"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	json "github.com/goccy/go-json"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/processors/reorder"
)

// EventType names an order event on the wire.
type EventType string

// The order event types.
const (
	TypeOrderCreated EventType = "OrderCreated"
	TypeOrderUpdated EventType = "OrderUpdated"
	TypeOrderShipped EventType = "OrderShipped"
)

// Metadata is the envelope every order event carries.
type Metadata struct {
	// EventID identifies the event; copies of one event share it.
	EventID string `json:"eventId"`
	// TraceID is carried along for tracing; it takes no part in decisions.
	TraceID string `json:"traceId,omitempty"`
	// Timestamp is event time in epoch milliseconds; it drives stream time.
	Timestamp int64 `json:"timestamp"`
	// Sequence, when non-zero, is the event's number within its order (1,
	// 2, 3, …): an event waits until every lower number has been applied.
	Sequence uint64 `json:"sequence,omitempty"`
}

// LineItem is one line of an order.
type LineItem struct {
	SKU        string `json:"sku"`
	Quantity   int64  `json:"quantity"`
	PriceCents int64  `json:"priceCents"`
}

// OrderCreated is the payload of an OrderCreated event.
type OrderCreated struct {
	OrderID    string `json:"orderId"`
	CustomerID string `json:"customerId"`
	CreatedAt  int64  `json:"createdAt"`
}

// OrderUpdated is the payload of an OrderUpdated event: the order's items
// as of UpdatedAt.
type OrderUpdated struct {
	OrderID   string     `json:"orderId"`
	Items     []LineItem `json:"items"`
	UpdatedAt int64      `json:"updatedAt"`
}

// OrderShipped is the payload of an OrderShipped event.
type OrderShipped struct {
	OrderID        string `json:"orderId"`
	TrackingNumber string `json:"trackingNumber"`
	ShippedAt      int64  `json:"shippedAt"`
}

// Event is a decoded order event: its metadata, its type and the one
// payload that type carries (the other two are nil). It marshals to and
// from the wire format of the order-events topic.
type Event struct {
	Metadata Metadata
	Type     EventType
	Created  *OrderCreated
	Updated  *OrderUpdated
	Shipped  *OrderShipped
}

// OrderID returns the id of the order the event belongs to.
func (e Event) OrderID() string {
	switch {
	case e.Created != nil:
		return e.Created.OrderID
	case e.Updated != nil:
		return e.Updated.OrderID
	case e.Shipped != nil:
		return e.Shipped.OrderID
	}
	return ""
}

type wireEvent struct {
	Metadata Metadata  `json:"metadata"`
	Type     EventType `json:"type"`
	Payload  any       `json:"payload"`
}

// MarshalJSON writes the wire format:
// {"metadata": {...}, "type": "...", "payload": {...}}.
func (e Event) MarshalJSON() ([]byte, error) {
	w := wireEvent{Metadata: e.Metadata, Type: e.Type}
	switch e.Type {
	case TypeOrderCreated:
		w.Payload = e.Created
	case TypeOrderUpdated:
		w.Payload = e.Updated
	case TypeOrderShipped:
		w.Payload = e.Shipped
	default:
		return nil, fmt.Errorf("orders: cannot encode event type %q", e.Type)
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the wire format with the checks of Decode except the
// size and timestamp limits, which are a topology's to set.
func (e *Event) UnmarshalJSON(b []byte) error {
	ev, err := Decoder{}.decodeValue(b, false)
	if err != nil {
		return err
	}
	*e = ev
	return nil
}

// The reasons an order event is dead-lettered; they are the values of the
// exactly.error.reason header on order-events-dlq.
const (
	// ReasonMalformed: not valid UTF-8 JSON of the contract's shape (wrong
	// field types, trailing data, negative quantities, an oversized value,
	// a key that is not the payload's orderId).
	ReasonMalformed = "malformed"
	// ReasonUnknownEventType: a type other than OrderCreated, OrderUpdated
	// and OrderShipped.
	ReasonUnknownEventType = "unknown-event-type"
	// ReasonMissingField: a required field (eventId, timestamp, type,
	// orderId, the record key, or a payload field) is absent, null or
	// empty.
	ReasonMissingField = "missing-field"
	// ReasonInvalidTimestamp: metadata.timestamp outside the topology's
	// [ValidFrom, ValidUntil), so that it cannot throw stream time far off.
	ReasonInvalidTimestamp = exactly.ReasonInvalidTimestamp
	// ReasonExpired: the event waited for its order's OrderCreated (or a
	// lower sequence number) longer than the buffer TTL.
	ReasonExpired = reorder.ReasonExpired
)

// DecodeError says why a record is not a valid order event.
type DecodeError struct {
	// Reason is one of the Reason constants.
	Reason string
	// Message says what is wrong, for a person.
	Message string
}

// Error returns the reason and the message.
func (e *DecodeError) Error() string { return e.Reason + ": " + e.Message }

func decodeErr(reason, format string, args ...any) *DecodeError {
	return &DecodeError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Decoder decodes order events under limits. The zero Decoder uses the
// defaults of each field.
type Decoder struct {
	// MaxEventBytes is the largest value accepted; default 1 MiB; negative
	// means no limit.
	MaxEventBytes int
	// ValidFrom and ValidUntil bound metadata.timestamp; defaults
	// 2000-01-01 and 2100-01-01 UTC.
	ValidFrom, ValidUntil time.Time
}

// Default limits of a Decoder.
var (
	DefaultMaxEventBytes = 1 << 20
	DefaultValidFrom     = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	DefaultValidUntil    = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

func (d Decoder) withDefaults() Decoder {
	if d.MaxEventBytes == 0 {
		d.MaxEventBytes = DefaultMaxEventBytes
	}
	if d.ValidFrom.IsZero() {
		d.ValidFrom = DefaultValidFrom
	}
	if d.ValidUntil.IsZero() {
		d.ValidUntil = DefaultValidUntil
	}
	return d
}

// Decode decodes the record key and value of an order event with the
// default limits. See Decoder.Decode.
func Decode(key, value []byte) (Event, error) { return Decoder{}.Decode(key, value) }

// Decode decodes an order event and checks it against the contract: every
// required field present, the key equal to the payload's orderId. A failure
// is a *DecodeError whose Reason says where the record belongs. Decode never
// panics, whatever the input.
func (d Decoder) Decode(key, value []byte) (Event, error) {
	e, derr := d.withDefaults().decodeValue(value, true)
	if derr != nil {
		return Event{}, derr
	}
	if derr := checkKey(key, e); derr != nil {
		return Event{}, derr
	}
	return e, nil
}

func checkKey(key []byte, e Event) *DecodeError {
	switch {
	case len(key) == 0:
		return decodeErr(ReasonMissingField, "the record key (the orderId) is missing")
	case !utf8.Valid(key):
		return decodeErr(ReasonMalformed, "the record key is not valid UTF-8")
	case string(key) != e.OrderID():
		return decodeErr(ReasonMalformed, "the record key %q is not the payload's orderId %q", key, e.OrderID())
	}
	return nil
}

// The shapes decoded before checking: pointers tell absent and null fields
// from zero values.
type (
	envelopeIn struct {
		Metadata *metadataIn     `json:"metadata"`
		Type     *string         `json:"type"`
		Payload  json.RawMessage `json:"payload"`
	}
	metadataIn struct {
		EventID   *string `json:"eventId"`
		TraceID   *string `json:"traceId"`
		Timestamp *int64  `json:"timestamp"`
		Sequence  *uint64 `json:"sequence"`
	}
	lineItemIn struct {
		SKU        *string `json:"sku"`
		Quantity   *int64  `json:"quantity"`
		PriceCents *int64  `json:"priceCents"`
	}
	payloadIn struct {
		OrderID        *string       `json:"orderId"`
		CustomerID     *string       `json:"customerId"`
		CreatedAt      *int64        `json:"createdAt"`
		Items          *[]lineItemIn `json:"items"`
		UpdatedAt      *int64        `json:"updatedAt"`
		TrackingNumber *string       `json:"trackingNumber"`
		ShippedAt      *int64        `json:"shippedAt"`
	}
)

func isObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

func jsonProblem(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d: %v", syntax.Offset, syntax)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %s is a JSON %s, not a %s", typ.Field, typ.Value, typ.Type)
	}
	return err.Error()
}

// decodeValue decodes and checks a value; limits applies the size and
// timestamp limits of d, which must have its defaults filled in. A value in
// the plain form producers write is parsed in one pass (plainEvent); any
// other goes through the JSON library, with the same result.
func (d Decoder) decodeValue(value []byte, limits bool) (Event, *DecodeError) {
	return d.decode(json.Unmarshal, value, limits, true)
}

// decodeValueWith is decodeValue with the given JSON decoder for every
// value, which must behave as encoding/json.Unmarshal does (tests compare
// the two, and decodeValue with both).
func (d Decoder) decodeValueWith(unmarshal func([]byte, any) error, value []byte, limits bool) (Event, *DecodeError) {
	return d.decode(unmarshal, value, limits, false)
}

// unmarshalInto decodes b into a T; the T is returned by value, so that
// the caller's copy does not move to the heap with the one the decoder is
// handed.
func unmarshalInto[T any](unmarshal func([]byte, any) error, b []byte) (T, error) {
	var v T
	err := unmarshal(b, &v)
	return v, err
}

func (d Decoder) decode(unmarshal func([]byte, any) error, value []byte, limits, plain bool) (Event, *DecodeError) {
	var e Event
	if limits && d.MaxEventBytes >= 0 && len(value) > d.MaxEventBytes {
		return e, decodeErr(ReasonMalformed, "the value has %d bytes, more than the limit of %d", len(value), d.MaxEventBytes)
	}
	if !utf8.Valid(value) {
		return e, decodeErr(ReasonMalformed, "the value is not valid UTF-8")
	}
	if !isObject(value) {
		return e, decodeErr(ReasonMalformed, "the value is not a JSON object")
	}
	var in envelopeIn
	var p payloadIn
	var pe plainEvent
	parsed := plain && pe.parse(value, &in, &p)
	if !parsed {
		p = payloadIn{}
		var err error
		if in, err = unmarshalInto[envelopeIn](unmarshal, value); err != nil {
			return e, decodeErr(ReasonMalformed, "%s", jsonProblem(err))
		}
	}
	if in.Type == nil || *in.Type == "" {
		return e, decodeErr(ReasonMissingField, "type is missing")
	}
	e.Type = EventType(*in.Type)
	switch e.Type {
	case TypeOrderCreated, TypeOrderUpdated, TypeOrderShipped:
	default:
		return Event{}, decodeErr(ReasonUnknownEventType, "unknown event type %q", *in.Type)
	}
	m := in.Metadata
	switch {
	case m == nil:
		return Event{}, decodeErr(ReasonMissingField, "metadata is missing")
	case m.EventID == nil || *m.EventID == "":
		return Event{}, decodeErr(ReasonMissingField, "metadata.eventId is missing")
	case m.Timestamp == nil:
		return Event{}, decodeErr(ReasonMissingField, "metadata.timestamp is missing")
	case m.Sequence != nil && *m.Sequence == 0:
		return Event{}, decodeErr(ReasonMalformed, "metadata.sequence starts at 1, not 0")
	}
	e.Metadata = Metadata{EventID: *m.EventID, Timestamp: *m.Timestamp}
	if m.TraceID != nil {
		e.Metadata.TraceID = *m.TraceID
	}
	if m.Sequence != nil {
		e.Metadata.Sequence = *m.Sequence
	}
	if !parsed {
		if len(in.Payload) == 0 || string(in.Payload) == "null" {
			return Event{}, decodeErr(ReasonMissingField, "payload is missing")
		}
		if !isObject(in.Payload) {
			return Event{}, decodeErr(ReasonMalformed, "payload is not a JSON object")
		}
		var err error
		if p, err = unmarshalInto[payloadIn](unmarshal, in.Payload); err != nil {
			return Event{}, decodeErr(ReasonMalformed, "payload: %s", jsonProblem(err))
		}
	}
	if derr := d.fill(&e, &p); derr != nil {
		return Event{}, derr
	}
	if ts := e.Metadata.Timestamp; limits && (ts < d.ValidFrom.UnixMilli() || ts >= d.ValidUntil.UnixMilli()) {
		return Event{}, decodeErr(ReasonInvalidTimestamp, "metadata.timestamp %d is outside [%s, %s)", ts,
			d.ValidFrom.UTC().Format(time.RFC3339), d.ValidUntil.UTC().Format(time.RFC3339))
	}
	return e, nil
}

// fill checks the payload's fields for e.Type and copies them into e.
func (d Decoder) fill(e *Event, p *payloadIn) *DecodeError {
	if p.OrderID == nil || *p.OrderID == "" {
		return decodeErr(ReasonMissingField, "payload.orderId is missing")
	}
	str := func(name string, v *string) (string, *DecodeError) {
		if v == nil || *v == "" {
			return "", decodeErr(ReasonMissingField, "payload.%s is missing", name)
		}
		return *v, nil
	}
	millis := func(name string, v *int64) (int64, *DecodeError) {
		switch {
		case v == nil:
			return 0, decodeErr(ReasonMissingField, "payload.%s is missing", name)
		case *v < 0:
			return 0, decodeErr(ReasonMalformed, "payload.%s is negative", name)
		}
		return *v, nil
	}
	var derr, derr2 *DecodeError
	switch e.Type {
	case TypeOrderCreated:
		c := &OrderCreated{OrderID: *p.OrderID}
		c.CustomerID, derr = str("customerId", p.CustomerID)
		c.CreatedAt, derr2 = millis("createdAt", p.CreatedAt)
		e.Created = c
	case TypeOrderUpdated:
		u := &OrderUpdated{OrderID: *p.OrderID}
		u.Items, derr = items(p.Items)
		u.UpdatedAt, derr2 = millis("updatedAt", p.UpdatedAt)
		e.Updated = u
	case TypeOrderShipped:
		s := &OrderShipped{OrderID: *p.OrderID}
		s.TrackingNumber, derr = str("trackingNumber", p.TrackingNumber)
		s.ShippedAt, derr2 = millis("shippedAt", p.ShippedAt)
		e.Shipped = s
	}
	if derr != nil {
		return derr
	}
	return derr2
}

func items(in *[]lineItemIn) ([]LineItem, *DecodeError) {
	if in == nil || *in == nil {
		return nil, decodeErr(ReasonMissingField, "payload.items is missing")
	}
	out := make([]LineItem, 0, len(*in))
	for i, it := range *in {
		switch {
		case it.SKU == nil || *it.SKU == "":
			return nil, decodeErr(ReasonMissingField, "payload.items[%d].sku is missing", i)
		case it.Quantity == nil:
			return nil, decodeErr(ReasonMissingField, "payload.items[%d].quantity is missing", i)
		case it.PriceCents == nil:
			return nil, decodeErr(ReasonMissingField, "payload.items[%d].priceCents is missing", i)
		case *it.Quantity <= 0:
			return nil, decodeErr(ReasonMalformed, "payload.items[%d].quantity must be positive", i)
		case *it.PriceCents < 0:
			return nil, decodeErr(ReasonMalformed, "payload.items[%d].priceCents is negative", i)
		}
		out = append(out, LineItem{SKU: *it.SKU, Quantity: *it.Quantity, PriceCents: *it.PriceCents})
	}
	return out, nil
}
