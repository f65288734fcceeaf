package exactly

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/exactly-go/exactly/internal/kafka"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/serde"
)

// App runs a topology as one instance of an application. Start more
// instances with the same ApplicationID to share the partitions; Kafka's
// consumer group moves tasks between them.
type App struct {
	runner   *kafka.Runner
	topology *topo.Topology

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// New prepares an instance of an application running t; it does not
// contact the cluster until Run. An invalid cfg gives a *[ConfigError]
// saying what to change.
func New(t *Topology, cfg Config) (*App, error) {
	r, err := kafka.New(t.t, cfg.runtimeConfig())
	if err != nil {
		return nil, err
	}
	return &App{runner: r, topology: t.t}, nil
}

// Run processes until ctx is cancelled or Close is called, then commits
// what is pending, closes the stores and leaves the group (a static member
// stays, unless LeaveGroupOnClose). It returns the error that stopped it, if
// any, which callers can tell apart with errors.Is and errors.As: an error
// wrapping [ErrStateDirLocked] when another instance holds the state
// directory, a *[ConfigError] when the cluster refuses the configuration, a
// *[RecordError] or *[PunctuatorError] after a fatal failure (see
// Config.OnFatalError), an *[ApplicationShutdownError] when the application
// was shut down.
func (a *App) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	a.mu.Lock()
	a.cancel, a.done = cancel, done
	a.mu.Unlock()
	defer close(done)
	defer cancel()
	return a.runner.Run(ctx)
}

// Ready is closed once the instance has joined the group and restored the
// stores of its first assignment.
func (a *App) Ready() <-chan struct{} { return a.runner.Ready() }

// Close stops a running Run and waits for it to return.
func (a *App) Close() error {
	a.mu.Lock()
	cancel, done := a.cancel, a.done
	a.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}

// NotLocalError is returned by queries for a key whose partition another
// instance holds; Host is that instance's Config.ApplicationServer when
// the latest rebalance named one.
type NotLocalError = kafka.NotLocalError

// Query reads key from the committed contents of store as held by this
// instance (interactive queries). A key whose partition another instance
// holds gives a *NotLocalError with the holder's address; a key of a
// partition this instance is restoring gives ErrRestoring. Writes still in
// an open transaction are never visible. No request leaves the process.
func Query[K, V any](ctx context.Context, app *App, store string, key K) (V, bool, error) {
	var zero V
	spec, ok := app.topology.Store(store)
	if !ok {
		return zero, false, fmt.Errorf("unknown store %q", store)
	}
	keys, ok1 := spec.Keys.(serde.Serde[K])
	values, ok2 := spec.Values.(serde.Serde[V])
	if !ok1 || !ok2 {
		return zero, false, fmt.Errorf("store %q holds %s -> %s", store, spec.KeyType, spec.ValueType)
	}
	kb, err := keys.Serialize(key)
	if err != nil {
		return zero, false, err
	}
	vb, found, err := app.runner.Get(ctx, store, kb)
	if err != nil || !found {
		return zero, false, err
	}
	v, err := values.Deserialize(vb)
	return v, err == nil, err
}

// QueryOptions choose where QueryWith may find its answer. The zero value
// asks the key's active task only, as Query does.
type QueryOptions struct {
	// AllowStandby lets this instance answer from its standby copy of the
	// key's partition (Config.StandbyReplicas) when it does not run the
	// partition's task: the committed state of the copy, which trails the
	// active by QueryResult.Lag changelog records. It serves reads while the
	// active instance is away or restoring, and spreads them; default
	// false.
	AllowStandby bool
}

// QueryResult is the answer of QueryWith.
type QueryResult[V any] struct {
	// Value is the key's value; Found is false when the store has none.
	Value V
	Found bool
	// Standby is true when a standby copy answered; Lag is then the number
	// of changelog records it was behind the changelog's read_committed
	// end at its last fetch (0: caught up), and 0 for an active answer.
	Standby bool
	Lag     int64
}

// QueryWith reads key from store as Query does, and with
// opts.AllowStandby from this instance's standby copy of the key's
// partition when it does not run the partition's task, saying so and how
// far the copy trails. Without an answer here it returns Query's errors: a
// *NotLocalError naming the active's address, or ErrRestoring.
func QueryWith[K, V any](ctx context.Context, app *App, store string, key K, opts QueryOptions) (QueryResult[V], error) {
	var res QueryResult[V]
	keys, values, err := storeSerdes[K, V](app, store)
	if err != nil {
		return res, err
	}
	kb, err := keys.Serialize(key)
	if err != nil {
		return res, err
	}
	vb, found, err := app.runner.Get(ctx, store, kb)
	var notLocal *NotLocalError
	if opts.AllowStandby && errors.As(err, &notLocal) {
		// A standby that is not here, or is opening, leaves the answer to
		// the active: the *NotLocalError names it.
		if svb, sfound, lag, serr := app.runner.GetStandby(ctx, store, kb); serr == nil {
			vb, found, err = svb, sfound, nil
			res.Standby, res.Lag = true, lag
		}
	}
	if err != nil || !found {
		return QueryResult[V]{Standby: res.Standby, Lag: res.Lag}, err
	}
	res.Value, err = values.Deserialize(vb)
	res.Found = err == nil
	return res, err
}

// State is an instance's state (Kafka Streams' KafkaStreams.State):
// [StateCreated] → [StateRebalancing] ⇄ [StateRunning], then [StateStopped]
// after a clean stop or [StateError] after a fatal error. Its String method
// gives the lower-case name ("running"). Config.StateListener is told every
// change; [App.State] reads the current one.
type State = kafka.State

// The states of an instance.
const (
	// StateCreated: Run has not started.
	StateCreated = kafka.StateCreated
	// StateRebalancing: a worker is joining the group or restoring the
	// stores of tasks it was just assigned.
	StateRebalancing = kafka.StateRebalancing
	// StateRunning: every worker processes its tasks.
	StateRunning = kafka.StateRunning
	// StateError: a fatal error stopped the instance; Run returns it.
	StateError = kafka.StateError
	// StateStopped: Run returned after a clean stop.
	StateStopped = kafka.StateStopped
)

// State is the instance's current state.
func (a *App) State() State { return a.runner.State() }

// Healthy returns nil while the instance is healthy, and an error saying
// why not while one of its workers is stalled (processed records stayed
// uncommitted longer than Config.StallTimeout; the worker is restarted and
// the instance is healthy again once it commits) or after a fatal error.
func (a *App) Healthy() error { return a.runner.Healthy() }
