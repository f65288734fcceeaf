package wire

import "testing"

// The names are a public contract (SPEC Appendix A): consumers in any
// language match on these exact strings.
func TestDeadLetterWireNamesNeverChange(t *testing.T) {
	for got, want := range map[string]string{
		HeaderErrorReason:      "exactly.error.reason",
		HeaderErrorMessage:     "exactly.error.message",
		HeaderSourceTopic:      "exactly.source.topic",
		HeaderSourcePartition:  "exactly.source.partition",
		HeaderSourceOffset:     "exactly.source.offset",
		ReasonDeserialization:  "deserialization-error",
		ReasonInvalidTimestamp: "invalid-timestamp",
		ReasonProcessing:       "processing-error",
		ReasonProduction:       "production-error",
	} {
		if got != want {
			t.Errorf("%q changed; the wire contract says %q", got, want)
		}
	}
}
