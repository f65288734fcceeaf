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

// configError is a failure no retry can cure.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }

func (e *configError) Unwrap() error { return e.err }
