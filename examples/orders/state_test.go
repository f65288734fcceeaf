package orders_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/prometheus/client_golang/prometheus"
)

// The steady stream of the bounded-state test: orders created at a
// constant rate of stream time, short-lived, with TTLs of half an hour, so
// that a few hours of stream time reach the steady state in which the
// TTL'ed stores hold about a TTL's worth. A third of the orders never get
// their OrderCreated and half the events arrive late, so that the reorder
// buffer holds enough waiting events to compare.
const (
	steadyOrdersPerHour = 60
	steadyTTL           = 30 * time.Minute
	// steadyWarmUp is when the steady state begins: an order's lifetime
	// (two steps of at most 10 min), plus the latest a duplicate arrives
	// (30 min), plus a TTL, rounded up.
	steadyWarmUp = 90 * time.Minute
	// steadySample is how often, in stream time, the stores are counted.
	steadySample = 10 * time.Minute
)

// steadyState is what the bounded-state tests compare, as means over the
// steady part of a stream: entries of each store, and the decoded values
// (and their bytes) each store's cache of committed values keeps.
type steadyState struct {
	entries, cachedValues, cachedBytes map[string]float64
}

// steadyStates memoizes steadyStateOf per number of orders, so that the
// tests of entries and of cached values share their runs.
var steadyStates = map[int]steadyState{}

// steadyStateOf runs the topology over a steady stream of n orders and
// returns the mean number of entries of each store but the projection (one
// per order by design) and the mean cached values of every store, over
// the steady part of the stream: from the warm-up until the last order is
// created. A mean over the steady state, rather than a count at the end,
// keeps the comparison free of the stream's ramp-down and of one window's
// chance.
func steadyStateOf(t *testing.T, n int) steadyState {
	t.Helper()
	if s, ok := steadyStates[n]; ok {
		return s
	}
	gen := orders.DefaultGenerateOptions(1, n, 2)
	gen.EvenSpacing = true
	gen.Span = time.Duration(n) * time.Hour / steadyOrdersPerHour
	gen.MaxUpdates = 1
	gen.Sequences = true
	gen.ReorderRate, gen.OrphanRate = 0.5, 0.3
	gen.CloseAfter = 0
	records := orders.Generate(gen)
	d := newDriver(t, orders.Options{DedupTTL: steadyTTL, BufferTTL: steadyTTL}, testdriver.Config{
		ManualCommit: true, Partitions: map[string]int32{orders.DefaultInputTopic: 2},
	})
	s := steadyState{entries: map[string]float64{}, cachedValues: map[string]float64{}, cachedBytes: map[string]float64{}}
	samples := 0
	next, end := gen.Start.Add(steadyWarmUp), gen.Start.Add(gen.Span)
	for i, r := range records {
		pipe(t, d, r)
		if i%100 == 99 {
			if err := d.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		if r.Timestamp.Before(next) || next.After(end) {
			continue
		}
		for _, name := range d.StoreNames() {
			values, bytes, err := d.StoreCachedValues(name)
			if err != nil {
				t.Fatal(err)
			}
			s.cachedValues[name] += float64(values)
			s.cachedBytes[name] += float64(bytes)
			if name == orders.ProjectionStore {
				continue
			}
			n, err := d.StoreEntries(name)
			if err != nil {
				t.Fatal(err)
			}
			s.entries[name] += float64(n)
		}
		samples++
		next = next.Add(steadySample)
	}
	if samples < 30 {
		t.Fatalf("%d orders: %d samples of the steady state, want at least 30", n, samples)
	}
	for _, m := range []map[string]float64{s.entries, s.cachedValues, s.cachedBytes} {
		for name := range m {
			m[name] /= float64(samples)
		}
	}
	t.Logf("%d orders, %d records: means over %d samples: entries %v, cached values %v, cached bytes %v",
		n, len(records), samples, s.entries, s.cachedValues, s.cachedBytes)
	steadyStates[n] = s
	return s
}

// steadyBase is the number of orders of the 1x stream of the bounded-state
// tests.
const steadyBase = 500

// TestTTLedStoresStayFlatAsEventsGrowTenfold is R-PF4 in the test driver:
// over a steady stream of orders, 10x the events (10x the stream time)
// leaves every store but the projection within 1.1x the entries of 1x.
func TestTTLedStoresStayFlatAsEventsGrowTenfold(t *testing.T) {
	one, ten := steadyStateOf(t, steadyBase), steadyStateOf(t, 10*steadyBase)
	for name, n1 := range one.entries {
		if ratio := ten.entries[name] / n1; ratio > 1.1 {
			t.Errorf("store %s: %.1f entries at 10x the events, %.1f at 1x: %.2fx, want at most 1.1x", name, ten.entries[name], n1, ratio)
		}
	}
}

// TestCachedValuesStayFlatAsEventsGrowTenfold is R-PF4 for the memory the
// stores keep beside their backends: over the same streams, the decoded
// values every store's cache keeps (the projection's included: the cache
// holds the orders in use, not every order seen) stay within 1.1x, in
// number and in bytes, between 1x and 10x the events.
func TestCachedValuesStayFlatAsEventsGrowTenfold(t *testing.T) {
	one, ten := steadyStateOf(t, steadyBase), steadyStateOf(t, 10*steadyBase)
	cached := 0
	for name, v1 := range one.cachedValues {
		if v1 == 0 {
			continue
		}
		cached++
		if ratio := ten.cachedValues[name] / v1; ratio > 1.1 {
			t.Errorf("store %s: %.1f cached values at 10x the events, %.1f at 1x: %.2fx, want at most 1.1x", name, ten.cachedValues[name], v1, ratio)
		}
		if ratio := ten.cachedBytes[name] / one.cachedBytes[name]; ratio > 1.1 {
			t.Errorf("store %s: %.0f cached bytes at 10x the events, %.0f at 1x: %.2fx, want at most 1.1x", name, ten.cachedBytes[name], one.cachedBytes[name], ratio)
		}
	}
	if cached == 0 {
		t.Fatal("no store caches decoded values: the test compares nothing")
	}
}

// TestEventsOfOrdersTheBufferForgotAreAppliedAsBefore lets the reorder
// buffer forget two orders (their key state outlives the buffer TTL by
// nothing) and then sends more of their events: an event of an existing
// order is applied at once, not buffered nor dead-lettered, and a gap in
// sequence numbers is still held until filled, the next number being read
// back from the order's aggregate. The output is the oracle's, which never
// forgets.
func TestEventsOfOrdersTheBufferForgotAreAppliedAsBefore(t *testing.T) {
	t0 := time.UnixMilli(1732260000000)
	var input []orders.InputRecord
	event := func(order string, n uint64, typ orders.EventType, at time.Duration, seq bool) orders.InputRecord {
		ts := t0.Add(at).UnixMilli()
		e := orders.Event{Metadata: orders.Metadata{EventID: fmt.Sprintf("e-%s-%d", order, n), Timestamp: ts}, Type: typ}
		if seq {
			e.Metadata.Sequence = n
		}
		switch typ {
		case orders.TypeOrderCreated:
			e.Created = &orders.OrderCreated{OrderID: order, CustomerID: "c-1", CreatedAt: ts}
		case orders.TypeOrderUpdated:
			e.Updated = &orders.OrderUpdated{OrderID: order, Items: []orders.LineItem{{SKU: fmt.Sprint("s-", n), Quantity: 1}}, UpdatedAt: ts}
		default:
			e.Shipped = &orders.OrderShipped{OrderID: order, TrackingNumber: "trk-1", ShippedAt: ts}
		}
		value, err := e.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		r := orders.InputRecord{Offset: int64(len(input)), Key: []byte(order), Value: value, Timestamp: time.UnixMilli(ts)}
		input = append(input, r)
		return r
	}
	reg := prometheus.NewRegistry()
	opts := orders.Options{BufferTTL: time.Hour, Registerer: reg}
	d := newDriver(t, opts, testdriver.Config{})
	keyStates := func() int64 {
		t.Helper()
		n, err := d.StoreEntries(orders.KeyStateStore)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	pipe(t, d, event("o-seq", 1, orders.TypeOrderCreated, 0, true))
	pipe(t, d, event("o-seq", 2, orders.TypeOrderUpdated, time.Minute, true))
	pipe(t, d, event("o-plain", 1, orders.TypeOrderCreated, 2*time.Minute, false))
	if n := keyStates(); n != 2 {
		t.Fatalf("%d orders remembered, want 2", n)
	}
	pipe(t, d, event("o-new", 1, orders.TypeOrderCreated, 3*time.Hour, false)) // the other two are forgotten
	if n := keyStates(); n != 1 {
		t.Fatalf("%d orders remembered three hours on, want 1", n)
	}
	pipe(t, d, event("o-plain", 2, orders.TypeOrderShipped, 3*time.Hour+time.Minute, false))
	pipe(t, d, event("o-seq", 4, orders.TypeOrderShipped, 3*time.Hour+2*time.Minute, true)) // 3 is missing
	if got := metric(t, reg, "buffer_size"); got != 1 {
		t.Fatalf("buffer_size %v, want 1: only o-seq's event 4 waits", got)
	}
	pipe(t, d, event("o-seq", 3, orders.TypeOrderUpdated, 3*time.Hour+90*time.Second, true)) // earlier than 4, so LastEventID tells the order applied
	got := collect(t, d, input)
	sameAsOracle(t, got, orders.Oracle(input, opts), "forgotten orders")
	var applied []string
	for _, p := range got.updates["o-seq"] {
		applied = append(applied, p.LastEventID)
	}
	if want := "[e-o-seq-1 e-o-seq-2 e-o-seq-3 e-o-seq-4]"; fmt.Sprint(applied) != want {
		t.Fatalf("o-seq's events applied as %v, want %s", applied, want)
	}
	if ups := got.updates["o-plain"]; len(ups) != 2 || ups[1].Status != orders.StatusShipped || len(got.deadLetters) != 0 {
		t.Fatalf("o-plain's updates %+v, dead letters %+v: want its shipment applied, nothing dead-lettered", ups, got.deadLetters)
	}
}
