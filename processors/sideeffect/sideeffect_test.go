package sideeffect_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/payments/gateway"
	"github.com/exactly-go/exactly/internal/metrics"
	"github.com/exactly-go/exactly/processors/sideeffect"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/prometheus/client_golang/prometheus"
)

var t0 = time.UnixMilli(1732260000000)

type order struct {
	EventID     string `json:"eventId"`
	OrderID     string `json:"orderId"`
	AmountCents int64  `json:"amountCents"`
	Currency    string `json:"currency"`
}

type paid struct {
	OrderID       string `json:"orderId"`
	TransactionID string `json:"transactionId"`
}

// charge calls the gateway; a 4xx answer is permanent, with the gateway's
// reason.
func charge(gw *gateway.Client) sideeffect.Call[string, order, paid] {
	return func(ctx context.Context, idemKey, _ string, o order) (paid, error) {
		resp, err := gw.Charge(ctx, idemKey, gateway.ChargeRequest{OrderID: o.OrderID, AmountCents: o.AmountCents, Currency: o.Currency})
		var se *gateway.StatusError
		if errors.As(err, &se) && se.Permanent() {
			reason := "gateway-rejected"
			if se.Code == http.StatusPaymentRequired {
				reason = "payment-declined"
			}
			return paid{}, sideeffect.Permanent(reason, err)
		}
		if err != nil {
			return paid{}, err
		}
		return paid{OrderID: o.OrderID, TransactionID: resp.TransactionID}, nil
	}
}

type harness struct {
	t       testing.TB
	gw      *gateway.Server
	d       *testdriver.Driver
	in      *testdriver.InputTopic[string, order]
	out     *testdriver.OutputTopic[string, paid]
	dlq     *testdriver.OutputTopic[[]byte, []byte]
	metrics *prometheus.Registry
}

// start runs in -> charge -> out (dead letters of both to in-dlq) in the
// test driver against a real gateway simulator on loopback.
func start(t testing.TB, gwOpts gateway.Options, opts sideeffect.Options[string, order, paid], cfg testdriver.Config) *harness {
	t.Helper()
	gw, err := gateway.Start("127.0.0.1:0", gwOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	h := &harness{t: t, gw: gw, metrics: prometheus.NewRegistry()}
	opts.IdempotencyKey = func(_ string, o order) string { return sideeffect.KeyFrom("payments", o.OrderID) }
	opts.Call = charge(&gateway.Client{BaseURL: gw.URL})
	opts.Keys, opts.Values = serde.String, serde.JSON[order]()
	opts.Registerer = h.metrics
	if opts.Retry.Initial == 0 {
		opts.Retry.Initial = time.Millisecond
	}
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, order]{Topics: []string{"orders"}, Keys: serde.String, Values: serde.JSON[order]()})
	sideeffect.Add(b, "charge", opts, "in")
	exactly.AddSink(b, "out", exactly.Sink[string, paid]{Topic: "paid", Keys: serde.String, Values: serde.JSON[paid]()}, "charge")
	exactly.AddDeadLetterSink(b, "dlq", "orders-dlq", "in", "charge")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	h.d, err = testdriver.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.d.Close() })
	h.in = testdriver.CreateInputTopic(h.d, "orders", serde.String, serde.JSON[order]())
	h.out = testdriver.CreateOutputTopic(h.d, "paid", serde.String, serde.JSON[paid]())
	h.dlq = testdriver.CreateOutputTopic(h.d, "orders-dlq", serde.Bytes, serde.Bytes)
	return h
}

func (h *harness) pipe(o order) {
	h.t.Helper()
	if err := h.in.PipeInput(o.OrderID, o, t0); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) paid() []exactly.Record[string, paid] {
	h.t.Helper()
	recs, err := h.out.ReadRecords()
	if err != nil {
		h.t.Fatal(err)
	}
	return recs
}

func (h *harness) stats() gateway.Stats { return h.gw.Stats() }

func o(n int) order {
	return order{EventID: fmt.Sprintf("e-%d", n), OrderID: fmt.Sprintf("o-%d", n), AmountCents: int64(100 * n), Currency: "EUR"}
}

func TestDuplicateEventsCallTheGatewayOnce(t *testing.T) {
	h := start(t, gateway.Options{}, sideeffect.Options[string, order, paid]{}, testdriver.Config{})
	first := o(1)
	resend := first
	resend.EventID = "e-1-resent" // same order, new event id: the same business command
	for _, e := range []order{first, first, resend, first} {
		h.pipe(e)
	}
	if s := h.stats(); s.Requests != 1 || s.Charges != 1 {
		t.Fatalf("gateway saw %d requests and made %d charges, want 1 and 1", s.Requests, s.Charges)
	}
	if got := h.paid(); len(got) != 1 || got[0].Value.TransactionID != h.gw.Charges()[0].TransactionID {
		t.Fatalf("output %+v, want one record with the charge's transaction", got)
	}
	if n := h.metric("sideeffect_skipped_total"); n != 3 {
		t.Errorf("skipped %v, want 3", n)
	}
}

func TestTransientErrorsThenSuccessRecordKeyOnce(t *testing.T) {
	h := start(t, gateway.Options{TransientFirst: 2}, sideeffect.Options[string, order, paid]{}, testdriver.Config{})
	h.pipe(o(1))
	h.pipe(o(1))
	if s := h.stats(); s.Requests != 3 || s.Transient != 2 || s.Charges != 1 {
		t.Fatalf("gateway stats %+v, want 3 requests, 2 transient, 1 charge", s)
	}
	keys, err := testdriver.KeyValueStore[string, string](h.d, "charge-keys", 0)
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, keys); n != 1 {
		t.Fatalf("key store holds %d keys, want 1", n)
	}
	if v, ok, _ := keys.Get(sideeffect.KeyFrom("payments", "o-1")); !ok || v != "done" {
		t.Fatalf("key of o-1 recorded as %q (%v), want done", v, ok)
	}
	if got := h.paid(); len(got) != 1 {
		t.Fatalf("%d outputs, want 1", len(got))
	}
	if n := h.metric("sideeffect_calls_total", "outcome", "transient"); n != 2 {
		t.Errorf("transient calls %v, want 2", n)
	}
	if n := h.metric("sideeffect_retries_total"); n != 2 {
		t.Errorf("retries %v, want 2", n)
	}
}

func TestPermanentErrorGoesToDeadLetterWithReasonAndOriginalBytes(t *testing.T) {
	h := start(t, gateway.Options{DeclineRate: 1}, sideeffect.Options[string, order, paid]{}, testdriver.Config{})
	value := []byte(`{"eventId":"e-7","orderId":"o-7","amountCents":700,"currency":"EUR"}`)
	if err := h.d.PipeBytes("orders", []byte("o-7"), value, t0); err != nil {
		t.Fatal(err)
	}
	h.pipe(o(7)) // a copy: its key is recorded, so no second call
	dls, err := h.dlq.ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	dl := dls[0]
	if string(dl.Key) != "o-7" || string(dl.Value) != string(value) {
		t.Errorf("dead letter %q=%q, want the original bytes", dl.Key, dl.Value)
	}
	if r := header(dl.Headers, exactly.HeaderErrorReason); r != "payment-declined" {
		t.Errorf("reason %q, want payment-declined", r)
	}
	if m := header(dl.Headers, exactly.HeaderErrorMessage); !strings.Contains(m, "402") {
		t.Errorf("message %q does not name the gateway's answer", m)
	}
	if s := h.stats(); s.Requests != 1 || s.Charges != 0 {
		t.Errorf("gateway stats %+v, want 1 request, no charge", s)
	}
	if got := h.paid(); len(got) != 0 {
		t.Errorf("declined order forwarded: %+v", got)
	}
}

func TestRetriesExhaustedDeadLetterWithoutRecordingKey(t *testing.T) {
	h := start(t, gateway.Options{TransientRate: 1}, sideeffect.Options[string, order, paid]{
		Retry: sideeffect.Retry{Initial: time.Millisecond, Max: 2 * time.Millisecond, For: 30 * time.Millisecond},
	}, testdriver.Config{})
	h.pipe(o(1))
	dls, err := h.dlq.ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || header(dls[0].Headers, exactly.HeaderErrorReason) != sideeffect.ReasonRetriesExhausted {
		t.Fatalf("dead letters %+v, want one with reason %s", dls, sideeffect.ReasonRetriesExhausted)
	}
	keys, _ := testdriver.KeyValueStore[string, string](h.d, "charge-keys", 0)
	if n := count(t, keys); n != 0 {
		t.Fatalf("%d keys recorded for a call that never succeeded, want 0", n)
	}
}

func TestGiveUpFailStopsTheTaskBeforeCommittingPastTheEvent(t *testing.T) {
	h := start(t, gateway.Options{TransientRate: 1}, sideeffect.Options[string, order, paid]{
		Retry:  sideeffect.Retry{Initial: time.Millisecond, Max: 2 * time.Millisecond, For: 20 * time.Millisecond},
		GiveUp: sideeffect.GiveUpFail,
	}, testdriver.Config{})
	err := h.in.PipeInput("o-1", o(1), t0)
	if !errors.Is(err, sideeffect.ErrRetriesExhausted) {
		t.Fatalf("PipeInput: %v, want ErrRetriesExhausted", err)
	}
	if h.dlq.QueueSize() != 0 || h.out.QueueSize() != 0 {
		t.Fatal("a failed event produced output")
	}
}

// TestCrashBetweenCallAndCommitRepeatsTheCallWithTheSameKey is the failure
// Kafka's transactions cannot cover: the gateway charged, the transaction
// did not commit. The redelivered event calls again with the same key and
// the gateway answers with the first charge.
func TestCrashBetweenCallAndCommitRepeatsTheCallWithTheSameKey(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprintf("gateway-ignores-keys=%v", ignore), func(t *testing.T) {
			h := start(t, gateway.Options{IgnoreKeys: ignore}, sideeffect.Options[string, order, paid]{}, testdriver.Config{ManualCommit: true})
			h.pipe(o(1))
			h.d.Crash()
			if err := h.d.Restart(); err != nil {
				t.Fatal(err)
			}
			if err := h.d.Commit(); err != nil {
				t.Fatal(err)
			}
			s := h.stats()
			if s.Requests != 2 {
				t.Fatalf("%d requests, want 2 (one before the crash, one after)", s.Requests)
			}
			wantCharges := 1
			if ignore {
				wantCharges = 2
			}
			if s.Charges != wantCharges {
				t.Fatalf("%d charges, want %d", s.Charges, wantCharges)
			}
			if got := h.paid(); len(got) != 1 {
				t.Fatalf("%d committed outputs, want 1", len(got))
			}
		})
	}
}

func TestConcurrentBatchKeepsInputOrderAndSkipsDuplicates(t *testing.T) {
	h := start(t, gateway.Options{Latency: 5 * time.Millisecond, DeclineRate: 0.2}, sideeffect.Options[string, order, paid]{Concurrency: 4, MaxBatch: 100}, testdriver.Config{})
	var want []string
	declined := 0
	for i := range 20 {
		h.pipe(o(i))
		if i%5 == 0 {
			h.pipe(o(i)) // duplicate inside the batch
		}
		if gateway.Declined(o(i).OrderID, 0.2) {
			declined++
		} else {
			want = append(want, o(i).OrderID)
		}
	}
	if h.out.QueueSize() != 0 || h.stats().Requests != 0 {
		t.Fatal("events were called before the flush")
	}
	if err := h.d.AdvanceWallClock(sideeffect.DefaultFlushInterval); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range h.paid() {
		got = append(got, r.Key)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outputs %v, want %v (input order, declined orders out)", got, want)
	}
	if s := h.stats(); s.Requests != 20 || s.Charges != len(want) || s.Declined != declined {
		t.Fatalf("gateway stats %+v, want 20 requests, %d charges, %d declined", s, len(want), declined)
	}
	if h.dlq.QueueSize() != declined {
		t.Fatalf("%d dead letters, want %d", h.dlq.QueueSize(), declined)
	}
	pending, _ := testdriver.KeyValueStore[[]byte, []byte](h.d, "charge-pending", 0)
	it, _ := pending.Prefix([]byte{1})
	defer it.Close()
	if it.Next() {
		t.Fatal("pending events remain after the flush")
	}
}

func TestConcurrentBatchSurvivesACrashMidFlush(t *testing.T) {
	h := start(t, gateway.Options{}, sideeffect.Options[string, order, paid]{Concurrency: 3}, testdriver.Config{ManualCommit: true})
	for i := range 5 {
		h.pipe(o(i))
	}
	if err := h.d.Commit(); err != nil { // the pending events are committed
		t.Fatal(err)
	}
	if err := h.d.AdvanceWallClock(time.Second); err != nil { // called, not committed
		t.Fatal(err)
	}
	h.d.Crash()
	if err := h.d.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := h.d.AdvanceWallClock(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := h.d.Commit(); err != nil {
		t.Fatal(err)
	}
	if s := h.stats(); s.Requests != 10 || s.Replays != 5 || s.Charges != 5 {
		t.Fatalf("gateway stats %+v, want 10 requests, 5 replays, 5 charges", s)
	}
	if got := h.paid(); len(got) != 5 {
		t.Fatalf("%d outputs, want 5", len(got))
	}
}

// TestFlushStartsNoCallAfterTheRetryBudget: events of one record key run
// one after the other; those the flush could not start within Retry.For
// stay pending, in order, for the next flush.
func TestFlushStartsNoCallAfterTheRetryBudget(t *testing.T) {
	h := start(t, gateway.Options{Latency: 60 * time.Millisecond}, sideeffect.Options[string, order, paid]{
		Concurrency: 4, Retry: sideeffect.Retry{Initial: time.Millisecond, For: 100 * time.Millisecond},
	}, testdriver.Config{})
	for i := range 3 {
		if err := h.in.PipeInput("same-key", o(i), t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.d.AdvanceWallClock(time.Second); err != nil {
		t.Fatal(err)
	}
	first := h.paid()
	if len(first) != 2 {
		t.Fatalf("first flush forwarded %d events, want 2 (the third starts after the budget)", len(first))
	}
	if err := h.d.AdvanceWallClock(time.Second); err != nil {
		t.Fatal(err)
	}
	second := h.paid()
	if len(second) != 1 || second[0].Value.OrderID != "o-2" {
		t.Fatalf("second flush forwarded %+v, want o-2", second)
	}
	if s := h.stats(); s.Requests != 3 || s.Charges != 3 {
		t.Fatalf("gateway stats %+v, want 3 requests, 3 charges", s)
	}
}

// chargeAll pipes n orders, lets the wall clock run so the last pending
// events are called, and fails unless every order was paid.
func (h *harness) chargeAll(n int) {
	h.t.Helper()
	for i := range n {
		h.pipe(o(i))
	}
	if err := h.d.AdvanceWallClock(time.Second); err != nil {
		h.t.Fatal(err)
	}
	if got := len(h.paid()); got != n {
		h.t.Fatalf("%d outputs, want %d", got, n)
	}
}

// TestCallsRunConcurrencyAtOnceAndNoMore has the gateway hold each call
// until Concurrency calls are under way: with Concurrency 8 it sees 8 at
// once and never more, with Concurrency 1 one at a time. Attempts outlast
// the gateway's hold, so no abandoned call is counted.
func TestCallsRunConcurrencyAtOnceAndNoMore(t *testing.T) {
	for _, c := range []int{1, 8} {
		opts := sideeffect.Options[string, order, paid]{Concurrency: c, Retry: sideeffect.Retry{AttemptTimeout: time.Minute}}
		h := start(t, gateway.Options{HoldUntilInFlight: c}, opts, testdriver.Config{})
		h.chargeAll(48)
		if got := h.stats().MaxInFlight; got != c {
			t.Errorf("concurrency %d: the gateway saw at most %d calls at once, want %d", c, got, c)
		}
	}
}

// BenchmarkSlowGateway measures events per second against a gateway that
// takes 20 ms a call, at Concurrency 1 and 8.
func BenchmarkSlowGateway(b *testing.B) {
	const events = 48
	for _, c := range []int{1, 8} {
		b.Run(fmt.Sprintf("concurrency=%d", c), func(b *testing.B) {
			for range b.N {
				h := start(b, gateway.Options{Latency: 20 * time.Millisecond}, sideeffect.Options[string, order, paid]{Concurrency: c}, testdriver.Config{})
				h.chargeAll(events)
			}
			b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

func TestKeyTTLForgetsKeysAfterTheirStreamTime(t *testing.T) {
	h := start(t, gateway.Options{}, sideeffect.Options[string, order, paid]{KeyTTL: time.Hour}, testdriver.Config{})
	if err := h.in.PipeInput("o-1", o(1), t0); err != nil {
		t.Fatal(err)
	}
	if err := h.in.PipeInput("o-1", o(1), t0.Add(30*time.Minute)); err != nil { // remembered: skipped
		t.Fatal(err)
	}
	if err := h.in.PipeInput("o-1", o(1), t0.Add(2*time.Hour)); err != nil { // forgotten: called again
		t.Fatal(err)
	}
	if s := h.stats(); s.Requests != 2 || s.Replays != 1 || s.Charges != 1 {
		t.Fatalf("gateway stats %+v, want 2 requests (1 replayed by key), 1 charge", s)
	}
	if got := h.paid(); len(got) != 2 {
		t.Fatalf("%d outputs, want 2 (the copy after the TTL is forwarded again)", len(got))
	}
}

func TestKeyFromIsDeterministicAndUnambiguous(t *testing.T) {
	k := sideeffect.KeyFrom("payments", "o-1")
	if k != sideeffect.KeyFrom("payments", "o-1") {
		t.Fatal("same identity, different keys")
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(k) {
		t.Fatalf("key %q is not a version-8 UUID", k)
	}
	for _, other := range []string{
		sideeffect.KeyFrom("payments", "o-2"),
		sideeffect.KeyFrom("refunds", "o-1"),
		sideeffect.KeyFrom("payments", "o-", "1"),
		sideeffect.KeyFrom("paymentso-1"),
	} {
		if other == k {
			t.Fatalf("distinct identities share key %s", k)
		}
	}
	// A fixed value: the key must never change across releases, or every
	// event in flight during an upgrade would be charged again.
	if want := "db68b823-13f6-8fd2-b8da-20aaecb6b072"; k != want {
		t.Errorf("KeyFrom(payments, o-1) = %s, want %s as in every earlier release", k, want)
	}
}

func TestBuildRejectsIncompleteOptions(t *testing.T) {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, order]{Topics: []string{"orders"}, Keys: serde.String, Values: serde.JSON[order]()})
	sideeffect.Add(b, "x", sideeffect.Options[string, order, paid]{}, "in")
	sideeffect.Add(b, "y", sideeffect.Options[string, order, paid]{
		IdempotencyKey: func(string, order) string { return "k" },
		Call:           func(context.Context, string, string, order) (paid, error) { return paid{}, nil },
		Concurrency:    2,
	}, "in")
	_, err := b.Build()
	if err == nil || !strings.Contains(err.Error(), `sideeffect "x": Options.IdempotencyKey and Options.Call are required`) {
		t.Errorf("no IdempotencyKey and Call: Build gave %v, want an error naming x", err)
	}
	if err == nil || !strings.Contains(err.Error(), `sideeffect "y": Concurrency 2 needs Options.Keys`) {
		t.Errorf("Concurrency without serdes: Build gave %v, want an error naming y and Keys", err)
	}
}

func header(hs []exactly.Header, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func count(t *testing.T, s store.ReadOnlyKeyValueStore[string, string]) int {
	t.Helper()
	it, err := s.All()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for it.Next() {
		n++
	}
	return n
}

// metric is the value of the series of the metric called name whose labels
// include the pairs in labels.
func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	v, err := metrics.Sum(h.metrics, name, labels...)
	if err != nil {
		h.t.Fatal(err)
	}
	return v
}
