package sideeffect

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Dead-letter reasons given by the processor itself.
const (
	// ReasonPermanentFailure is the reason of a permanent error that names
	// none (see Permanent).
	ReasonPermanentFailure = "permanent-failure"
	// ReasonRetriesExhausted is the reason of an event whose call still
	// failed transiently when Retry.For ran out, under GiveUpDeadLetter.
	ReasonRetriesExhausted = "retries-exhausted"
)

// ErrRetriesExhausted is wrapped by the error a processor returns, under
// GiveUpFail, for an event whose call still failed transiently when
// Retry.For ran out.
var ErrRetriesExhausted = errors.New("sideeffect: transient errors outlasted the retry budget")

// ErrEmptyKey is returned (as a processing error) for an event whose
// idempotency key is empty: calling without a key could not be made safe.
var ErrEmptyKey = errors.New("sideeffect: event has an empty idempotency key")

// PermanentError marks a call's failure as permanent: retrying the same
// call cannot succeed (a declined card, a rejected request). The event goes
// to the dead-letter sinks with Reason, and its key is recorded so that
// copies of it are skipped.
type PermanentError struct {
	// Reason is the dead-letter reason, short and stable, e.g.
	// "payment-declined"; empty means ReasonPermanentFailure.
	Reason string
	// Err is the failure itself, named in the dead letter's message.
	Err error
}

// Error names the reason and the failure.
func (e *PermanentError) Error() string {
	if e.Reason == "" {
		return e.Err.Error()
	}
	return e.Reason + ": " + e.Err.Error()
}

// Unwrap returns Err.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a permanent failure with a dead-letter reason. Any
// error a Call returns that does not wrap a *PermanentError is transient
// and retried.
func Permanent(reason string, err error) error {
	if err == nil {
		err = errors.New(reason)
	}
	return &PermanentError{Reason: reason, Err: err}
}

// Retry bounds how transient failures are retried within one event.
// Attempts back off exponentially from Initial to Max with full jitter,
// for at most For in all.
//
// The task's transaction stays open while an event is retried, so keep For
// plus AttemptTimeout below the application's TransactionTimeout (default
// 10 s): past it the broker aborts the transaction, the runtime rewinds to
// the last commit, and the events are processed again (correctly, as their
// keys were not recorded, but the work is lost).
type Retry struct {
	// Initial is the first backoff; default 50 ms.
	Initial time.Duration
	// Max caps one backoff; default 1 s.
	Max time.Duration
	// For is the retry budget of one event, measured from its first
	// attempt; default 5 s. When it runs out the processor gives up as
	// GiveUp says.
	For time.Duration
	// AttemptTimeout bounds one call; default 2 s. A call that times out
	// is a transient failure.
	AttemptTimeout time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Initial <= 0 {
		r.Initial = 50 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = time.Second
	}
	if r.For <= 0 {
		r.For = 5 * time.Second
	}
	if r.AttemptTimeout <= 0 {
		r.AttemptTimeout = 2 * time.Second
	}
	return r
}

// outcome is how the calls for one event ended.
type outcome[R any] struct {
	result    R
	err       error // nil on success
	permanent *PermanentError
	attempts  int
	// deferred: the flush's deadline came before the event was done; it
	// stays pending for the next flush.
	deferred bool
}

// execute calls until success, a permanent failure, or the retry budget is
// spent; within a flush, also until flushDeadline (zero: none), after which
// no new attempt starts. It never records anything: that is the caller's,
// on the task's goroutine.
func execute[K, V, R any](ctx context.Context, p *processor[K, V, R], idemKey string, key K, value V, flushDeadline time.Time) outcome[R] {
	retry := p.opts.Retry
	start := time.Now()
	backoff := retry.Initial
	var o outcome[R]
	for {
		if !flushDeadline.IsZero() && time.Now().After(flushDeadline) {
			o.deferred = true
			return o
		}
		o.attempts++
		attemptCtx, cancel := context.WithTimeout(ctx, retry.AttemptTimeout)
		began := time.Now()
		p.metrics.inFlight(1)
		r, err := p.opts.Call(attemptCtx, idemKey, key, value)
		p.metrics.inFlight(-1)
		cancel()
		p.metrics.observe(time.Since(began))
		if err == nil {
			p.metrics.call("success")
			o.result, o.err = r, nil
			return o
		}
		var perm *PermanentError
		if errors.As(err, &perm) {
			p.metrics.call("permanent")
			if perm.Reason == "" {
				perm = &PermanentError{Reason: ReasonPermanentFailure, Err: perm.Err}
			}
			o.err, o.permanent = err, perm
			return o
		}
		p.metrics.call("transient")
		o.err = err
		wait := rand.N(backoff) + 1
		if ctx.Err() != nil || time.Since(start)+wait > retry.For {
			o.err = fmt.Errorf("%w after %d attempts in %v: %w", ErrRetriesExhausted, o.attempts, time.Since(start).Round(time.Millisecond), err)
			return o
		}
		p.metrics.retry()
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		backoff = min(2*backoff, retry.Max)
	}
}
