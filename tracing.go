package exactly

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// RecordTrace is what a source's Trace function ([Source].Trace) says of one
// input record's trace, from the record's content, when tracing is on.
//
// Tracing (Config.TracerProvider) gives each input record a span, named
// "process <topic>", with the messaging semantic conventions' attributes
// (messaging.system=kafka, messaging.destination.name,
// messaging.destination.partition.id, messaging.kafka.offset,
// messaging.consumer.group.name) and exactly.task. The span is a child of
// the record's W3C traceparent header when it has a valid one. Every output
// and dead letter produced while processing the record carries the span's
// traceparent, so the trace goes on in whoever reads them; an output that
// carries a traceparent of its own, other than the input's (a record a
// processor held back and releases now), keeps it. Outputs of punctuators
// carry what their processor gave them.
type RecordTrace struct {
	// TraceID is the trace the record's span joins when the record carries
	// no valid traceparent header, such as a trace id an event envelope
	// carries; the zero TraceID leaves the span the root of a new trace.
	// The span's parent is then a span of that trace that is never
	// exported, standing for the record's producer.
	TraceID trace.TraceID
	// Attributes are added to the record's span.
	Attributes []attribute.KeyValue
}
