// Command fraud is a card-fraud detector built on exactly, written as the
// template of a service: copy this directory into your own module, rename
// the topics and rules, and keep the shape.
//
// It reads card transactions (topic card-transactions, key = card id,
// value JSON, event time from the payload) and writes alerts to
// fraud-alerts, exactly once:
//
//   - velocity (streams DSL, windowed count): a card used
//     -velocity-threshold times within one -velocity-window, counted in
//     event time with -grace for late records, raises one alert per
//     window;
//   - impossible travel (Processor API, state store with a TTL): a card
//     used in two countries less than -travel-window apart raises an
//     alert naming both transactions.
//
// Records that are not transactions go to card-transactions-dlq with the
// reason in the exactly.error.reason header: deserialization-error for
// broken JSON, invalid-timestamp for a missing time, invalid-transaction
// for a transaction that fails Validate. Alert ids derive from the input
// alone, so a replay or a restart after a crash gives the same ids.
//
// The main function is a complete service: flags, SIGINT/SIGTERM handling
// with a graceful stop (commit, close the stores, leave the group), /metrics,
// /healthz and /readyz over HTTP, and a log line once the instance has
// joined its group and restored its stores. Against the embedded broker:
//
//	go run ./cmd/exactly broker --topic card-transactions &
//	go run ./examples/fraud -produce 2000     # sample transactions, then exit
//	go run ./examples/fraud                   # run until Ctrl-C
//	kcat -b 127.0.0.1:9092 -C -t fraud-alerts -X isolation.level=read_committed
//
// Its tests (fraud_test.go) show the testing side: rules checked record by
// record in the test driver, and a property that a run crashing at random
// points commits the same alerts as an uninterrupted one.
package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/prometheus/client_golang/prometheus"
)

// The topics of the detector.
const (
	TransactionsTopic = "card-transactions"
	AlertsTopic       = "fraud-alerts"
	DeadLetterTopic   = "card-transactions-dlq"
)

// The names of the Processor API nodes and stores, stable across
// releases: the stores' changelog topics are named after them.
const (
	NodeTravel       = "impossible-travel"
	NodeTravelAlerts = "impossible-travel-alerts"
	NodeDeadLetters  = "dead-letters"
	LastSeenStore    = "card-last-seen"
	VelocityStore    = "card-velocity"
)

// The alert rules.
const (
	RuleVelocity = "velocity"
	RuleTravel   = "impossible-travel"
)

// ReasonInvalidTransaction is the dead-letter reason of a transaction that
// fails Validate.
const ReasonInvalidTransaction = "invalid-transaction"

// Transaction is a card payment, the value of a card-transactions record
// keyed by its card id.
type Transaction struct {
	TransactionID string `json:"transactionId"`
	CardID        string `json:"cardId"`
	AmountCents   int64  `json:"amountCents"`
	Merchant      string `json:"merchant"`
	// Country is the ISO 3166 alpha-2 code of where the card was used.
	Country string `json:"country"`
	// Time is when the card was used, in epoch milliseconds: the event
	// time windows and travel checks follow.
	Time int64 `json:"time"`
}

// Alert is a fraud-alerts record, keyed by card id.
type Alert struct {
	// AlertID derives from the input alone: the same alert recomputed
	// after a crash or in a replay has the same id.
	AlertID string `json:"alertId"`
	Rule    string `json:"rule"`
	CardID  string `json:"cardId"`
	// Count, WindowStart and WindowEnd describe a velocity alert: the
	// transactions counted in the window [WindowStart, WindowEnd).
	Count       int64 `json:"count,omitempty"`
	WindowStart int64 `json:"windowStart,omitempty"`
	WindowEnd   int64 `json:"windowEnd,omitempty"`
	// TransactionID, PreviousTransactionID, Country and PreviousCountry
	// describe an impossible-travel alert.
	TransactionID         string `json:"transactionId,omitempty"`
	PreviousTransactionID string `json:"previousTransactionId,omitempty"`
	Country               string `json:"country,omitempty"`
	PreviousCountry       string `json:"previousCountry,omitempty"`
}

// Options are the detector's rules and state; zero fields take the
// defaults.
type Options struct {
	// ApplicationID must equal the application's Config.ApplicationID.
	ApplicationID string
	// VelocityThreshold is how many transactions of one card within one
	// window raise an alert; default 5.
	VelocityThreshold int64
	// VelocityWindow is the size of the tumbling velocity windows; default
	// one minute.
	VelocityWindow time.Duration
	// Grace is how long after a window's end late transactions still
	// count; default 10 seconds. Later ones are dropped and counted in
	// dropped_records_total.
	Grace time.Duration
	// TravelWindow is how close in time two transactions of one card in
	// different countries must be to raise an alert; default one hour.
	// Each card's last transaction is kept for as long (of stream time).
	TravelWindow time.Duration
	// Persistent keeps the stores on disk (Pebble) instead of in memory.
	Persistent bool
	// Registerer receives the DSL's metrics (dropped_records_total); nil
	// registers nothing.
	Registerer prometheus.Registerer
}

func (o Options) withDefaults() Options {
	if o.ApplicationID == "" {
		o.ApplicationID = "fraud"
	}
	if o.VelocityThreshold <= 0 {
		o.VelocityThreshold = 5
	}
	if o.VelocityWindow <= 0 {
		o.VelocityWindow = time.Minute
	}
	if o.Grace <= 0 {
		o.Grace = 10 * time.Second
	}
	if o.TravelWindow <= 0 {
		o.TravelWindow = time.Hour
	}
	return o
}

// Validate says why t, read under key, is not a usable transaction.
func Validate(key string, t Transaction) error {
	switch {
	case t.TransactionID == "":
		return errors.New("no transactionId")
	case t.CardID == "" || t.CardID != key:
		return fmt.Errorf("cardId %q differs from the record key %q", t.CardID, key)
	case t.AmountCents <= 0:
		return fmt.Errorf("amountCents %d is not positive", t.AmountCents)
	case len(t.Country) != 2:
		return fmt.Errorf("country %q is no ISO 3166 alpha-2 code", t.Country)
	}
	return nil
}

// eventTime reads a transaction's event time; the runtime dead-letters a
// record without one (reason invalid-timestamp).
func eventTime(rec exactly.Record[string, Transaction]) (time.Time, error) {
	if rec.Value.Time <= 0 {
		return time.Time{}, errors.New("no time")
	}
	return time.UnixMilli(rec.Value.Time), nil
}

// Topology builds the detector. The DSL reads the transactions and counts
// them in windows; the Processor API adds the travel check beside it, on
// the same source; both write to fraud-alerts.
func Topology(opts Options) (*exactly.Topology, error) {
	opts = opts.withDefaults()
	sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: opts.ApplicationID, Registerer: opts.Registerer})
	b := sb.Builder()
	b.OnDeserializationError(exactly.DeadLetterOnError)
	b.OnProcessingError(exactly.DeadLetterOnError)

	transactions := dsl.StreamFrom(sb, exactly.Source[string, Transaction]{
		Topics: []string{TransactionsTopic}, Keys: serde.String, Values: serde.JSON[Transaction](), Timestamp: eventTime,
	})

	// Velocity, in the DSL. Transactions are keyed by card, so the
	// grouping needs no repartition. In update mode a window's count
	// passes the threshold exactly once, the moment it is reached.
	valid := transactions.Filter(func(card string, t Transaction) bool { return Validate(card, t) == nil })
	counts := dsl.WindowedCount(valid.GroupByKey(), dsl.TumblingWindows(opts.VelocityWindow, opts.Grace),
		VelocityStore, dsl.Materialized{Persistent: opts.Persistent})
	threshold := opts.VelocityThreshold
	crossed := counts.ToStream().Filter(func(_ dsl.Windowed[string], n int64) bool { return n == threshold })
	dsl.Map(crossed, func(w dsl.Windowed[string], n int64) (string, Alert) {
		start, end := w.Start.UnixMilli(), w.End.UnixMilli()
		return w.Key, Alert{
			AlertID: fmt.Sprintf("%s:%s:%d", RuleVelocity, w.Key, start),
			Rule:    RuleVelocity, CardID: w.Key, Count: n, WindowStart: start, WindowEnd: end,
		}
	}, serde.String, serde.JSON[Alert]()).To(AlertsTopic)

	// Impossible travel, with the Processor API on the same source.
	travelWindow := opts.TravelWindow
	exactly.AddProcessor(b, NodeTravel, func() exactly.Processor[string, Transaction, string, Alert] {
		return &travelCheck{window: travelWindow.Milliseconds()}
	}, transactions.Node())
	exactly.AddStore(b, exactly.Store[string, Transaction]{
		Name: LastSeenStore, Keys: serde.String, Values: serde.JSON[Transaction](),
		Persistent: opts.Persistent, TTL: travelWindow,
	}, NodeTravel)
	exactly.AddSink(b, NodeTravelAlerts, exactly.Sink[string, Alert]{Topic: AlertsTopic, Keys: serde.String, Values: serde.JSON[Alert]()}, NodeTravel)

	// Records that are no transaction, from the source (deserialization,
	// timestamp) or from the travel check (Validate).
	exactly.AddDeadLetterSink(b, NodeDeadLetters, DeadLetterTopic, transactions.Node(), NodeTravel)
	return sb.Build()
}

// travelCheck compares each transaction with the card's last one, kept in
// LastSeenStore. State lives in the store, not in fields, so that it rolls
// back with an aborted transaction.
type travelCheck struct {
	window   int64
	ctx      exactly.ProcessorContext[string, Alert]
	lastSeen store.KeyValueStore[string, Transaction]
}

func (p *travelCheck) Init(ctx exactly.ProcessorContext[string, Alert]) (err error) {
	p.ctx = ctx
	p.lastSeen, err = exactly.GetKeyValueStore[string, Transaction](ctx, LastSeenStore)
	return err
}

func (p *travelCheck) Process(rec exactly.Record[string, Transaction]) error {
	t := rec.Value
	if err := Validate(rec.Key, t); err != nil {
		return p.ctx.DeadLetter(exactly.DeadLetter{Reason: ReasonInvalidTransaction, Message: err.Error()})
	}
	last, found, err := p.lastSeen.Get(t.CardID)
	if err != nil {
		return err
	}
	if found && last.Country != t.Country && abs(t.Time-last.Time) < p.window {
		p.ctx.Forward(exactly.Record[string, Alert]{Key: t.CardID, Value: Alert{
			AlertID: fmt.Sprintf("%s:%s", RuleTravel, t.TransactionID),
			Rule:    RuleTravel, CardID: t.CardID,
			TransactionID: t.TransactionID, PreviousTransactionID: last.TransactionID,
			Country: t.Country, PreviousCountry: last.Country,
		}})
	}
	if !found || t.Time >= last.Time {
		return p.lastSeen.Put(t.CardID, t)
	}
	return nil
}

func (p *travelCheck) Close() error { return nil }

func abs(d int64) int64 {
	if d < 0 {
		return -d
	}
	return d
}
