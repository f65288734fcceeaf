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

// configFetchError turns an error of the group or of the cluster that no
// retry can cure (a refused session timeout, missing authorization) into a
// *ConfigError that says what to change, and returns nil for any other.
func configFetchError(err error) error {
	switch {
	case errors.Is(err, kerr.InvalidSessionTimeout):
		return &ConfigError{fmt.Errorf("the broker refuses the session timeout (group.min/max.session.timeout.ms): change SessionTimeout: %w", err)}
	case errors.Is(err, kerr.GroupAuthorizationFailed), errors.Is(err, kerr.TopicAuthorizationFailed),
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed), errors.Is(err, kerr.SaslAuthenticationFailed):
		return &ConfigError{fmt.Errorf("not authorized: check the credentials and ACLs: %w", err)}
	case errors.Is(err, kerr.FencedInstanceID):
		// Rejoining would fence the other instance in turn, and so on.
		return &ConfigError{fmt.Errorf("another instance joined the group with this InstanceID and took its place: give each instance its own InstanceID: %w", err)}
	}
	return nil
}

// fenced reports whether err says that a newer producer or group member
// took this one's place.
func fenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.FencedInstanceID)
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

// ConfigError is a configuration no retry can cure: one New refuses, or
// one the cluster refuses. Its message says what to change.
type ConfigError struct{ err error }

// Error returns the message, which names what to change.
func (e *ConfigError) Error() string { return e.err.Error() }

// Unwrap returns the underlying error, such as the broker's.
func (e *ConfigError) Unwrap() error { return e.err }

// ErrStateDirLocked is wrapped by Run's error when another instance holds
// the application's state directory.
var ErrStateDirLocked = errors.New("the state directory is in use by another instance")
