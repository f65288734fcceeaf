// Package kafkaerr classifies the errors Kafka gives a producer, so that
// the stream runtime and the outbox relay agree on which ones no retry can
// cure for a record.
package kafkaerr

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
)

// RefusedForGood reports whether the broker (or franz-go, before sending)
// will refuse a record whatever the retries, because of the record itself:
// too large for the topic or the producer (MESSAGE_TOO_LARGE,
// RECORD_LIST_TOO_LARGE), a timestamp outside the topic's bounds
// (INVALID_TIMESTAMP), or a record the broker finds invalid or corrupt
// (INVALID_RECORD, CORRUPT_MESSAGE). Such a record is dead-lettered with
// the reason production-error.
//
// Errors of the configuration, not of the record, are not among them: a
// topic the producer may not write (TOPIC_AUTHORIZATION_FAILED) or that
// does not exist refuses every record alike, and is fixed by an ACL or a
// topic, after which the same records go through.
//
// A broker refuses a whole batch for one such record: the others of the
// batch, and franz-go fails every record buffered behind it for the same
// partition, get the same error. Only a record sent alone and refused is
// known to be at fault.
func RefusedForGood(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage) || errors.Is(err, kerr.InvalidTimestamp)
}
