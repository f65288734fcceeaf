package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// at is t0 plus seconds, in epoch milliseconds.
func at(seconds float64) int64 {
	return t0.Add(time.Duration(seconds * float64(time.Second))).UnixMilli()
}

type harness struct {
	t      *testing.T
	d      *testdriver.Driver
	in     *testdriver.InputTopic[string, Transaction]
	alerts *testdriver.OutputTopic[string, Alert]
	dlq    *testdriver.OutputTopic[[]byte, []byte]
	seq    int
}

func start(t *testing.T, opts Options, cfg testdriver.Config) *harness {
	t.Helper()
	top, err := Topology(opts)
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return &harness{
		t: t, d: d,
		in:     testdriver.CreateInputTopic(d, TransactionsTopic, serde.String, serde.JSON[Transaction]()),
		alerts: testdriver.CreateOutputTopic(d, AlertsTopic, serde.String, serde.JSON[Alert]()),
		dlq:    testdriver.CreateOutputTopic(d, DeadLetterTopic, serde.Bytes, serde.Bytes),
	}
}

// use pipes a valid transaction of card in country at time ms.
func (h *harness) use(card, country string, ms int64) string {
	h.t.Helper()
	h.seq++
	id := fmt.Sprint("tx-", h.seq)
	tx := Transaction{TransactionID: id, CardID: card, AmountCents: 1999, Merchant: "m", Country: country, Time: ms}
	if err := h.in.PipeInput(card, tx, time.UnixMilli(ms)); err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *harness) readAlerts() []Alert {
	h.t.Helper()
	recs, err := h.alerts.ReadRecords()
	if err != nil {
		h.t.Fatal(err)
	}
	var out []Alert
	for _, r := range recs {
		if r.Key != r.Value.CardID {
			h.t.Fatalf("alert %+v keyed by %q, want its card", r.Value, r.Key)
		}
		out = append(out, r.Value)
	}
	return out
}

func TestVelocityAlertsOncePerWindowWhenTheThresholdIsReached(t *testing.T) {
	m := dsl.NewMetrics()
	h := start(t, Options{VelocityThreshold: 3, VelocityWindow: time.Minute, Grace: 10 * time.Second, Metrics: m}, testdriver.Config{})
	h.use("c-1", "DE", at(1))
	h.use("c-1", "DE", at(20))
	h.use("c-2", "DE", at(21)) // another card counts apart
	if got := h.readAlerts(); len(got) != 0 {
		t.Fatalf("alerts before the threshold: %+v", got)
	}
	h.use("c-1", "DE", at(30))
	h.use("c-1", "DE", at(40)) // past the threshold: no second alert
	got := h.readAlerts()
	want := Alert{AlertID: fmt.Sprint("velocity:c-1:", at(0)), Rule: RuleVelocity, CardID: "c-1", Count: 3, WindowStart: at(0), WindowEnd: at(60)}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("alerts %+v, want one %+v", got, want)
	}

	h.use("c-3", "DE", at(62)) // stream time 62 s: the first window takes records until 70 s
	h.use("c-3", "DE", at(55)) // late, within grace: counted in the first window
	h.use("c-3", "DE", at(58))
	h.use("c-3", "DE", at(59))
	h.use("c-3", "DE", at(100)) // stream time passes 60 s + grace: the first window closes
	h.use("c-3", "DE", at(50))  // too late: dropped
	got = h.readAlerts()
	if len(got) != 1 || got[0].CardID != "c-3" || got[0].WindowStart != at(0) || got[0].Count != 3 {
		t.Fatalf("alerts %+v, want c-3's first window at the third transaction", got)
	}
	if dropped := testutil.ToFloat64(m.DroppedRecords.WithLabelValues("late")); dropped != 1 {
		t.Fatalf("dropped_records_total %v, want 1", dropped)
	}
}

func TestImpossibleTravelNamesBothTransactions(t *testing.T) {
	h := start(t, Options{TravelWindow: time.Hour}, testdriver.Config{})
	home := h.use("c-1", "DE", at(0))
	abroad := h.use("c-1", "JP", at(1800))
	h.use("c-1", "JP", at(1900)) // same country: nothing
	h.use("c-1", "FR", at(1900+3600))
	h.use("c-1", "US", at(1000)) // late, but an hour from the last one kept (FR)
	got := h.readAlerts()
	want := []Alert{{
		AlertID: "impossible-travel:" + abroad, Rule: RuleTravel, CardID: "c-1",
		TransactionID: abroad, PreviousTransactionID: home, Country: "JP", PreviousCountry: "DE",
	}}
	if !slices.Equal(got, want) {
		t.Fatalf("alerts %+v, want %+v", got, want)
	}
}

func TestRecordsThatAreNoTransactionGoToTheDeadLetterTopicWithTheirReason(t *testing.T) {
	h := start(t, Options{VelocityThreshold: 2}, testdriver.Config{})
	good := func(mutate func(*Transaction)) []byte {
		tx := Transaction{TransactionID: "tx", CardID: "c-1", AmountCents: 100, Country: "DE", Time: at(1)}
		mutate(&tx)
		b, _ := json.Marshal(tx)
		return b
	}
	cases := []struct {
		name, key, reason string
		value             []byte
	}{
		{"broken JSON", "c-1", exactly.ReasonDeserialization, []byte(`{"transactionId":`)},
		{"no time", "c-1", exactly.ReasonInvalidTimestamp, good(func(tx *Transaction) { tx.Time = 0 })},
		{"no amount", "c-1", ReasonInvalidTransaction, good(func(tx *Transaction) { tx.AmountCents = 0 })},
		{"no id", "c-1", ReasonInvalidTransaction, good(func(tx *Transaction) { tx.TransactionID = "" })},
		{"key is not the card", "c-2", ReasonInvalidTransaction, good(func(*Transaction) {})},
		{"no country", "c-1", ReasonInvalidTransaction, good(func(tx *Transaction) { tx.Country = "" })},
	}
	for _, c := range cases {
		if err := h.d.PipeBytes(TransactionsTopic, []byte(c.key), c.value, t0); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	dead, err := h.dlq.ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != len(cases) {
		t.Fatalf("%d dead letters, want %d", len(dead), len(cases))
	}
	for i, c := range cases {
		reason := ""
		for _, hd := range dead[i].Headers {
			if hd.Key == exactly.HeaderErrorReason {
				reason = string(hd.Value)
			}
		}
		if reason != c.reason || string(dead[i].Key) != c.key || string(dead[i].Value) != string(c.value) {
			t.Errorf("%s: dead letter %q %q with reason %q, want the original record with reason %q", c.name, dead[i].Key, dead[i].Value, reason, c.reason)
		}
	}
	if got := h.readAlerts(); len(got) != 0 {
		t.Fatalf("invalid transactions raised alerts: %+v", got)
	}
}

// outcome is what a run committed: the alerts of each card in order, the
// dead letters' source offsets, and each card's last transaction.
type outcome struct {
	alerts      map[string][]Alert
	deadLetters []string
	lastSeen    map[string]string
}

func collect(t *testing.T, h *harness, partitions int32) outcome {
	t.Helper()
	o := outcome{alerts: map[string][]Alert{}, lastSeen: map[string]string{}}
	for _, a := range h.readAlerts() {
		o.alerts[a.CardID] = append(o.alerts[a.CardID], a)
	}
	dead, err := h.dlq.ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range dead {
		var pos string
		for _, hd := range r.Headers {
			if hd.Key == exactly.HeaderSourcePartition || hd.Key == exactly.HeaderSourceOffset {
				pos += string(hd.Value) + "/"
			}
		}
		o.deadLetters = append(o.deadLetters, pos)
	}
	slices.Sort(o.deadLetters)
	for p := range partitions {
		kv, err := testdriver.KeyValueStore[string, Transaction](h.d, LastSeenStore, p)
		if err != nil {
			t.Fatal(err)
		}
		it, err := kv.All()
		if err != nil {
			t.Fatal(err)
		}
		for it.Next() {
			o.lastSeen[it.Key()] = it.Value().TransactionID
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

// TestCrashesAtRandomPointsCommitTheAlertsOfAnUninterruptedRun is the
// exactly-once property: a run that crashes at random points, before
// commits and in the middle of them, and restarts each time, commits the
// same alerts and dead letters and keeps the same state as a run that
// never crashed.
func TestCrashesAtRandomPointsCommitTheAlertsOfAnUninterruptedRun(t *testing.T) {
	const partitions = 4
	for _, persistent := range []bool{false, true} {
		t.Run(fmt.Sprintf("persistent=%v", persistent), func(t *testing.T) {
			opts := Options{Persistent: persistent}
			cfg := testdriver.Config{Partitions: map[string]int32{TransactionsTopic: partitions}, PersistentInMemory: true}
			for seed := range uint64(4) {
				records := Generate(seed, 800, t0)
				pipe := func(h *harness) func(int) error {
					return func(i int) error {
						return h.d.PipeBytes(TransactionsTopic, records[i].Key, records[i].Value, records[i].Timestamp)
					}
				}
				clean := start(t, opts, cfg)
				for i := range records {
					if err := pipe(clean)(i); err != nil {
						t.Fatal(err)
					}
				}
				want := collect(t, clean, partitions)
				rules := map[string]int{}
				for _, as := range want.alerts {
					for _, a := range as {
						rules[a.Rule]++
					}
				}
				if rules[RuleVelocity] == 0 || rules[RuleTravel] == 0 || len(want.deadLetters) == 0 {
					t.Fatalf("seed %d: the sample raised alerts %v and %d dead letters; want some of each", seed, rules, len(want.deadLetters))
				}

				crashing := start(t, opts, cfg)
				run, err := crashing.d.RunWithCrashes(testdriver.CrashSchedule{Seed: seed}, len(records), pipe(crashing))
				if err != nil {
					t.Fatal(err)
				}
				got := collect(t, crashing, partitions)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("seed %d (%v): the crashing run committed\n%v\nthe uninterrupted run\n%v", seed, run, got, want)
				}
			}
		})
	}
}
