package payments

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"
)

// InputRecord is one record of a generated payment-order stream.
type InputRecord struct {
	// Key is the order id (bytes of a malformed record's own key).
	Key []byte
	// Value is the JSON of a PaymentOrder, or junk for a malformed record.
	Value []byte
	// Timestamp is the record's timestamp, 1 ms after the previous one.
	Timestamp time.Time
}

// GenerateOptions shape a generated stream.
type GenerateOptions struct {
	// Seed makes the stream reproducible.
	Seed uint64
	// Orders is the number of distinct payment orders.
	Orders int
	// Redelivered is the share of events sent twice, with the same event
	// id (a producer retry).
	Redelivered float64
	// Resent is the share of orders sent again with a new event id (a
	// client that repeated its request): a semantic duplicate.
	Resent float64
	// Malformed is the number of records that are not payment orders.
	Malformed int
	// Start is the timestamp of the first record; records are 1 ms apart.
	Start time.Time
}

// DefaultGenerateOptions are the options of the demo: a fifth of the
// events redelivered, one order in twenty resent, one malformed record per
// hundred orders.
func DefaultGenerateOptions(seed uint64, orders int) GenerateOptions {
	return GenerateOptions{Seed: seed, Orders: orders, Redelivered: 0.2, Resent: 0.05, Malformed: orders / 100, Start: time.UnixMilli(1732260000000)}
}

// Generate returns a payment-order stream: every order once, plus the
// redeliveries, resends and malformed records the options ask for, in a
// shuffled but reproducible order (a copy never precedes its original).
func Generate(opts GenerateOptions) []InputRecord {
	rng := rand.New(rand.NewPCG(opts.Seed, 0x7061796d656e7473))
	currencies := []string{"EUR", "USD", "GBP"}
	var out []InputRecord
	ts := opts.Start
	add := func(key string, value []byte) {
		out = append(out, InputRecord{Key: []byte(key), Value: value, Timestamp: ts})
		ts = ts.Add(time.Millisecond)
	}
	var copies []PaymentOrder
	malformed := 0
	for i := range opts.Orders {
		o := PaymentOrder{
			EventID:     fmt.Sprintf("e-%d", i),
			OrderID:     fmt.Sprintf("o-%d", i),
			AmountCents: 100 + rng.Int64N(100_000),
			Currency:    currencies[rng.IntN(len(currencies))],
		}
		b, _ := json.Marshal(o)
		add(o.OrderID, b)
		if rng.Float64() < opts.Redelivered {
			copies = append(copies, o)
		}
		if rng.Float64() < opts.Resent {
			r := o
			r.EventID += "-resent"
			copies = append(copies, r)
		}
		if len(copies) > 0 && rng.IntN(3) == 0 {
			c := copies[0]
			copies = copies[1:]
			b, _ := json.Marshal(c)
			add(c.OrderID, b)
		}
		if malformed < opts.Malformed && rng.IntN(max(1, opts.Orders/opts.Malformed)) == 0 {
			add(fmt.Sprintf("bad-%d", i), []byte(`{"orderId": "bad`))
			malformed++
		}
	}
	for _, c := range copies {
		b, _ := json.Marshal(c)
		add(c.OrderID, b)
	}
	for ; malformed < opts.Malformed; malformed++ {
		add(fmt.Sprintf("bad-end-%d", malformed), []byte(`not json`))
	}
	return out
}
