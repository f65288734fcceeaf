package exactly

import (
	"context"
	"fmt"
	"sync"

	"github.com/exactly-go/exactly/internal/kafka"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/serde"
)

// Config configures an application on Kafka. See the field comments for
// defaults; Brokers and ApplicationID are required.
type Config = kafka.Config

// Guarantee is a processing guarantee: ExactlyOnceV2 or AtLeastOnce.
type Guarantee = kafka.Guarantee

// SASL holds SASL credentials (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
type SASL = kafka.SASL

// The processing guarantees.
const (
	// ExactlyOnceV2 commits each interval's outputs, changelog records and
	// input offsets in one Kafka transaction (KIP-447 fencing through the
	// consumer group), reading input read_committed.
	ExactlyOnceV2 = kafka.ExactlyOnceV2
	// AtLeastOnce produces outputs and changelog records, waits for their
	// acknowledgement, then commits input offsets.
	AtLeastOnce = kafka.AtLeastOnce
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

// New prepares an application; it does not contact the cluster until Run.
func New(t *Topology, cfg Config) (*App, error) {
	r, err := kafka.New(t.t, cfg)
	if err != nil {
		return nil, err
	}
	return &App{runner: r, topology: t.t}, nil
}

// Run processes until ctx is cancelled or Close is called, then commits
// what is pending, closes the stores and leaves the group (a static member
// stays, unless LeaveGroupOnClose). It returns the error that stopped it, if
// any: a record that failed under FailOnError, or a state directory in use.
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

// State is an instance's state (Kafka Streams' KafkaStreams.State):
// StateCreated → StateRebalancing ⇄ StateRunning, then StateStopped after
// a clean stop or StateError after a fatal error.
type State = kafka.State

// The states of an instance.
const (
	StateCreated     = kafka.StateCreated
	StateRebalancing = kafka.StateRebalancing
	StateRunning     = kafka.StateRunning
	StateError       = kafka.StateError
	StateStopped     = kafka.StateStopped
)

// FatalErrorAction is what an instance does when a worker fails in a way
// rejoining the group cannot cure (Config.OnFatalError).
type FatalErrorAction = kafka.FatalErrorAction

// The fatal-error actions.
const (
	// ShutdownInstance stops this instance; Run returns the error.
	ShutdownInstance = kafka.ShutdownInstance
	// ReplaceWorker starts the failed worker again, with a backoff, at most
	// Config.MaxWorkerReplacements times, then stops the instance.
	ReplaceWorker = kafka.ReplaceWorker
	// ShutdownApplication stops every instance of the application through
	// the consumer group; each Run returns an *ApplicationShutdownError.
	ShutdownApplication = kafka.ShutdownApplication
)

// ApplicationShutdownError is returned by Run on every instance when one
// instance's fatal error shut the application down (ShutdownApplication).
type ApplicationShutdownError = kafka.ApplicationShutdownError

// PunctuatorError is a punctuator that returned an error or panicked; it
// is a fatal error (Config.OnFatalError).
type PunctuatorError = task.PunctuatorError

// State is the instance's current state.
func (a *App) State() State { return a.runner.State() }

// Healthy returns nil while the instance is healthy, and an error saying
// why not while one of its workers is stalled (processed records stayed
// uncommitted longer than Config.StallTimeout; the worker is restarted and
// the instance is healthy again once it commits) or after a fatal error.
func (a *App) Healthy() error { return a.runner.Healthy() }
