package orders_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/internal/metrics"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/prometheus/client_golang/prometheus"
)

// outcome is what a run committed: every projection record per order, in
// order, and the dead letters.
type outcome struct {
	updates     map[string][]orders.Projection
	deadLetters []orders.ExpectedDeadLetter
}

func newDriver(t *testing.T, opts orders.Options, cfg testdriver.Config) *testdriver.Driver {
	t.Helper()
	top, err := orders.Topology(opts)
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func pipe(t *testing.T, d *testdriver.Driver, r orders.InputRecord) {
	t.Helper()
	if err := d.PipeBytes(orders.DefaultInputTopic, r.Key, r.Value, r.Timestamp); err != nil {
		t.Fatal(err)
	}
}

// collect reads everything committed, checking that each dead letter
// carries the original bytes of the input record it names.
func collect(t *testing.T, d *testdriver.Driver, input []orders.InputRecord) outcome {
	t.Helper()
	o := outcome{updates: map[string][]orders.Projection{}}
	recs, err := testdriver.CreateOutputTopic(d, orders.DefaultOutputTopic, serde.String, serde.JSON[orders.Projection]()).ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		o.updates[r.Key] = append(o.updates[r.Key], r.Value)
	}
	dead, err := testdriver.CreateOutputTopic(d, orders.DefaultDeadLetterTopic, serde.Bytes, serde.Bytes).ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	byPosition := map[[2]int64]orders.InputRecord{}
	for _, r := range input {
		byPosition[[2]int64{int64(r.Partition), r.Offset}] = r
	}
	for _, r := range dead {
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		p, _ := strconv.ParseInt(h[exactly.HeaderSourcePartition], 10, 32)
		off, _ := strconv.ParseInt(h[exactly.HeaderSourceOffset], 10, 64)
		in, ok := byPosition[[2]int64{p, off}]
		// A record too large to be dead-lettered whole keeps its key and
		// loses its value, as the message says.
		valueDropped := r.Value == nil && strings.Contains(h[exactly.HeaderErrorMessage], "dropped from the dead letter")
		if !ok || string(in.Key) != string(r.Key) || (string(in.Value) != string(r.Value) && !valueDropped) || h[exactly.HeaderSourceTopic] != orders.DefaultInputTopic {
			t.Fatalf("dead letter %q %q with headers %v is not the input record it names", r.Key, r.Value, h)
		}
		o.deadLetters = append(o.deadLetters, orders.ExpectedDeadLetter{Partition: int32(p), Offset: off, Reason: h[exactly.HeaderErrorReason]})
	}
	slices.SortFunc(o.deadLetters, func(a, b orders.ExpectedDeadLetter) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	return o
}

func jsonOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// sameAsOracle checks a run's committed output against the oracle: every
// update of every order, and the dead letters, exactly.
func sameAsOracle(t *testing.T, got outcome, want orders.Expected, label string) {
	t.Helper()
	if len(got.updates) != len(want.Updates) {
		t.Fatalf("%s: %d orders have projections, the oracle expects %d", label, len(got.updates), len(want.Updates))
	}
	for order, ups := range want.Updates {
		if g, w := jsonOf(got.updates[order]), jsonOf(ups); g != w {
			t.Fatalf("%s: order %s\n got %s\nwant %s", label, order, g, w)
		}
	}
	if g, w := jsonOf(got.deadLetters), jsonOf(want.DeadLetters); g != w {
		t.Fatalf("%s: dead letters\n got %s\nwant %s", label, g, w)
	}
}

func runAll(t *testing.T, records []orders.InputRecord, opts orders.Options, partitions int32) outcome {
	t.Helper()
	d := newDriver(t, opts, testdriver.Config{Partitions: map[string]int32{orders.DefaultInputTopic: partitions}})
	for _, r := range records {
		pipe(t, d, r)
	}
	return collect(t, d, records)
}

// metric sums the series of the metric called name in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	v, err := metrics.Sum(reg, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestGeneratedStreamCommitsWhatTheOracleExpects runs a realistic stream
// over three partitions, with sequence numbers, and compares every
// projection update, every dead letter and every metric with the oracle.
func TestGeneratedStreamCommitsWhatTheOracleExpects(t *testing.T) {
	gen := orders.DefaultGenerateOptions(1, 200, 3)
	gen.Sequences = true
	gen.MalformedRate = 0.05
	records := orders.Generate(gen)
	reg := prometheus.NewRegistry()
	opts := orders.Options{Registerer: reg}
	want := orders.Oracle(records, opts)
	sameAsOracle(t, runAll(t, records, opts, 3), want, "generated stream")

	s := want.Stats
	if s.Duplicates == 0 || s.Conflicting == 0 || s.Buffered == 0 || s.Expired == 0 || len(want.Waiting) != 0 {
		t.Fatalf("the stream does not exercise every path: %+v, %d still waiting", s, len(want.Waiting))
	}
	for _, reason := range []string{orders.ReasonMalformed, orders.ReasonUnknownEventType, orders.ReasonMissingField, orders.ReasonInvalidTimestamp, orders.ReasonExpired} {
		if s.DeadLettered[reason] == 0 {
			t.Errorf("no dead letter with reason %s: %v", reason, s.DeadLettered)
		}
	}
	for name, pair := range map[string][2]float64{
		"duplicates_skipped_total":     {metric(t, reg, "duplicates_skipped_total"), float64(s.Duplicates)},
		"duplicates_conflicting_total": {metric(t, reg, "duplicates_conflicting_total"), float64(s.Conflicting)},
		"events_buffered_total":        {metric(t, reg, "events_buffered_total"), float64(s.Buffered)},
		"events_expired_total":         {metric(t, reg, "events_expired_total"), float64(s.Expired)},
		"buffer_size":                  {metric(t, reg, "buffer_size"), float64(len(want.Waiting))},
	} {
		if pair[0] != pair[1] {
			t.Errorf("%s = %v, the oracle counts %v", name, pair[0], pair[1])
		}
	}
}

// TestProjectionsDependOnTheSetOfEventsAlone delivers the same events, with
// duplicates, in many random orders: every run commits the same final
// projections, equal to Project over the distinct events and to the oracle.
func TestProjectionsDependOnTheSetOfEventsAlone(t *testing.T) {
	for seed := range uint64(12) {
		gen := orders.DefaultGenerateOptions(seed, 6, 1)
		gen.Span, gen.MaxUpdates = time.Hour, 5
		gen.OrphanRate, gen.MalformedRate, gen.ReorderRate, gen.CloseAfter = 0, 0, 0, 0
		gen.DuplicateRate = 0.3
		gen.Sequences = seed%2 == 1
		base := orders.Generate(gen)
		events := map[string][]orders.Event{}
		for _, r := range base {
			e, err := orders.Decode(r.Key, r.Value)
			if err != nil {
				t.Fatal(err)
			}
			events[e.OrderID()] = append(events[e.OrderID()], e)
		}
		want := map[string]orders.Projection{}
		for order, es := range events {
			want[order] = orders.Project(es)
		}
		rng := rand.New(rand.NewPCG(seed, 99))
		for perm := range 4 {
			records := slices.Clone(base)
			rng.Shuffle(len(records), func(i, j int) { records[i], records[j] = records[j], records[i] })
			for i := range records {
				records[i].Offset = int64(i)
			}
			label := fmt.Sprintf("seed %d permutation %d", seed, perm)
			got := runAll(t, records, orders.Options{}, 1)
			sameAsOracle(t, got, orders.Oracle(records, orders.Options{}), label)
			for order, p := range want {
				ups := got.updates[order]
				if len(ups) == 0 || jsonOf(ups[len(ups)-1]) != jsonOf(p) {
					t.Fatalf("%s: order %s ends as %s, want %s", label, order, jsonOf(ups), jsonOf(p))
				}
			}
		}
	}
}

// TestCrashesAtRandomPointsCommitWhatAnUninterruptedRunCommits crashes the
// application at random points (before a commit, in the middle of one) and
// restarts it: the committed output is the uninterrupted run's, which is
// the oracle's.
func TestCrashesAtRandomPointsCommitWhatAnUninterruptedRunCommits(t *testing.T) {
	// Pebble syncs every commit to disk and opens at every restart, so the
	// case on Pebble is kept small; the persistent stores' checkpoint and
	// restore logic runs at full size in the driver's memory.
	for _, c := range []struct {
		name                 string
		persistent, inMemory bool
		orders, runs         int
	}{
		{"in-memory stores", false, false, 60, 3},
		{"persistent stores on Pebble", true, false, 15, 1},
		{"persistent stores in memory", true, true, 60, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			gen := orders.DefaultGenerateOptions(7, c.orders, 2)
			gen.Sequences = true
			gen.OrphanRate, gen.MalformedRate = 0.1, 0.05
			records := orders.Generate(gen)
			opts := orders.Options{Persistent: c.persistent}
			want := orders.Oracle(records, opts)
			clean := runAll(t, records, opts, 2)
			sameAsOracle(t, clean, want, "uninterrupted")

			for run := range c.runs {
				d := newDriver(t, opts, testdriver.Config{PersistentInMemory: c.inMemory, Partitions: map[string]int32{orders.DefaultInputTopic: 2}})
				crashes, err := d.RunWithCrashes(testdriver.CrashSchedule{Seed: uint64(run)}, len(records), func(i int) error {
					r := records[i]
					return d.PipeBytes(orders.DefaultInputTopic, r.Key, r.Value, r.Timestamp)
				})
				if err != nil {
					t.Fatal(err)
				}
				if crashes.Crashes+crashes.MidCommitCrashes == 0 {
					t.Fatalf("run %d: no crash happened (%v)", run, crashes)
				}
				sameAsOracle(t, collect(t, d, records), want, fmt.Sprintf("run %d (%v)", run, crashes))
			}
		})
	}
}

func TestBadRecordsGoToTheDeadLetterTopicWithTheirReason(t *testing.T) {
	ts := int64(1732260000000)
	good := func(id string) []byte {
		return fmt.Appendf(nil, `{"metadata":{"eventId":%q,"timestamp":%d},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c-1","createdAt":%d}}`, id, ts, ts)
	}
	cases := []struct {
		name, reason string
		key, value   []byte
	}{
		{"broken JSON", orders.ReasonMalformed, []byte("o-1"), []byte(`{"metadata":`)},
		{"not an object", orders.ReasonMalformed, []byte("o-1"), []byte(`null`)},
		{"invalid UTF-8", orders.ReasonMalformed, []byte("o-1"), []byte("{\"type\":\"\xff\"}")},
		{"wrong field type", orders.ReasonMalformed, []byte("o-1"), []byte(`{"metadata":{"eventId":"e","timestamp":"soon"},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c","createdAt":1}}`)},
		{"key is not the orderId", orders.ReasonMalformed, []byte("o-2"), good("e-k")},
		{"unknown type", orders.ReasonUnknownEventType, []byte("o-1"), []byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderCancelled","payload":{"orderId":"o-1"}}`)},
		{"missing eventId", orders.ReasonMissingField, []byte("o-1"), []byte(`{"metadata":{"timestamp":1732260000000},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c","createdAt":1}}`)},
		{"missing orderId", orders.ReasonMissingField, []byte("o-1"), []byte(`{"metadata":{"eventId":"e","timestamp":1732260000000},"type":"OrderShipped","payload":{"trackingNumber":"t","shippedAt":1}}`)},
		{"null key", orders.ReasonMissingField, nil, good("e-n")},
		{"far future", orders.ReasonInvalidTimestamp, []byte("o-1"), []byte(`{"metadata":{"eventId":"e","timestamp":99999999999999},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c","createdAt":1}}`)},
		{"oversized", orders.ReasonMalformed, []byte("o-1"), append(append([]byte(`{"pad":"`), make([]byte, 2<<20)...), `"}`...)},
	}
	d := newDriver(t, orders.Options{}, testdriver.Config{})
	var input []orders.InputRecord
	for i, c := range cases {
		r := orders.InputRecord{Offset: int64(i), Key: c.key, Value: c.value, Timestamp: time.UnixMilli(ts)}
		input = append(input, r)
		pipe(t, d, r)
	}
	last := orders.InputRecord{Offset: int64(len(cases)), Key: []byte("o-1"), Value: good("e-ok"), Timestamp: time.UnixMilli(ts)}
	input = append(input, last)
	pipe(t, d, last)
	got := collect(t, d, input)
	if len(got.deadLetters) != len(cases) {
		t.Fatalf("%d dead letters, want %d: %+v", len(got.deadLetters), len(cases), got.deadLetters)
	}
	for i, c := range cases {
		if dl := got.deadLetters[i]; dl.Offset != int64(i) || dl.Reason != c.reason {
			t.Errorf("%s: dead letter %+v, want reason %s at offset %d", c.name, dl, c.reason, i)
		}
	}
	if ups := got.updates["o-1"]; len(ups) != 1 || ups[0].LastEventID != "e-ok" {
		t.Fatalf("processing did not go on after the bad records: %+v", got.updates)
	}
	sameAsOracle(t, got, orders.Oracle(input, orders.Options{}), "bad records")
}

// TestApplyAgreesWithProject folds random event sets in random orders with
// Aggregate.Apply and compares with Project, the all-at-once definition.
func TestApplyAgreesWithProject(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for range 200 {
		var events []orders.Event
		for k := range 1 + rng.IntN(8) {
			ts := int64(1000 + rng.IntN(5)) // frequent timestamp ties
			m := orders.Metadata{EventID: fmt.Sprintf("e-%d", k), Timestamp: ts}
			switch rng.IntN(3) {
			case 0:
				events = append(events, orders.Event{Metadata: m, Type: orders.TypeOrderCreated, Created: &orders.OrderCreated{OrderID: "o", CustomerID: fmt.Sprint("c", k), CreatedAt: ts}})
			case 1:
				events = append(events, orders.Event{Metadata: m, Type: orders.TypeOrderUpdated, Updated: &orders.OrderUpdated{OrderID: "o", Items: []orders.LineItem{{SKU: fmt.Sprint("s", k), Quantity: 1}}, UpdatedAt: ts}})
			default:
				events = append(events, orders.Event{Metadata: m, Type: orders.TypeOrderShipped, Shipped: &orders.OrderShipped{OrderID: "o", TrackingNumber: fmt.Sprint("t", k), ShippedAt: ts}})
			}
		}
		want := jsonOf(orders.Project(events))
		rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
		var a orders.Aggregate
		for _, e := range events {
			a.Apply(e)
		}
		if got := jsonOf(a.Projection); got != want {
			t.Fatalf("Apply gives %s, Project %s", got, want)
		}
	}
}

func TestGenerateIsDeterministicAndRealistic(t *testing.T) {
	opts := orders.DefaultGenerateOptions(42, 600, 4)
	a, b := orders.Generate(opts), orders.Generate(opts)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two streams from one seed differ")
	}
	s := orders.Oracle(a, orders.Options{}).Stats
	rate := func(n int) float64 { return float64(n) / float64(s.Records) }
	if rate(s.Duplicates) < 0.08 || rate(s.Late) < 0.1 || rate(s.Buffered) < 0.01 || rate(s.Expired) < 0.01 || rate(s.Records-s.Applied-s.Duplicates-s.Expired) < 0.005 {
		t.Fatalf("stream of %d records: %+v", s.Records, s)
	}
}

// BenchmarkTopology pipes a generated stream through the orders topology in
// the test driver, committing after every record.
func BenchmarkTopology(b *testing.B) {
	records := orders.Generate(orders.DefaultGenerateOptions(1, 1000, 1))
	top, err := orders.Topology(orders.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		d, err := testdriver.New(top, testdriver.Config{})
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range records {
			if err := d.PipeBytes(orders.DefaultInputTopic, r.Key, r.Value, r.Timestamp); err != nil {
				b.Fatal(err)
			}
		}
		d.Close()
	}
	b.ReportMetric(float64(len(records)*b.N)/b.Elapsed().Seconds(), "records/s")
}

// TestChangelogRecordsAreCoalescedPerKeyPerCommit pipes a known order's
// events in one commit: each store logs only the last value of each key
// it wrote in the transaction, so the changelogs carry 10 records for 6
// inputs where a commit after every record carries 16.
func TestChangelogRecordsAreCoalescedPerKeyPerCommit(t *testing.T) {
	const order = "o-1"
	event := func(n int, typ orders.EventType, ts int64) orders.InputRecord {
		e := orders.Event{Metadata: orders.Metadata{EventID: fmt.Sprintf("e-%d", n), Timestamp: 1732260000000 + ts}, Type: typ}
		switch typ {
		case orders.TypeOrderCreated:
			e.Created = &orders.OrderCreated{OrderID: order, CustomerID: "c-1", CreatedAt: e.Metadata.Timestamp}
		case orders.TypeOrderUpdated:
			e.Updated = &orders.OrderUpdated{OrderID: order, Items: []orders.LineItem{{SKU: "s", Quantity: int64(n), PriceCents: 100}}, UpdatedAt: e.Metadata.Timestamp}
		case orders.TypeOrderShipped:
			e.Shipped = &orders.OrderShipped{OrderID: order, TrackingNumber: "t", ShippedAt: e.Metadata.Timestamp}
		}
		v, err := e.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		return orders.InputRecord{Key: []byte(order), Value: v, Timestamp: time.UnixMilli(e.Metadata.Timestamp)}
	}
	input := []orders.InputRecord{
		event(2, orders.TypeOrderUpdated, 2000), // waits for its OrderCreated
		event(1, orders.TypeOrderCreated, 1000),
		event(3, orders.TypeOrderUpdated, 3000),
		event(3, orders.TypeOrderUpdated, 3000), // a duplicate
		event(4, orders.TypeOrderUpdated, 4000),
		event(5, orders.TypeOrderShipped, 5000),
	}
	// Per store: one dedup id per distinct event; the order's key state and
	// aggregate once; for the buffered event, tombstones of its entry and
	// its expiry index entry, and the buffer's size.
	coalesced := map[string]int{orders.DedupStore: 5, orders.KeyStateStore: 1, orders.BufferStore: 3, orders.ProjectionStore: 1}
	perRecord := map[string]int{orders.DedupStore: 5, orders.KeyStateStore: 1, orders.BufferStore: 6, orders.ProjectionStore: 4}
	for _, manual := range []bool{true, false} {
		d := newDriver(t, orders.Options{}, testdriver.Config{ManualCommit: manual})
		for _, r := range input {
			pipe(t, d, r)
		}
		if err := d.Commit(); err != nil {
			t.Fatal(err)
		}
		want := map[bool]map[string]int{true: coalesced, false: perRecord}[manual]
		total, wantTotal := 0, 0
		for store, n := range want {
			recs, err := testdriver.CreateOutputTopic(d, "test-"+store+"-changelog", serde.Bytes, serde.Bytes).ReadRecords()
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != n {
				t.Errorf("commit after every record: %v: %s logged %d records, want %d", !manual, store, len(recs), n)
			}
			total, wantTotal = total+len(recs), wantTotal+n
		}
		if !manual {
			continue
		}
		if perInput := float64(total) / float64(len(input)); total != wantTotal || perInput > 1.7 {
			t.Errorf("%d changelog records for %d inputs (%.2f per input), want %d", total, len(input), perInput, wantTotal)
		}
	}
}
