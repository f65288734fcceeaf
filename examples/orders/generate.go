package orders

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// GenerateOptions shape a generated stream of order events. Rates are
// fractions in [0, 1], used as given; DefaultGenerateOptions gives a
// realistic mix.
type GenerateOptions struct {
	// Seed makes the stream reproducible: equal options give equal
	// records.
	Seed uint64
	// Orders is the number of orders.
	Orders int
	// Partitions is the partition count of the input topic; records are
	// assigned partitions as Kafka's default partitioner would by key.
	Partitions int32
	// Start and Span place the orders' creation times in [Start,
	// Start+Span), at random unless EvenSpacing is set.
	Start time.Time
	Span  time.Duration
	// EvenSpacing creates the orders at evenly spaced times, so that every
	// stretch of the span sees as many orders created: a constant rate,
	// as a test of bounded state needs.
	EvenSpacing bool
	// MaxUpdates is the most OrderUpdated events an order gets (at least
	// one).
	MaxUpdates int
	// ShippedRate is the fraction of orders that ship.
	ShippedRate float64
	// DuplicateRate is the fraction of events delivered twice, a little
	// later; ConflictRate the fraction of those copies whose bytes differ
	// (another traceId), as a careless retry would send them.
	DuplicateRate, ConflictRate float64
	// ReorderRate is the fraction of events delayed by up to MaxDelay, so
	// that they arrive after later events (an OrderUpdated before its
	// OrderCreated, or a gap in sequence numbers).
	ReorderRate float64
	MaxDelay    time.Duration
	// OrphanRate is the fraction of orders whose OrderCreated never
	// arrives: their events wait and then expire to the dead-letter topic.
	OrphanRate float64
	// MalformedRate is the number of bad records (broken JSON, invalid
	// UTF-8, unknown types, missing fields, wrong field types, null keys,
	// keys that do not match, timestamps out of range) per good one.
	MalformedRate float64
	// Sequences numbers each order's events (metadata.sequence).
	Sequences bool
	// CloseAfter, when positive, ends every partition with an order created
	// CloseAfter after the last event, so that stream time passes the
	// buffer TTL of every orphan and all of them expire. Set it above the
	// buffer TTL plus two sweep intervals.
	CloseAfter time.Duration
}

// DefaultGenerateOptions returns a realistic mix for a stream of the given
// size: about 11 events per order, 10 % duplicates (a tenth of them
// conflicting), 15 % delayed by up to 15 minutes, 2 % orphan orders, 1 %
// bad records, creation times over three days, and a closing order per
// partition 25 h after the rest.
func DefaultGenerateOptions(seed uint64, orders int, partitions int32) GenerateOptions {
	return GenerateOptions{
		Seed:          seed,
		Orders:        orders,
		Partitions:    partitions,
		Start:         time.UnixMilli(1732260000000),
		Span:          72 * time.Hour,
		MaxUpdates:    14,
		ShippedRate:   0.8,
		DuplicateRate: 0.10,
		ConflictRate:  0.10,
		ReorderRate:   0.15,
		MaxDelay:      15 * time.Minute,
		OrphanRate:    0.02,
		MalformedRate: 0.01,
		CloseAfter:    25 * time.Hour,
	}
}

// PartitionOf returns the partition Kafka's default (murmur2) partitioner
// chooses for key among partitions; a record without a key goes to 0.
func PartitionOf(key []byte, partitions int32) int32 {
	return partitionerFor(partitions)(key)
}

// partitionerFor returns PartitionOf for a fixed partition count, with the
// partitioner made once: making one seeds a random source, which costs more
// than hashing a key.
func partitionerFor(partitions int32) func(key []byte) int32 {
	tp := kgo.StickyKeyPartitioner(nil).ForTopic("")
	return func(key []byte) int32 {
		if partitions <= 1 || key == nil {
			return 0
		}
		return int32(tp.Partition(&kgo.Record{Key: key}, int(partitions)))
	}
}

type generated struct {
	key, value []byte
	timestamp  int64 // Kafka record timestamp
	arrival    int64 // when the producer sends it
	n          int   // generation order, the tie-break of arrival
}

// Generate produces a stream of order-event records in the order a
// producer sends them, with partitions and offsets assigned as an empty
// topic would give them. It is deterministic in opts.
func Generate(opts GenerateOptions) []InputRecord {
	rng := rand.New(rand.NewPCG(opts.Seed, 0x6f7264657273))
	var out []generated
	add := func(g generated) {
		g.n = len(out)
		out = append(out, g)
	}
	start := opts.Start.UnixMilli()
	chance := func(p float64) bool { return p > 0 && rng.Float64() < p }
	between := func(lo, hi time.Duration) int64 {
		if hi <= lo {
			return lo.Milliseconds()
		}
		return lo.Milliseconds() + rng.Int64N(hi.Milliseconds()-lo.Milliseconds())
	}
	last := start
	for i := range opts.Orders {
		orderID := fmt.Sprintf("o-%06d", i)
		createdAt := start + opts.Span.Milliseconds()*int64(i)/int64(opts.Orders)
		if !opts.EvenSpacing {
			createdAt = start + between(0, opts.Span)
		}
		events := orderEvents(rng, orderID, createdAt, opts)
		orphan := chance(opts.OrphanRate)
		for _, e := range events {
			if orphan && e.Type == TypeOrderCreated {
				continue
			}
			value, _ := e.MarshalJSON()
			ts := e.Metadata.Timestamp
			last = max(last, ts)
			arrival := ts
			if chance(opts.ReorderRate) {
				arrival += between(time.Second, opts.MaxDelay)
			}
			add(generated{key: []byte(orderID), value: value, timestamp: ts, arrival: arrival})
			if chance(opts.DuplicateRate) {
				dup := e
				if chance(opts.ConflictRate) {
					dup.Metadata.TraceID += "-retry"
				}
				dupValue, _ := dup.MarshalJSON()
				add(generated{key: []byte(orderID), value: dupValue, timestamp: ts, arrival: arrival + between(0, 30*time.Minute)})
			}
		}
	}
	good := len(out)
	for j := range int(float64(good) * opts.MalformedRate) {
		arrival := start + between(0, opts.Span)
		key, value := badRecord(rng, j, arrival)
		add(generated{key: key, value: value, timestamp: arrival, arrival: arrival})
	}
	slices.SortStableFunc(out, func(a, b generated) int { return cmp.Or(cmp.Compare(a.arrival, b.arrival), cmp.Compare(a.n, b.n)) })
	if opts.CloseAfter > 0 {
		closeAt := last + opts.CloseAfter.Milliseconds()
		for p := range max(opts.Partitions, 1) {
			orderID := closingOrder(p, opts.Partitions)
			e := Event{
				Metadata: Metadata{EventID: "e-" + orderID + "-1", TraceID: "t-" + orderID, Timestamp: closeAt},
				Type:     TypeOrderCreated,
				Created:  &OrderCreated{OrderID: orderID, CustomerID: "c-0000", CreatedAt: closeAt},
			}
			value, _ := e.MarshalJSON()
			out = append(out, generated{key: []byte(orderID), value: value, timestamp: closeAt})
		}
	}
	records := make([]InputRecord, len(out))
	offsets := map[int32]int64{}
	partitionOf := partitionerFor(opts.Partitions)
	for i, g := range out {
		p := partitionOf(g.key)
		records[i] = InputRecord{Partition: p, Offset: offsets[p], Key: g.key, Value: g.value, Timestamp: time.UnixMilli(g.timestamp)}
		offsets[p]++
	}
	return records
}

// closingOrder returns an order id that the default partitioner sends to
// partition p.
func closingOrder(p, partitions int32) string {
	partitionOf := partitionerFor(partitions)
	for n := 0; ; n++ {
		id := fmt.Sprintf("o-closing-%d-%d", p, n)
		if partitionOf([]byte(id)) == p {
			return id
		}
	}
}

// orderEvents returns an order's events in event-time order: created, one
// or more updates a few seconds to minutes apart, and maybe a shipment.
func orderEvents(rng *rand.Rand, orderID string, createdAt int64, opts GenerateOptions) []Event {
	ts := createdAt
	meta := func(k int) Metadata {
		m := Metadata{EventID: fmt.Sprintf("e-%s-%d", orderID, k), TraceID: "t-" + orderID, Timestamp: ts}
		if opts.Sequences {
			m.Sequence = uint64(k)
		}
		return m
	}
	events := []Event{{
		Metadata: meta(1), Type: TypeOrderCreated,
		Created: &OrderCreated{OrderID: orderID, CustomerID: fmt.Sprintf("c-%04d", rng.IntN(5000)), CreatedAt: ts},
	}}
	step := func() { ts += 5_000 + rng.Int64N(10*60_000) }
	updates := 1 + rng.IntN(max(opts.MaxUpdates, 1))
	var items []LineItem
	for range updates {
		step()
		if len(items) == 0 || rng.IntN(3) > 0 {
			items = append(slices.Clone(items), LineItem{SKU: fmt.Sprintf("s-%03d", rng.IntN(500)), Quantity: 1 + rng.Int64N(4), PriceCents: 99 + rng.Int64N(20000)})
		} else {
			items = slices.Clone(items[:len(items)-1])
		}
		events = append(events, Event{Metadata: meta(len(events) + 1), Type: TypeOrderUpdated,
			Updated: &OrderUpdated{OrderID: orderID, Items: slices.Clone(items), UpdatedAt: ts}})
	}
	if opts.ShippedRate > 0 && rng.Float64() < opts.ShippedRate {
		step()
		events = append(events, Event{Metadata: meta(len(events) + 1), Type: TypeOrderShipped,
			Shipped: &OrderShipped{OrderID: orderID, TrackingNumber: fmt.Sprintf("trk-%08d", rng.IntN(1e8)), ShippedAt: ts}})
	}
	return events
}

// badRecord returns the j-th bad record, cycling through the kinds of bad
// input the topology must dead-letter.
func badRecord(rng *rand.Rand, j int, ts int64) (key, value []byte) {
	orderID := fmt.Sprintf("o-bad-%06d", j)
	envelope := func(meta map[string]any, typ string, payload map[string]any) []byte {
		b, _ := json.Marshal(map[string]any{"metadata": meta, "type": typ, "payload": payload})
		return b
	}
	meta := map[string]any{"eventId": fmt.Sprintf("e-bad-%06d", j), "traceId": "t-bad", "timestamp": ts}
	created := map[string]any{"orderId": orderID, "customerId": "c-0001", "createdAt": ts}
	key = []byte(orderID)
	switch j % 9 {
	case 0: // truncated JSON
		value = envelope(meta, string(TypeOrderCreated), created)
		value = value[:rng.IntN(len(value)-1)+1]
	case 1: // not UTF-8
		value = []byte{'{', 0xff, 0xfe, '}'}
	case 2:
		value = envelope(meta, "OrderCancelled", created)
	case 3:
		delete(meta, "eventId")
		value = envelope(meta, string(TypeOrderCreated), created)
	case 4:
		delete(created, "orderId")
		value = envelope(meta, string(TypeOrderCreated), created)
	case 5: // a string where a number belongs
		meta["timestamp"] = fmt.Sprint(ts)
		value = envelope(meta, string(TypeOrderCreated), created)
	case 6:
		key, value = nil, envelope(meta, string(TypeOrderCreated), created)
	case 7:
		key, value = []byte("o-someone-else"), envelope(meta, string(TypeOrderCreated), created)
	case 8: // far in the future
		meta["timestamp"] = DefaultValidUntil.UnixMilli() + 1
		value = envelope(meta, string(TypeOrderCreated), created)
	}
	return key, value
}
