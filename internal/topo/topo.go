// Package topo is the type-erased form of a topology: the graph of named
// nodes and stores that package exactly builds from typed parts, validated
// once, split into sub-topologies, and instantiated per task by the task core.
package topo

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/wire"
)

// Kind is the role of a node.
type Kind int

// The node kinds.
const (
	KindSource Kind = iota
	KindProcessor
	KindSink
	KindDeadLetterSink
)

func (k Kind) String() string {
	switch k {
	case KindSource:
		return "Source"
	case KindProcessor:
		return "Processor"
	case KindSink:
		return "Sink"
	default:
		return "Dead-letter sink"
	}
}

// Header is a Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Raw is a record as it was read from a topic partition.
type Raw struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp int64 // epoch milliseconds
}

// Output is a record a task wants produced. Partition -1 leaves the choice
// to the producer's key hashing.
type Output struct {
	Topic     string
	Partition int32
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp int64
	// SourceTopic, SourcePartition and SourceOffset name the input record
	// whose processing produced the output; SourceTopic is "" for outputs
	// of punctuators.
	SourceTopic     string
	SourcePartition int32
	SourceOffset    int64
}

// PunctuationType says which clock drives a punctuator.
type PunctuationType int

// The clocks a punctuator can follow.
const (
	StreamTime PunctuationType = iota
	WallClockTime
)

func (p PunctuationType) String() string {
	if p == StreamTime {
		return "STREAM_TIME"
	}
	return "WALL_CLOCK_TIME"
}

// ErrorAction is what a task does with a record it cannot process.
type ErrorAction int

// The error actions.
const (
	// Fail stops the task with an error naming the record.
	Fail ErrorAction = iota
	// DeadLetter sends the record's original bytes to a dead-letter sink and
	// goes on with the next record.
	DeadLetter
)

// DeadLetterRecord describes a record to send to a dead-letter sink.
type DeadLetterRecord struct {
	Reason  string
	Message string
	Source  *Raw // the original record; nil means the record being processed
}

// Runtime is what a task gives its node instances.
type Runtime interface {
	ApplicationID() string
	TaskID() TaskID
	// StreamTime is the task's stream time in epoch ms (math.MinInt64 before
	// the first record).
	StreamTime() int64
	// RecordTime is the timestamp of the record being processed, or of the
	// punctuation being run.
	RecordTime() int64
	// Source is the input record being processed, nil during punctuation.
	Source() *Raw
	// Fail records the first error of the record being processed.
	Fail(node string, err error)
	// Failed reports whether the record being processed has failed.
	Failed() bool
	// Emit queues an output record of the current transaction.
	Emit(out Output)
	// DeadLetter sends a record to the dead-letter sinks that are children of
	// node.
	DeadLetter(node string, rec DeadLetterRecord) error
	// Store opens a store connected to node.
	Store(node, name string) (*store.KV, *StoreSpec, error)
	// Schedule registers a punctuator.
	Schedule(node string, interval time.Duration, typ PunctuationType, fn func(ts int64) error) (Cancellable, error)
	// PartitionCount returns the number of partitions of a topic.
	PartitionCount(topic string) (int32, error)
	// CountOnCommit adds n to c once the commit holding the current record
	// or punctuation succeeds; an abort or the record's failure drops it.
	CountOnCommit(c Adder, n float64)
	// Span is the span of the input record being processed; a span that
	// records nothing when tracing is off or no record is processed.
	Span() trace.Span
}

// Adder is a counter that CountOnCommit advances, such as a
// prometheus.Counter.
type Adder interface{ Add(float64) }

// Cancellable cancels a scheduled punctuator.
type Cancellable interface{ Cancel() }

// Instance is a node instantiated inside one task.
type Instance interface {
	// Handler is the typed function the node's parents call; a parent
	// asserts it to the type it forwards.
	Handler() any
	Init() error
	Close() error
}

// Child is an instantiated child node.
type Child struct {
	Name     string
	Kind     Kind
	Instance Instance
}

// SourceInstance is an instantiated source node.
type SourceInstance interface {
	Instance
	// Decode deserializes raw and extracts its timestamp, keeping the
	// decoded record for Deliver. A *DecodeError says why it failed.
	Decode(raw *Raw) (timestamp int64, err error)
	// Deliver forwards the last decoded record to the children.
	Deliver()
	// Trace says what the last decoded record tells of its trace, for the
	// record's span; called only while tracing is on, between Decode and
	// Deliver. The zero TraceID and no attributes when it tells nothing.
	Trace() (trace.TraceID, []attribute.KeyValue)
}

// DecodeError is a record that could not be deserialized or timestamped.
type DecodeError struct {
	Reason string // wire.ReasonDeserialization or wire.ReasonInvalidTimestamp
	Err    error
}

func (e *DecodeError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

// Node is one node of a topology, as package exactly declares it.
type Node interface {
	Name() string
	Kind() Kind
	Parents() []string
	// Topics are a source's topics, or a sink's one topic.
	Topics() []string
	// InTypes and OutTypes are the key and value types the node takes and
	// forwards (nil where it has none); Build checks every edge with them.
	InTypes() (key, value reflect.Type)
	OutTypes() (key, value reflect.Type)
	// Instantiate creates the node's instance for one task, given its
	// children's instances in declaration order.
	Instantiate(rt Runtime, children []Child) (Instance, error)
}

// StoreSpec declares a state store.
type StoreSpec struct {
	Name       string
	Persistent bool
	Logged     bool
	Options    store.Options
	Keys       any // serde.Serde[K]
	Values     any // serde.Serde[V]
	KeyType    reflect.Type
	ValueType  reflect.Type
	Processors []string
	// GlobalTopic, when set, makes the store global: every instance holds
	// all partitions of this topic in it, key for key and value for value
	// (a null value deletes), bootstrapped before processing and updated
	// while running. Its processors only read it; it has no changelog (the
	// topic is its changelog) and belongs to no sub-topology. Persistent
	// keeps it on disk with a checkpoint per partition of the topic.
	GlobalTopic string
}

// TaskID names a task: a sub-topology and the partition it processes.
type TaskID struct {
	Subtopology int
	Partition   int32
}

func (id TaskID) String() string { return fmt.Sprintf("%d_%d", id.Subtopology, id.Partition) }

// ChangelogTopic is the topic a store's changes are logged to.
func ChangelogTopic(applicationID, store string) string {
	return applicationID + "-" + store + "-changelog"
}

// DecodeErrorReason returns the dead-letter reason of a decoding failure.
func DecodeErrorReason(err error) string {
	var de *DecodeError
	if errors.As(err, &de) {
		return de.Reason
	}
	return wire.ReasonDeserialization
}
