// Package payments is the reference application for side effects outside
// Kafka: charging payment orders through an HTTP payment gateway exactly
// once, although a process may die between the gateway's charge and the
// commit of the Kafka transaction that records it.
//
// Two shapes are provided, both on the wire contract of the payments
// section of the product specification's Appendix A:
//
// Direct (DirectTopology, run under exactly_once_v2): one processor calls
// the gateway with an idempotency key derived from the order id, records
// the key and forwards the result in one transaction:
//
//	payment-orders → decode → charge (sideeffect) → payments-processed
//	      └────────────┴──────────┴──→ payment-orders-dlq
//
// Outbox split (ValidatorTopology under exactly_once_v2, CallerTopology
// under at_least_once): the validator records each order as PENDING and
// forwards it once to pending-api-calls; the caller, a separate
// application, performs the call with the same idempotency key and emits
// payments-processed:
//
//	payment-orders → decode → validate (PENDING) → pending-api-calls
//	pending-api-calls → charge (sideeffect) → payments-processed
//
// The split keeps the exactly-once decision (which orders to charge, each
// once) apart from the slow, retried, at-least-once call, so a slow or
// failing gateway never holds the validator's transactions open. It does
// not make a gateway that ignores idempotency keys safe: a caller killed
// after the charge and before its offset commit calls again. Only the key,
// honoured by the gateway, makes the repeat harmless. With the caller at
// least once, payments-processed may also carry a repeated record for an
// order; it always names the same transaction (the gateway's answer to the
// same key), so consumers keep the first per orderId.
package payments

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/payments/gateway"
	"github.com/exactly-go/exactly/processors/sideeffect"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Default topic names.
const (
	DefaultInputTopic      = "payment-orders"
	DefaultOutputTopic     = "payments-processed"
	DefaultPendingTopic    = "pending-api-calls"
	DefaultDeadLetterTopic = "payment-orders-dlq"
)

// Store names; with the application id they name the changelog topics.
const (
	// KeyStore holds the idempotency keys of orders charged or declined.
	KeyStore = "idempotency-key-store"
	// PendingStore holds orders waiting for their call when Concurrency > 1.
	PendingStore = "pending-charges-store"
	// StatusStore holds the validator's PENDING mark per order.
	StatusStore = "payment-status-store"
)

// Dead-letter reasons of the payments topologies, beside the processor's
// own (sideeffect.ReasonRetriesExhausted).
const (
	ReasonMalformed       = "malformed"
	ReasonMissingField    = "missing-field"
	ReasonInvalidAmount   = "invalid-amount"
	ReasonPaymentDeclined = "payment-declined"
	ReasonGatewayRejected = "gateway-rejected"
)

// StatusPending is the validator's mark of an order forwarded for charging.
const StatusPending = "PENDING"

// PaymentOrder is a record of payment-orders (and pending-api-calls).
type PaymentOrder struct {
	// EventID names the event; a resent order has a new one.
	EventID string `json:"eventId"`
	// OrderID names the order: the identity an order is charged once by.
	OrderID string `json:"orderId"`
	// AmountCents is the amount to charge, positive, in the currency's
	// minor unit.
	AmountCents int64 `json:"amountCents"`
	// Currency is an ISO 4217 code.
	Currency string `json:"currency"`
}

// PaymentProcessed is a record of payments-processed.
type PaymentProcessed struct {
	// OrderID, AmountCents and Currency repeat the order charged.
	OrderID     string `json:"orderId"`
	AmountCents int64  `json:"amountCents"`
	Currency    string `json:"currency"`
	// TransactionID is the gateway's charge: the same for every repeat of
	// the call, as the idempotency key is.
	TransactionID string `json:"transactionId"`
}

// IdempotencyKey is the key an order is charged with: a function of the
// order id alone, so a redelivered event and a resent order (a new event id
// for the same order) share it.
func IdempotencyKey(orderID string) string { return sideeffect.KeyFrom("payment-order", orderID) }

// Options configure the payments topologies.
type Options struct {
	// InputTopic, OutputTopic, PendingTopic and DeadLetterTopic default
	// to payment-orders, payments-processed, pending-api-calls and
	// payment-orders-dlq.
	InputTopic, OutputTopic, PendingTopic, DeadLetterTopic string
	// Gateway is the payment gateway client; required by the topologies
	// that charge.
	Gateway *gateway.Client
	// Concurrency is the most gateway calls one task makes at once;
	// default 1. See package sideeffect. Give the gateway client's
	// transport at least as many idle connections per host
	// (http.Transport.MaxIdleConnsPerHost, default 2), or calls beyond
	// them open a new connection each.
	Concurrency int
	// Retry bounds retries of transient gateway failures.
	Retry sideeffect.Retry
	// Persistent keeps the stores on disk (Pebble).
	Persistent bool
	// Registerer receives the charge processor's metrics (see
	// sideeffect.Options.Registerer); nil registers nothing.
	Registerer prometheus.Registerer
}

func (o Options) withDefaults() Options {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.InputTopic, DefaultInputTopic)
	def(&o.OutputTopic, DefaultOutputTopic)
	def(&o.PendingTopic, DefaultPendingTopic)
	def(&o.DeadLetterTopic, DefaultDeadLetterTopic)
	return o
}

// Node names.
const (
	NodeSource      = "payment-orders-source"
	NodeDecode      = "decode"
	NodeCharge      = "charge"
	NodeValidate    = "validate"
	NodePendingSrc  = "pending-api-calls-source"
	NodeOutput      = "payments-processed-sink"
	NodePendingSink = "pending-api-calls-sink"
	NodeDeadLetters = "dead-letter-sink"
)

// DirectTopology charges each order from InputTopic once and writes the
// result to OutputTopic. Run it under exactly_once_v2.
func DirectTopology(opts Options) (*exactly.Topology, error) {
	opts = opts.withDefaults()
	b := exactly.NewBuilder()
	addDecode(b, opts)
	addCharge(b, opts, NodeDecode)
	exactly.AddDeadLetterSink(b, NodeDeadLetters, opts.DeadLetterTopic, NodeSource, NodeDecode, NodeCharge)
	return b.Build()
}

// ValidatorTopology forwards each order of InputTopic to PendingTopic
// once, recording it as PENDING in the same transaction. Run it under
// exactly_once_v2: then PendingTopic holds exactly one committed record per
// order.
func ValidatorTopology(opts Options) (*exactly.Topology, error) {
	opts = opts.withDefaults()
	b := exactly.NewBuilder()
	addDecode(b, opts)
	exactly.AddProcessor(b, NodeValidate, func() exactly.Processor[string, PaymentOrder, string, PaymentOrder] {
		return &validator{}
	}, NodeDecode)
	exactly.AddStore(b, exactly.Store[string, string]{Name: StatusStore, Keys: serde.String, Values: serde.String, Persistent: opts.Persistent}, NodeValidate)
	exactly.AddSink(b, NodePendingSink, exactly.Sink[string, PaymentOrder]{Topic: opts.PendingTopic, Keys: serde.String, Values: serde.JSON[PaymentOrder]()}, NodeValidate)
	exactly.AddDeadLetterSink(b, NodeDeadLetters, opts.DeadLetterTopic, NodeSource, NodeDecode)
	return b.Build()
}

// CallerTopology charges each order of PendingTopic and writes the result
// to OutputTopic. It is meant to run under at_least_once, as its own
// application; it skips orders whose key its store recorded, and calls
// again, with the same key, those a crash left unrecorded.
func CallerTopology(opts Options) (*exactly.Topology, error) {
	opts = opts.withDefaults()
	b := exactly.NewBuilder()
	exactly.AddSource(b, NodePendingSrc, exactly.Source[string, PaymentOrder]{Topics: []string{opts.PendingTopic}, Keys: serde.String, Values: serde.JSON[PaymentOrder]()})
	b.OnDeserializationError(exactly.DeadLetterOnError)
	addCharge(b, opts, NodePendingSrc)
	exactly.AddDeadLetterSink(b, NodeDeadLetters, opts.DeadLetterTopic, NodePendingSrc, NodeCharge)
	return b.Build()
}

func addDecode(b *exactly.Builder, opts Options) {
	exactly.AddSource(b, NodeSource, exactly.Source[string, []byte]{Topics: []string{opts.InputTopic}, Keys: serde.String, Values: serde.Bytes})
	b.OnDeserializationError(exactly.DeadLetterOnError)
	exactly.AddProcessor(b, NodeDecode, exactly.ProcessorFunc[string, []byte, string, PaymentOrder](decode).Supplier(), NodeSource)
}

func addCharge(b *exactly.Builder, opts Options, parent string) {
	if opts.Gateway == nil {
		b.AddError(errors.New("payments: Options.Gateway is required: the client of the payment gateway"))
	}
	sideeffect.Add(b, NodeCharge, sideeffect.Options[string, PaymentOrder, PaymentProcessed]{
		IdempotencyKey: func(_ string, o PaymentOrder) string { return IdempotencyKey(o.OrderID) },
		Call:           Charger(opts.Gateway),
		Retry:          opts.Retry,
		KeyStore:       KeyStore,
		PendingStore:   PendingStore,
		Persistent:     opts.Persistent,
		Concurrency:    opts.Concurrency,
		Keys:           serde.String,
		Values:         serde.JSON[PaymentOrder](),
		Registerer:     opts.Registerer,
	}, parent)
	exactly.AddSink(b, NodeOutput, exactly.Sink[string, PaymentProcessed]{Topic: opts.OutputTopic, Keys: serde.String, Values: serde.JSON[PaymentProcessed]()}, NodeCharge)
}

// Charger returns the call that charges an order through gw: a 402 is the
// permanent failure ReasonPaymentDeclined, another refusal (4xx) is
// ReasonGatewayRejected, anything else is transient.
func Charger(gw *gateway.Client) sideeffect.Call[string, PaymentOrder, PaymentProcessed] {
	return func(ctx context.Context, idemKey, _ string, o PaymentOrder) (PaymentProcessed, error) {
		resp, err := gw.Charge(ctx, idemKey, gateway.ChargeRequest{OrderID: o.OrderID, AmountCents: o.AmountCents, Currency: o.Currency})
		var se *gateway.StatusError
		switch {
		case errors.As(err, &se) && se.Code == http.StatusPaymentRequired:
			return PaymentProcessed{}, sideeffect.Permanent(ReasonPaymentDeclined, err)
		case errors.As(err, &se) && se.Permanent():
			return PaymentProcessed{}, sideeffect.Permanent(ReasonGatewayRejected, err)
		case err != nil:
			return PaymentProcessed{}, err
		}
		return PaymentProcessed{OrderID: o.OrderID, AmountCents: o.AmountCents, Currency: o.Currency, TransactionID: resp.TransactionID}, nil
	}
}

// decode turns the bytes of a payment order into a PaymentOrder, or
// dead-letters them with the reason they are unusable.
func decode(ctx exactly.ProcessorContext[string, PaymentOrder], rec exactly.Record[string, []byte]) error {
	o, reason, err := Decode(rec.Value)
	if err != nil {
		return ctx.DeadLetter(exactly.DeadLetter{Reason: reason, Message: err.Error()})
	}
	ctx.Forward(exactly.Record[string, PaymentOrder]{Key: rec.Key, Value: o})
	return nil
}

// Decode reads a payment order; an unusable one comes with its dead-letter
// reason (ReasonMalformed, ReasonMissingField, ReasonInvalidAmount).
func Decode(b []byte) (PaymentOrder, string, error) {
	var o PaymentOrder
	if err := json.Unmarshal(b, &o); err != nil {
		return o, ReasonMalformed, fmt.Errorf("payment order is not JSON of the payments contract: %w", err)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"eventId", o.EventID}, {"orderId", o.OrderID}, {"currency", o.Currency}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return o, ReasonMissingField, fmt.Errorf("payment order lacks %s", strings.Join(missing, ", "))
	}
	if o.AmountCents <= 0 {
		return o, ReasonInvalidAmount, fmt.Errorf("payment order %s has amountCents %d: it must be positive", o.OrderID, o.AmountCents)
	}
	return o, "", nil
}

// validator forwards each order once, marking it PENDING.
type validator struct {
	ctx    exactly.ProcessorContext[string, PaymentOrder]
	status store.KeyValueStore[string, string]
}

func (v *validator) Init(ctx exactly.ProcessorContext[string, PaymentOrder]) error {
	v.ctx = ctx
	var err error
	v.status, err = exactly.GetKeyValueStore[string, string](ctx, StatusStore)
	return err
}

func (v *validator) Process(rec exactly.Record[string, PaymentOrder]) error {
	_, seen, err := v.status.Get(rec.Value.OrderID)
	if err != nil || seen {
		return err
	}
	if err := v.status.Put(rec.Value.OrderID, StatusPending); err != nil {
		return err
	}
	v.ctx.Forward(rec)
	return nil
}

func (v *validator) Close() error { return nil }
