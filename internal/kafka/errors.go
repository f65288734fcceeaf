package kafka

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func isFatalFetchError(err error) bool {
	return errors.Is(err, kgo.ErrClientClosed)
}

// configFetchError turns a group error no rejoin can cure into a
// configError that says what to change.
func configFetchError(err error) error {
	switch {
	case errors.Is(err, kerr.InvalidSessionTimeout):
		return &configError{fmt.Errorf("the broker refuses the session timeout (group.min/max.session.timeout.ms): change SessionTimeout: %w", err)}
	case errors.Is(err, kerr.GroupAuthorizationFailed), errors.Is(err, kerr.TopicAuthorizationFailed),
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed), errors.Is(err, kerr.SaslAuthenticationFailed):
		return &configError{fmt.Errorf("not authorized: check the credentials and ACLs: %w", err)}
	}
	return nil
}

// refusedError is a record the broker refuses for good that no input
// record can answer for; retrying cannot help.
type refusedError struct {
	what, topic string
	size        int
	err         error
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("the broker refuses %s of %d bytes to %s: %v", e.what, e.size, e.topic, e.err)
}

func (e *refusedError) Unwrap() error { return e.err }

// configError is a failure no retry can cure.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }

func (e *configError) Unwrap() error { return e.err }
