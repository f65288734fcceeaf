package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// EventKind is what an event of the schedule does.
type EventKind int

// The kinds of event.
const (
	// Kill delivers SIGKILL to a running instance and starts it again
	// after RestartDelay, with the same slot, state directory and id.
	Kill EventKind = iota
	// Freeze delivers SIGSTOP to a running instance and SIGCONT after
	// ZombieFor: past its session timeout the group gives its partitions
	// to others, and the thawed zombie must be fenced.
	Freeze
	// BrokerRestart delivers SIGKILL to the broker and starts it again on
	// the same port and data directory after BrokerDowntime.
	BrokerRestart
	// AddInstance starts an instance in a free slot.
	AddInstance
	// RemoveInstance stops a running instance gracefully (SIGTERM).
	RemoveInstance
)

// String names the kind as events.log does.
func (k EventKind) String() string {
	switch k {
	case Kill:
		return "kill"
	case Freeze:
		return "freeze"
	case BrokerRestart:
		return "broker-restart"
	case AddInstance:
		return "add-instance"
	case RemoveInstance:
		return "remove-instance"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one step of a schedule.
type Event struct {
	// At is the time since the start of the run.
	At   time.Duration
	Kind EventKind
	// Pick chooses the instance among those the event can act on when it
	// happens (the running ones, or the free slots), as Pick modulo their
	// number.
	Pick uint64
}

// String gives the event's planned time and kind, as --dry-run prints it.
func (e Event) String() string {
	return fmt.Sprintf("%9s %s", e.At.Round(time.Millisecond), e.Kind)
}

// Schedule returns the run's events in time order: a pure function of
// Seed, Duration, the event counts and the instance bounds. Each kind's
// events are spread evenly over Duration, each within the middle half of
// its share, so that two of a kind are between half and one and a half
// shares apart.
func (c Config) Schedule() []Event {
	c, _ = c.withDefaults()
	rng := rand.New(rand.NewPCG(c.Seed, 0x6368616f73))
	var events []Event
	spread := func(n int, kind func(i int) EventKind) {
		if n == 0 {
			return
		}
		share := c.Duration / time.Duration(n)
		for i := range n {
			jitter := time.Duration(rng.Int64N(int64(share/2) + 1))
			events = append(events, Event{At: share*time.Duration(i) + share/4 + jitter, Kind: kind(i), Pick: rng.Uint64()})
		}
	}
	spread(c.Kills, func(int) EventKind { return Kill })
	spread(c.Zombies, func(int) EventKind { return Freeze })
	spread(c.BrokerRestarts, func(int) EventKind { return BrokerRestart })
	// Churn keeps the running count between its bounds: it adds when at
	// the floor, removes when at the ceiling, and tosses a coin between.
	running, floor := c.Instances, max(1, c.Instances-1)
	spread(c.Churn, func(int) EventKind {
		if running == floor || running < c.MaxInstances && rng.IntN(2) == 0 {
			running++
			return AddInstance
		}
		running--
		return RemoveInstance
	})
	slices.SortStableFunc(events, func(a, b Event) int { return int(a.At - b.At) })
	return events
}
