package kafka

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/exactly-go/exactly/internal/task"
)

// State is an instance's state, with Kafka Streams' names.
type State int

// The states of an instance. Created → Rebalancing ⇄ Running, and at the
// end Stopped (a clean stop) or Error (a fatal error stopped it).
const (
	StateCreated State = iota
	// StateRebalancing: a worker is joining the group or restoring the
	// stores of tasks it was just assigned.
	StateRebalancing
	// StateRunning: every worker processes its tasks.
	StateRunning
	// StateError: a fatal error stopped the instance; Run returns it.
	StateError
	// StateStopped: Run returned after a clean stop.
	StateStopped
)

func (s State) String() string {
	switch s {
	case StateCreated:
		return "created"
	case StateRebalancing:
		return "rebalancing"
	case StateRunning:
		return "running"
	case StateError:
		return "error"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// FatalErrorAction is what an instance does when a worker fails in a way
// that rejoining the group cannot cure (Kafka Streams' uncaught-exception
// handler): a record that fails under FailOnError, a punctuator that
// returns an error or panics, an output the broker refuses that no input
// record answers for, a state directory without free space.
type FatalErrorAction int

// The fatal-error actions.
const (
	// ShutdownInstance stops this instance: Run returns the error. The
	// other instances take its tasks over (and meet the same record).
	ShutdownInstance FatalErrorAction = iota
	// ReplaceWorker starts the worker again with a new group membership,
	// after a backoff that doubles from one second, at most
	// MaxWorkerReplacements times; then the instance stops as with
	// ShutdownInstance. It suits failures that may pass (a punctuator
	// calling a service that is down); a record that fails every time
	// fails again.
	ReplaceWorker
	// ShutdownApplication stops every instance of the application: this
	// one asks through its group subscription, the group's leader hands
	// every member the shutdown, and each Run returns an
	// *ApplicationShutdownError.
	ShutdownApplication
)

// ApplicationShutdownError is what Run returns on an instance that stopped
// because an instance of the application asked every instance to stop
// (ShutdownApplication).
type ApplicationShutdownError struct {
	// Cause is the fatal error that made this instance ask; nil on the
	// instances that were asked.
	Cause error
}

func (e *ApplicationShutdownError) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("application shut down by this instance: %v", e.Cause)
	}
	return "application shut down at the request of another instance (see its log for the cause)"
}

func (e *ApplicationShutdownError) Unwrap() error { return e.Cause }

// isFatal reports whether err stops a worker for good: rejoining the group
// would meet it again.
func isFatal(err error) bool {
	var re *task.RecordError
	var pe *task.PunctuatorError
	var fe *refusedError
	var se *ApplicationShutdownError
	return errors.As(err, &re) || errors.As(err, &pe) || errors.As(err, &fe) || errors.As(err, &se) ||
		errors.Is(err, syscall.ENOSPC) // a full disk: rejoining cannot free it
}

// lifecycle tracks the instance's state from its workers' states and tells
// the listener of every change, in order.
type lifecycle struct {
	mu       sync.Mutex
	state    State
	workers  []State // StateRebalancing or StateRunning per worker
	listener func(old, new State)
}

func (l *lifecycle) set(s State) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.setLocked(s)
}

func (l *lifecycle) setLocked(s State) {
	if s == l.state || l.state == StateError || l.state == StateStopped {
		return
	}
	old := l.state
	l.state = s
	if l.listener != nil {
		l.listener(old, s)
	}
}

// worker records one worker's state; the instance runs when all do.
func (l *lifecycle) worker(i int, s State) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i >= len(l.workers) || l.workers[i] == s {
		return
	}
	l.workers[i] = s
	instance := StateRunning
	for _, w := range l.workers {
		if w != StateRunning {
			instance = StateRebalancing
		}
	}
	l.setLocked(instance)
}

func (l *lifecycle) current() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// rebalancing marks the worker rebalancing: joining the group or restoring
// newly assigned tasks.
func (w *worker) rebalancing() {
	w.rebalancingSince.CompareAndSwap(0, time.Now().UnixNano())
	w.r.life.worker(w.index, StateRebalancing)
}

// running marks the worker processing again, and observes how long the
// rebalance took.
func (w *worker) running() {
	if since := w.rebalancingSince.Swap(0); since != 0 {
		w.r.metrics.rebalanceDuration.Observe(time.Since(time.Unix(0, since)).Seconds())
	}
	w.r.life.worker(w.index, StateRunning)
}
