package orders_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/exactly-go/exactly/examples/orders"
)

// FuzzDecode feeds the decoder arbitrary keys and values. Whatever the
// input, Decode does not panic; a failure has one of the contract's
// reasons; a success is an event of its key that survives a round trip
// through the wire format unchanged. `go test` runs the seed corpus;
// `go test -fuzz FuzzDecode ./examples/orders` explores further.
func FuzzDecode(f *testing.F) {
	gen := orders.DefaultGenerateOptions(5, 20, 1)
	gen.MalformedRate, gen.Sequences = 0.5, true
	for _, r := range orders.Generate(gen) {
		f.Add(r.Key, r.Value)
	}
	f.Add([]byte("o-1"), []byte(`{"metadata":{"eventId":"e","timestamp":1732260000000,"sequence":0},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c","createdAt":1}}`))
	f.Add([]byte("o-1"), []byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderUpdated","payload":{"orderId":"o-1","items":[{"sku":"s","quantity":-1,"priceCents":1}],"updatedAt":1}}`))
	f.Add([]byte("o-1"), []byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderUpdated","payload":{"orderId":"o-1","items":null,"updatedAt":1}}`))
	f.Add([]byte("o-1"), []byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderShipped","payload":[]} `))
	f.Add([]byte{}, []byte(`{}`))
	f.Add([]byte("o-1"), []byte{})
	reasons := map[string]bool{
		orders.ReasonMalformed: true, orders.ReasonUnknownEventType: true,
		orders.ReasonMissingField: true, orders.ReasonInvalidTimestamp: true,
	}
	f.Fuzz(func(t *testing.T, key, value []byte) {
		e, err := orders.Decode(key, value)
		if err != nil {
			var de *orders.DecodeError
			if !errors.As(err, &de) || !reasons[de.Reason] || de.Message == "" {
				t.Fatalf("error %v (%T) is not a DecodeError with a known reason", err, err)
			}
			return
		}
		if e.OrderID() != string(key) {
			t.Fatalf("decoded order %q from key %q", e.OrderID(), key)
		}
		wire, err := e.MarshalJSON()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", e, err)
		}
		again, err := orders.Decoder{MaxEventBytes: -1}.Decode(key, wire)
		if err != nil {
			t.Fatalf("re-encoded event %s does not decode: %v", wire, err)
		}
		if !reflect.DeepEqual(e, again) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", e, again)
		}
	})
}
