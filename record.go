package exactly

import (
	"time"

	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/internal/wire"
)

// Record is a typed record flowing through a topology. A processor that
// forwards a copy of its input keeps the input's timestamp and headers; a
// zero Timestamp is replaced by the timestamp of the record (or punctuation)
// being processed.
type Record[K, V any] struct {
	Key       K
	Value     V
	Timestamp time.Time
	Headers   []Header
}

// Header is a Kafka record header: a Key string and a Value []byte. Headers
// of an input record reach the processors as they were read, and a sink
// writes a record's headers as they are.
//
// It is an alias of the runtime's header type so that records carry their
// headers from the consumer to the processors and on to the producer
// without a copy per record.
type Header = topo.Header

// SourceRecord is an input record as it was read: its position and its
// original bytes. Processors keep it to dead-letter a record later (for
// example one that waited in a buffer).
type SourceRecord struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time
}

func sourceRecordOf(r *topo.Raw) SourceRecord {
	return SourceRecord{
		Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
		Key: r.Key, Value: r.Value, Headers: r.Headers,
		Timestamp: time.UnixMilli(r.Timestamp),
	}
}

func (s SourceRecord) raw() *topo.Raw {
	return &topo.Raw{
		Topic: s.Topic, Partition: s.Partition, Offset: s.Offset,
		Key: s.Key, Value: s.Value, Headers: s.Headers,
		Timestamp: s.Timestamp.UnixMilli(),
	}
}

// DeadLetter describes a record sent to a dead-letter topic. The record
// carries the original key and value bytes and the headers
// HeaderErrorReason, HeaderErrorMessage, HeaderSourceTopic,
// HeaderSourcePartition and HeaderSourceOffset.
type DeadLetter struct {
	// Reason is a short, stable, machine-readable cause, e.g.
	// "buffer-ttl-expired" or "malformed".
	Reason string
	// Message says what went wrong, for a person.
	Message string
	// Source is the record to dead-letter; nil means the input record being
	// processed.
	Source *SourceRecord
}

// The headers of a dead-letter record, added after the original record's
// own headers; the key and value are the original bytes. They are a public
// wire contract: the names never change.
const (
	// HeaderErrorReason is a short, stable, machine-readable cause
	// (DeadLetter.Reason).
	HeaderErrorReason = wire.HeaderErrorReason
	// HeaderErrorMessage says what went wrong, for a person
	// (DeadLetter.Message).
	HeaderErrorMessage = wire.HeaderErrorMessage
	// HeaderSourceTopic is the topic the original record was read from.
	HeaderSourceTopic = wire.HeaderSourceTopic
	// HeaderSourcePartition is its partition, in decimal.
	HeaderSourcePartition = wire.HeaderSourcePartition
	// HeaderSourceOffset is its offset, in decimal.
	HeaderSourceOffset = wire.HeaderSourceOffset
)

// Reasons the runtime itself gives dead-letter records.
const (
	// ReasonDeserialization: the key or value could not be deserialized.
	ReasonDeserialization = wire.ReasonDeserialization
	// ReasonInvalidTimestamp: the source's Timestamp failed, or gave a
	// time before the epoch.
	ReasonInvalidTimestamp = wire.ReasonInvalidTimestamp
	// ReasonProcessing: a processor returned an error or panicked, or a
	// sink could not serialize what it was given (OnProcessingError).
	ReasonProcessing = wire.ReasonProcessing
	// ReasonProduction: the broker refused one of the record's outputs
	// for good (OnProductionError).
	ReasonProduction = wire.ReasonProduction
)

// PunctuationType chooses the clock a punctuator follows.
type PunctuationType = topo.PunctuationType

// The punctuation clocks.
const (
	// StreamTime punctuators fire when the task's stream time (the largest
	// record timestamp it has seen) reaches each multiple of the interval;
	// they fire once when a jump passes several.
	StreamTime = topo.StreamTime
	// WallClockTime punctuators fire as the wall clock passes each interval;
	// in the test driver, only when the driver advances it.
	WallClockTime = topo.WallClockTime
)

// Punctuator is called with the time it fires at. It runs inside the task's
// transaction: its store writes and forwarded records commit or abort with
// the records around it.
type Punctuator func(timestamp time.Time) error

// Cancellable stops a scheduled punctuator.
type Cancellable = topo.Cancellable

// TaskID names a task: the sub-topology it runs (Subtopology, an int
// numbered as in [Topology.Describe]) and the partition of that
// sub-topology's source topics it processes (Partition, an int32). Its
// String method gives Kafka Streams' form, "1_3" for sub-topology 1,
// partition 3. It is a comparable value, fit for a map key.
type TaskID = topo.TaskID

// ErrorAction chooses what happens to a record that fails.
type ErrorAction = topo.ErrorAction

// The error actions.
const (
	// FailOnError stops the task with an error naming the record's topic,
	// partition and offset; nothing after it is processed.
	FailOnError = topo.Fail
	// DeadLetterOnError sends the record's original bytes to a dead-letter
	// sink, undoes any partial effect of the record, and continues.
	DeadLetterOnError = topo.DeadLetter
)

// RecordError is returned when a record fails and the topology is set to
// FailOnError: its fields name the record (Topic, Partition, Offset), the
// node that failed (Node), the dead-letter reason it would have had
// (Reason, such as [ReasonProcessing]) and the error (Err, which Unwrap
// returns). It is a fatal error (Config.OnFatalError).
type RecordError = task.RecordError
