// Package tracing is the runtime's OpenTelemetry tracing: the W3C trace
// context carried in record headers, the span of each processed record,
// and the attributes that the spans of records, commits and restores share.
// The task core, the Kafka runner and the test driver all take it from
// here, so that a trace reads the same whoever ran the topology.
//
// Tracing is off unless a trace.TracerProvider is configured: Tracer
// returns nil then, and the callers test for nil before doing anything, so
// that a record costs nothing more when tracing is off.
//
// The record headers use the W3C Trace Context format (traceparent and
// tracestate) whatever the global propagator of the process is: it is the
// wire format that every tracing system and Kafka client understands.
package tracing

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactly-go/exactly/internal/topo"
)

// ScopeName is the instrumentation scope of every span of the runtime.
const ScopeName = "github.com/exactly-go/exactly"

// The record headers of the W3C trace context: HeaderTraceParent holds the
// trace and parent span ids, HeaderTraceState vendors' data.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// Attribute keys of the runtime's own, beside the messaging semantic
// conventions.
const (
	// KeyTask is the task id (subtopology_partition) of a record's or a
	// restore's span.
	KeyTask = attribute.Key("exactly.task")
	// KeyDeadLetterReason is the reason a record was dead-lettered.
	KeyDeadLetterReason = attribute.Key("exactly.dead_letter.reason")
	// KeyCommitTasks is the number of tasks with anything to commit:
	// input processed, outputs or changelog records.
	KeyCommitTasks = attribute.Key("exactly.commit.tasks")
	// KeyCommitRecords is the number of input records a commit holds.
	KeyCommitRecords = attribute.Key("exactly.commit.records")
	// KeyCommitOutputs is the number of output records (dead letters
	// included) a commit sends at commit time; outputs sent earlier inside
	// the same transaction are not counted.
	KeyCommitOutputs = attribute.Key("exactly.commit.outputs")
	// KeyCommitChangelogRecords is the number of changelog records a commit
	// writes.
	KeyCommitChangelogRecords = attribute.Key("exactly.commit.changelog_records")
	// KeyCommitResult is how a commit ended: committed, aborted, unknown
	// (the broker's answer was lost; the tasks restart from what the group
	// holds) or failed (it ended before the transaction did).
	KeyCommitResult = attribute.Key("exactly.commit.result")
	// KeyRestoreRecords is the number of changelog records a restore read.
	KeyRestoreRecords = attribute.Key("exactly.restore.records")
	// KeyRestoreStores is the number of logged stores a restore covered.
	KeyRestoreStores = attribute.Key("exactly.restore.stores")
)

// Tracer returns the runtime's tracer from tp; nil (tracing off) when tp
// is nil.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(ScopeName)
}

var propagator = propagation.TraceContext{}

// headerCarrier lets the W3C propagator read and write record headers.
// Keys match without regard to case, as HTTP's do.
type headerCarrier struct{ headers *[]topo.Header }

func (c headerCarrier) Get(key string) string {
	for _, h := range *c.headers {
		if strings.EqualFold(h.Key, key) {
			return string(h.Value)
		}
	}
	return ""
}

func (c headerCarrier) Set(key, value string) {
	for i, h := range *c.headers {
		if strings.EqualFold(h.Key, key) {
			(*c.headers)[i].Value = []byte(value)
			return
		}
	}
	*c.headers = append(*c.headers, topo.Header{Key: key, Value: []byte(value)})
}

func (c headerCarrier) Keys() []string {
	keys := make([]string, len(*c.headers))
	for i, h := range *c.headers {
		keys[i] = h.Key
	}
	return keys
}

// Extract returns the span context of the traceparent (and tracestate)
// headers; an invalid one when they are missing or malformed.
func Extract(headers []topo.Header) trace.SpanContext {
	return trace.SpanContextFromContext(propagator.Extract(context.Background(), headerCarrier{&headers}))
}

// header returns the value of the header key, nil when absent.
func header(headers []topo.Header, key string) []byte {
	for _, h := range headers {
		if strings.EqualFold(h.Key, key) {
			return h.Value
		}
	}
	return nil
}

// Stamp returns the headers of an output produced while processing the
// input record whose headers are input, carrying sc as their traceparent,
// so that whoever reads the output continues the trace from the record's
// span. An output that carries a traceparent of its own, other than the
// input's, keeps it: it belongs to another record (one a processor held
// back and releases now). out is never modified; a new slice is returned
// when anything changes.
func Stamp(out, input []topo.Header, sc trace.SpanContext) []topo.Header {
	if !sc.IsValid() {
		return out
	}
	if own := header(out, HeaderTraceParent); own != nil && string(own) != string(header(input, HeaderTraceParent)) {
		return out
	}
	headers := make([]topo.Header, 0, len(out)+2)
	for _, h := range out {
		if !strings.EqualFold(h.Key, HeaderTraceParent) && !strings.EqualFold(h.Key, HeaderTraceState) {
			headers = append(headers, h)
		}
	}
	propagator.Inject(trace.ContextWithSpanContext(context.Background(), sc), headerCarrier{&headers})
	return headers
}

// RecordHint is what a source tells the span of the record it decoded
// (the root package's Source.Trace).
type RecordHint struct {
	// TraceID is the trace of a record that carries no valid traceparent.
	TraceID trace.TraceID
	// Attributes are added to the record's span.
	Attributes []attribute.KeyValue
}

// RecordSpan describes the record a span is started for.
type RecordSpan struct {
	ApplicationID string
	Task          topo.TaskID
	Raw           *topo.Raw
	Hint          RecordHint
}

// StartRecord starts the span of one input record: a consumer span named
// "process <topic>", child of the record's traceparent, or (without one)
// of the hint's trace, with the messaging semantic conventions' attributes
// of the record and the task's id. The attributes are set after the span
// starts, and only on a sampled span: a sampler does not see them, and a
// record that is not sampled costs less.
func StartRecord(tracer trace.Tracer, r RecordSpan) trace.Span {
	ctx := context.Background()
	if parent := Extract(r.Raw.Headers); parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	} else if r.Hint.TraceID.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, producerOf(r.Hint.TraceID))
	}
	_, span := tracer.Start(ctx, "process "+r.Raw.Topic, trace.WithSpanKind(trace.SpanKindConsumer))
	if !span.IsRecording() {
		return span // not sampled: only its context travels on
	}
	span.SetAttributes(
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
		semconv.MessagingDestinationName(r.Raw.Topic),
		semconv.MessagingDestinationPartitionID(strconv.Itoa(int(r.Raw.Partition))),
		semconv.MessagingKafkaOffset(int(r.Raw.Offset)),
		semconv.MessagingConsumerGroupName(r.ApplicationID),
		KeyTask.String(r.Task.String()),
	)
	span.SetAttributes(r.Hint.Attributes...)
	return span
}

// producerOf is the parent of a record's span in the trace id, when only
// the id is known: a remote span that is never exported, standing for
// whoever produced the record. Its span id is derived from the trace id, so
// every record of one trace hangs from the same parent.
func producerOf(id trace.TraceID) trace.SpanContext {
	h := fnv.New64a()
	h.Write(id[:])
	var spanID trace.SpanID
	binary.BigEndian.PutUint64(spanID[:], h.Sum64()|1)
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: id, SpanID: spanID, TraceFlags: trace.FlagsSampled, Remote: true,
	})
}

// RecordFailed marks a record's span with the failure of its processing:
// the reason it was dead-lettered for, or the error that fails its task.
func RecordFailed(span trace.Span, reason string, deadLettered bool, cause error) {
	span.RecordError(cause)
	span.SetStatus(codes.Error, reason)
	if deadLettered {
		span.SetAttributes(KeyDeadLetterReason.String(reason))
	}
}

// Commit describes the commit a span is started for.
type Commit struct {
	ApplicationID string
	// Tasks, Records, Outputs and ChangelogRecords are counted as the
	// KeyCommit* attributes say.
	Tasks, Records, Outputs, ChangelogRecords int
}

// StartCommit starts the span of one commit, named "commit".
func StartCommit(ctx context.Context, tracer trace.Tracer, c Commit) trace.Span {
	_, span := tracer.Start(ctx, "commit", trace.WithAttributes(
		semconv.MessagingSystemKafka,
		semconv.MessagingConsumerGroupName(c.ApplicationID),
		KeyCommitTasks.Int(c.Tasks),
		KeyCommitRecords.Int(c.Records),
		KeyCommitOutputs.Int(c.Outputs),
		KeyCommitChangelogRecords.Int(c.ChangelogRecords),
	))
	return span
}

// EndCommit ends a commit's span with its result (KeyCommitResult) and
// error. An empty result is "committed" without an error and "failed"
// with one.
func EndCommit(span trace.Span, result string, err error) {
	switch {
	case result != "":
	case err != nil:
		result = "failed"
	default:
		result = "committed"
	}
	span.SetAttributes(KeyCommitResult.String(result))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, result)
	}
	span.End()
}
