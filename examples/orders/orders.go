// Package orders is the reference application of exactly: an order read
// model (CQRS projection) that stays correct under duplicates, arrival out
// of order, missing prerequisites, bad input, crashes and restarts.
//
// The topology reads order events (OrderCreated, OrderUpdated, OrderShipped)
// from order-events and runs them through
//
//	decode → dedup → reorder → apply → order-projections
//	   └──────────┴───────┴───────┴──→ order-events-dlq
//
// decode classifies bad records (malformed, unknown-event-type,
// missing-field, invalid-timestamp) and dead-letters them; dedup skips
// events whose eventId was already applied; reorder holds an order's events
// until its OrderCreated has been applied (and, for events that carry
// metadata.sequence, until every lower number has), dead-lettering those
// that wait longer than the buffer TTL (buffer-ttl-expired); apply folds
// each event into the order's Aggregate and emits its Projection. The wire
// contract is the orders section of the product specification's Appendix A.
//
// State stays bounded (R-PF4) except for the projection store, which holds
// one Aggregate per order by design: dedup keeps eventIds for DedupTTL,
// the reorder buffer keeps waiting events for at most BufferTTL, and what
// reorder knows of each order (created? last sequence number applied?) is
// kept in KeyStateStore for BufferTTL after it last changed. An order's
// Aggregate records the same two facts (Created, Sequence), and apply
// writes it in the same step as reorder releases the event, so once reorder
// has forgotten an order it reads them back from the Aggregate
// (reorder.Options.Recall): an event of an order created long ago is
// applied at once, and a gap in its sequence numbers is held as before.
// The last sequence number is kept in the Aggregate rather than derived
// from Projection.Version, which also counts events without a number and
// events that reuse one.
//
// Tracing: with a TracerProvider in the runtime's configuration, the span
// of an order event that arrives without a traceparent header joins the
// trace its envelope's traceId names, when that is a W3C trace id (32
// lower-case hex digits); the span carries the traceId as the attribute
// orders.trace_id in any case. A projection continues the trace of the
// event it applies, also when the event waited in the reorder buffer. The
// log lines of applied and dead-lettered events (Options.Logger, at debug
// level) carry the traceId, beside the span's own trace_id and span_id.
//
// Oracle computes, independently of the topology, what the committed
// output and dead-letter topic must hold for a given input, and Generate
// produces realistic input to check it with.
package orders

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/processors/dedup"
	"github.com/exactly-go/exactly/processors/reorder"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Default topic names.
const (
	DefaultInputTopic      = "order-events"
	DefaultOutputTopic     = "order-projections"
	DefaultDeadLetterTopic = "order-events-dlq"
)

// Store names; with the application id they name the changelog topics.
const (
	// DedupStore holds the eventIds applied, for the dedup TTL.
	DedupStore = "deduplication-store"
	// BufferStore holds the events waiting for their prerequisites.
	BufferStore = "out-of-order-buffer-store"
	// KeyStateStore holds, for the buffer TTL after they last changed,
	// whether recently active orders were created and the last sequence
	// number applied to them.
	KeyStateStore = "out-of-order-key-state-store"
	// ProjectionStore holds each order's Aggregate (its Projection and
	// what applying more events needs); serve queries from it.
	ProjectionStore = "order-projection-store"
)

// Node names of the topology, as Describe prints them.
const (
	NodeSource      = "order-events-source"
	NodeDecode      = "decode"
	NodeDedup       = "dedup"
	NodeReorder     = "reorder"
	NodeApply       = "apply"
	NodeProjections = "order-projections-sink"
	NodeDeadLetters = "order-events-dlq-sink"
)

// HeaderEventID is the header, on each projection record, naming the event
// whose application produced it.
const HeaderEventID = "eventId"

// Options configure the orders topology. The zero Options give the
// defaults of each field; Oracle must be given the same Options as the
// topology whose output it predicts.
type Options struct {
	// InputTopic, OutputTopic and DeadLetterTopic default to
	// order-events, order-projections and order-events-dlq.
	InputTopic, OutputTopic, DeadLetterTopic string
	// DedupTTL is how long, in stream time, an eventId is remembered;
	// default dedup.DefaultTTL (7 days).
	DedupTTL time.Duration
	// BufferTTL is how long, in stream time, an event may wait for its
	// prerequisites; default reorder.DefaultBufferTTL (24 h).
	BufferTTL time.Duration
	// SweepInterval is how often, in stream time, expired ids and events
	// are swept; default one minute.
	SweepInterval time.Duration
	// Persistent keeps the stores on disk (Pebble) rather than in memory.
	Persistent bool
	// Decoder sets the size and timestamp limits of input records.
	Decoder Decoder
	// Registerer receives the metrics of the dedup and reorder processors
	// (duplicates_skipped_total, duplicates_conflicting_total,
	// events_buffered_total, buffer_size, events_expired_total); nil
	// registers nothing.
	Registerer prometheus.Registerer
	// Logger receives, at debug level, a line per event applied and per
	// record dead-lettered by decode, with the envelope's traceId and the
	// record span's trace_id and span_id; default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.InputTopic == "" {
		o.InputTopic = DefaultInputTopic
	}
	if o.OutputTopic == "" {
		o.OutputTopic = DefaultOutputTopic
	}
	if o.DeadLetterTopic == "" {
		o.DeadLetterTopic = DefaultDeadLetterTopic
	}
	if o.DedupTTL == 0 {
		o.DedupTTL = dedup.DefaultTTL
	}
	if o.BufferTTL == 0 {
		o.BufferTTL = reorder.DefaultBufferTTL
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = time.Minute
	}
	o.Decoder = o.Decoder.withDefaults()
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Topology builds the orders topology. Every failure goes to the dead-letter
// topic rather than stopping a partition.
func Topology(opts Options) (*exactly.Topology, error) {
	opts = opts.withDefaults()
	b := exactly.NewBuilder()
	b.OnDeserializationError(exactly.DeadLetterOnError)
	b.OnProcessingError(exactly.DeadLetterOnError)
	b.OnProductionError(exactly.DeadLetterOnError) // a projection too large for the topic is dead-lettered, not retried forever

	exactly.AddSource(b, NodeSource, exactly.Source[[]byte, decoded]{
		Topics:    []string{opts.InputTopic},
		Keys:      serde.Bytes,
		Values:    decodingSerde{decoder: opts.Decoder},
		Timestamp: eventTime,
		Trace:     eventTrace,
	})
	exactly.AddProcessor(b, NodeDecode, func() exactly.Processor[[]byte, decoded, string, Event] {
		return &decodeProcessor{log: opts.Logger}
	}, NodeSource)
	dedup.Add(b, NodeDedup, dedup.Options[string, Event]{
		ID:            func(_ string, e Event) string { return e.Metadata.EventID },
		TTL:           opts.DedupTTL,
		SweepInterval: opts.SweepInterval,
		StoreName:     DedupStore,
		Persistent:    opts.Persistent,
		Registerer:    opts.Registerer,
	}, NodeDecode)
	reorder.Add(b, NodeReorder, reorder.Options[string, Event]{
		Keys:    serde.String,
		Values:  eventSerde{},
		EventID: func(e Event) string { return e.Metadata.EventID },
		// An order opens when its OrderCreated is released to apply, which
		// applies it in the same step: the reorder buffer's own per-order
		// state answers readiness without reading the projection, for the
		// buffer TTL; after that, recallOrder reads it from the aggregate.
		Opens:         func(e Event) bool { return e.Type == TypeOrderCreated },
		Sequence:      func(e Event) (uint64, bool) { return e.Metadata.Sequence, e.Metadata.Sequence > 0 },
		Recall:        recallOrder,
		BufferTTL:     opts.BufferTTL,
		SweepInterval: opts.SweepInterval,
		StoreName:     BufferStore,
		KeyStoreName:  KeyStateStore,
		Persistent:    opts.Persistent,
		Registerer:    opts.Registerer,
	}, NodeDedup)
	b.Connect(NodeReorder, ProjectionStore)
	exactly.AddProcessor(b, NodeApply, func() exactly.Processor[string, Event, string, Projection] {
		return &applyProcessor{log: opts.Logger}
	}, NodeReorder)
	exactly.AddStore(b, exactly.Store[string, Aggregate]{
		Name: ProjectionStore, Keys: serde.String, Values: AggregateSerde{}, Persistent: opts.Persistent,
	}, NodeApply)
	exactly.AddSink(b, NodeProjections, exactly.Sink[string, Projection]{
		Topic: opts.OutputTopic, Keys: serde.String, Values: jsonSerde[Projection]{},
	}, NodeApply)
	exactly.AddDeadLetterSink(b, NodeDeadLetters, opts.DeadLetterTopic, NodeSource, NodeDecode, NodeDedup, NodeReorder, NodeApply)
	t, err := b.Build()
	if err != nil {
		return nil, fmt.Errorf("orders topology: %w", err)
	}
	return t, nil
}

// decoded is an input value decoded once, in the source: the event, or why
// it is not one. Decoding never fails in the source, so that bad records
// reach decodeProcessor and are dead-lettered with the application's
// reasons rather than the runtime's generic one.
type decoded struct {
	event Event
	err   *DecodeError
}

type decodingSerde struct{ decoder Decoder }

func (s decodingSerde) Deserialize(b []byte) (decoded, error) {
	e, err := s.decoder.decodeValue(b, true)
	return decoded{event: e, err: err}, nil
}

func (s decodingSerde) Serialize(v decoded) ([]byte, error) {
	if v.err != nil {
		return nil, v.err
	}
	return v.event.MarshalJSON()
}

// eventTime is the source's timestamp extractor: metadata.timestamp, or
// the epoch for a record that will be dead-lettered, so that bad records
// never move stream time.
func eventTime(rec exactly.Record[[]byte, decoded]) (time.Time, error) {
	if rec.Value.err != nil || checkKey(rec.Key, rec.Value.event) != nil {
		return time.UnixMilli(0), nil
	}
	return time.UnixMilli(rec.Value.event.Metadata.Timestamp), nil
}

// eventTrace is the source's trace function: the envelope's traceId is the
// trace of an event that arrives without a traceparent header, when it is a
// W3C trace id, and an attribute of the event's span in any case.
func eventTrace(rec exactly.Record[[]byte, decoded]) exactly.RecordTrace {
	id := rec.Value.event.Metadata.TraceID
	if id == "" {
		return exactly.RecordTrace{}
	}
	rt := exactly.RecordTrace{Attributes: []attribute.KeyValue{attribute.String("orders.trace_id", id)}}
	rt.TraceID, _ = trace.TraceIDFromHex(id)
	return rt
}

// logEvent logs msg at debug level with the event's traceId and the ids of
// the record's span, unless debug is off.
func logEvent(log *slog.Logger, span trace.Span, msg, traceID string, attrs ...slog.Attr) {
	ctx := context.Background()
	if !log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	if traceID != "" {
		attrs = append(attrs, slog.String("traceId", traceID))
	}
	if sc := span.SpanContext(); sc.IsValid() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	log.LogAttrs(ctx, slog.LevelDebug, msg, attrs...)
}

type decodeProcessor struct {
	ctx exactly.ProcessorContext[string, Event]
	log *slog.Logger
}

func (p *decodeProcessor) Init(ctx exactly.ProcessorContext[string, Event]) error {
	p.ctx = ctx
	return nil
}

func (p *decodeProcessor) Process(rec exactly.Record[[]byte, decoded]) error {
	derr := rec.Value.err
	if derr == nil {
		derr = checkKey(rec.Key, rec.Value.event)
	}
	if derr != nil {
		logEvent(p.log, p.ctx.Span(), "order event dead-lettered", rec.Value.event.Metadata.TraceID,
			slog.String("reason", derr.Reason), slog.String("event_id", rec.Value.event.Metadata.EventID))
		return p.ctx.DeadLetter(exactly.DeadLetter{Reason: derr.Reason, Message: derr.Message})
	}
	p.ctx.Forward(exactly.Record[string, Event]{
		Key: string(rec.Key), Value: rec.Value.event, Timestamp: rec.Timestamp, Headers: rec.Headers,
	})
	return nil
}

func (p *decodeProcessor) Close() error { return nil }

// recallOrder is the reorder buffer's memory of an order it has forgotten:
// apply, its only child, applies every event it releases at once, so the
// order's Aggregate records the same state: created once an OrderCreated was
// applied, and the highest sequence number applied.
func recallOrder(ctx exactly.ProcessorContext[string, Event]) (reorder.RecallFunc[string], error) {
	aggregates, err := exactly.GetKeyValueStore[string, Aggregate](ctx, ProjectionStore)
	if err != nil {
		return nil, err
	}
	return func(orderID string) (reorder.KeyState, error) {
		a, ok, err := aggregates.Get(orderID)
		if err != nil || !ok {
			return reorder.KeyState{}, err
		}
		return reorder.KeyState{Opened: !a.Created.IsZero(), LastSequence: a.Sequence}, nil
	}, nil
}

type applyProcessor struct {
	ctx        exactly.ProcessorContext[string, Projection]
	aggregates store.KeyValueStore[string, Aggregate]
	log        *slog.Logger
}

func (p *applyProcessor) Init(ctx exactly.ProcessorContext[string, Projection]) error {
	p.ctx = ctx
	var err error
	p.aggregates, err = exactly.GetKeyValueStore[string, Aggregate](ctx, ProjectionStore)
	return err
}

func (p *applyProcessor) Process(rec exactly.Record[string, Event]) error {
	a, _, err := p.aggregates.Get(rec.Key)
	if err != nil {
		return fmt.Errorf("apply event %s to order %s: %w", rec.Value.Metadata.EventID, rec.Key, err)
	}
	a.Apply(rec.Value)
	if err := p.aggregates.Put(rec.Key, a); err != nil {
		return fmt.Errorf("apply event %s to order %s: %w", rec.Value.Metadata.EventID, rec.Key, err)
	}
	logEvent(p.log, p.ctx.Span(), "order event applied", rec.Value.Metadata.TraceID,
		slog.String("order_id", rec.Key), slog.String("event_id", rec.Value.Metadata.EventID),
		slog.String("type", string(rec.Value.Type)), slog.Int64("version", a.Projection.Version))
	p.ctx.Forward(exactly.Record[string, Projection]{
		Key:       rec.Key,
		Value:     a.Projection,
		Timestamp: time.UnixMilli(rec.Value.Metadata.Timestamp),
		Headers:   withTraceContext([]exactly.Header{{Key: HeaderEventID, Value: []byte(rec.Value.Metadata.EventID)}}, rec.Headers),
	})
	return nil
}

// withTraceContext appends the W3C trace context headers of an event to
// the headers of its projection, so that the projection stays in the
// event's trace: the runtime replaces them with the span of the record
// being processed when the event is that record, and leaves them when
// the event was held back and another record released it.
func withTraceContext(headers, event []exactly.Header) []exactly.Header {
	for _, h := range event {
		if h.Key == "traceparent" || h.Key == "tracestate" {
			headers = append(headers, h)
		}
	}
	return headers
}

func (p *applyProcessor) Close() error { return nil }
