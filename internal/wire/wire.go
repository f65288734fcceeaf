// Package wire defines the dead-letter wire format, the one contract every
// consumer of a dead-letter topic reads (SPEC Appendix A): the names of the
// headers a dead letter carries and the reasons the runtime itself gives.
// The task core writes them, the root package re-exports them to users,
// and the verifiers read them; all take them from here. The values are
// public and must never change.
package wire

// The headers of a dead-letter record, added after the original record's
// own headers. The record's key and value are the original bytes.
const (
	// HeaderErrorReason is a short, stable, machine-readable cause.
	HeaderErrorReason = "exactly.error.reason"
	// HeaderErrorMessage says what went wrong, for a person.
	HeaderErrorMessage = "exactly.error.message"
	// HeaderSourceTopic is the topic the original record was read from.
	HeaderSourceTopic = "exactly.source.topic"
	// HeaderSourcePartition is its partition, in decimal.
	HeaderSourcePartition = "exactly.source.partition"
	// HeaderSourceOffset is its offset, in decimal.
	HeaderSourceOffset = "exactly.source.offset"
)

// The reasons the runtime itself gives dead-letter records.
const (
	// ReasonDeserialization: the key or value could not be deserialized.
	ReasonDeserialization = "deserialization-error"
	// ReasonInvalidTimestamp: the timestamp could not be extracted, or is
	// before the epoch.
	ReasonInvalidTimestamp = "invalid-timestamp"
	// ReasonProcessing: a processor returned an error or panicked, or a
	// sink could not serialize what it was given.
	ReasonProcessing = "processing-error"
	// ReasonProduction: the broker refused one of the record's outputs for
	// good.
	ReasonProduction = "production-error"
)
