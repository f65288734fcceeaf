package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// carryOut carries out events at their times, each in a goroutine of its
// own, and returns when every one has finished. While a broker kill waits
// for a quiet moment, the schedule waits too, and the rest of it is put
// off by as long, as the input is.
func (h *harness) carryOut(ctx context.Context, start time.Time, events []Event) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, ev := range events {
		if !sleep(ctx, time.Until(start.Add(ev.At))) {
			return
		}
		held := time.Now()
		// Wait while a quiet-only event (a broker restart) holds the lock.
		h.quiet.RLock()
		h.quiet.RUnlock() //lint:ignore SA2001 the empty section waits for the writer

		start = start.Add(time.Since(held))
		wg.Go(func() { h.do(ctx, ev) })
	}
}

// do carries out one event.
func (h *harness) do(ctx context.Context, ev Event) {
	if ev.Kind == BrokerRestart {
		h.restartBroker(ctx, ev)
		return
	}
	h.quiet.RLock()
	defer h.quiet.RUnlock()
	if ev.Kind == AddInstance {
		h.addInstance(ctx, ev)
		return
	}
	i, ok := h.claim(ctx, ev.Pick, func(s slot) bool { return s.live })
	if !ok {
		h.skip(ev)
		return
	}
	defer h.release(i)
	name := instanceName(i)
	switch ev.Kind {
	case Kill:
		if !h.procs.Kill(name) {
			h.skip(ev)
			return
		}
		h.count(ev, i)
		sleep(ctx, h.cfg.RestartDelay)
		h.waitForBroker(ctx)
		if err := h.startSlot(i); err != nil {
			h.fail(err)
		}
	case Freeze:
		if !h.procs.Freeze(name) {
			h.skip(ev)
			return
		}
		h.count(ev, i)
		sleep(ctx, h.cfg.ZombieFor)
		h.procs.Thaw(name)
		h.log.Info("thawed", "instance", i)
	case RemoveInstance:
		h.mu.Lock()
		h.slots[i].live = false
		h.mu.Unlock()
		h.procs.Stop(name, h.cfg.StopGrace)
		h.count(ev, i)
	}
}

// addInstance starts an instance in a free slot.
func (h *harness) addInstance(ctx context.Context, ev Event) {
	i, ok := h.claim(ctx, ev.Pick, func(s slot) bool { return !s.live })
	if !ok {
		h.skip(ev)
		return
	}
	defer h.release(i)
	h.mu.Lock()
	h.slots[i].live = true
	h.mu.Unlock()
	h.waitForBroker(ctx)
	if err := h.startSlot(i); err != nil {
		h.fail(err)
	}
	h.count(ev, i)
}

// restartBroker kills the owned broker, at a quiet moment if so
// configured, and starts it again after BrokerDowntime.
func (h *harness) restartBroker(ctx context.Context, ev Event) {
	if h.cfg.QuiesceBrokerKills {
		h.quiet.Lock() // no instance event under way, none starting
		defer h.quiet.Unlock()
		h.gate.Hold()
		defer h.gate.Release()
	}
	h.mu.Lock()
	busy := h.brokerBusy
	h.brokerBusy = true
	h.mu.Unlock()
	if busy {
		h.skip(ev)
		return
	}
	defer func() {
		h.mu.Lock()
		h.brokerBusy = false
		h.mu.Unlock()
	}()
	open := h.openTransactions(ctx)
	if h.cfg.QuiesceBrokerKills {
		// Instances open transactions without input too (a punctuator's
		// writes): check again right before the kill, until the moment
		// is quiet or a minute has passed.
		deadline := time.Now().Add(time.Minute)
		for {
			quiet := h.waitQuiet(ctx, deadline)
			if open = h.openTransactions(ctx); !quiet || open == 0 || ctx.Err() != nil {
				break
			}
		}
	}
	h.procs.Kill(brokerName)
	h.count(ev, -1)
	if open > 0 {
		h.mu.Lock()
		h.rep.BrokerKillsInFlight++
		h.mu.Unlock()
		h.log.Info("the broker died with transactions open", "partitions", open)
	}
	sleep(ctx, h.cfg.BrokerDowntime)
	if err := h.startBroker(ctx); err != nil {
		h.fail(err)
	}
}

// waitQuiet waits, until deadline at most, until the group has committed
// all the input produced so far and no transaction is open on any topic;
// it reports whether it saw that.
func (h *harness) waitQuiet(ctx context.Context, deadline time.Time) bool {
	start := time.Now()
	for {
		_, _, caughtUp := h.poll(ctx)
		if caughtUp && h.openTransactions(ctx) == 0 {
			h.log.Info("quiet: input committed, no transaction open", "waited", time.Since(start).Round(time.Millisecond))
			return true
		}
		if time.Now().After(deadline) {
			h.log.Warn("no quiet moment for a broker kill within a minute; killing it anyway")
			return false
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return false
		}
	}
}

// waitForBroker returns once the owned broker is not being restarted: an
// instance started while the cluster is unreachable only waits for it
// (exactly's runtime retries; another program may exit), which would tell
// nothing.
func (h *harness) waitForBroker(ctx context.Context) {
	for {
		h.mu.Lock()
		busy := h.brokerBusy
		h.mu.Unlock()
		if !busy || !sleep(ctx, 50*time.Millisecond) {
			return
		}
	}
}

// claim marks busy the slot that pick chooses among the idle slots that
// fit, waiting up to claimWait for one while other events keep them all
// busy; false if none comes.
func (h *harness) claim(ctx context.Context, pick uint64, fits func(slot) bool) (int, bool) {
	deadline := time.Now().Add(claimWait)
	for {
		if i, ok := h.tryClaim(pick, fits); ok {
			return i, true
		}
		if time.Now().After(deadline) || !sleep(ctx, 50*time.Millisecond) {
			return 0, false
		}
	}
}

// claimWait bounds how long an event waits for a slot to act on.
const claimWait = 30 * time.Second

func (h *harness) tryClaim(pick uint64, fits func(slot) bool) (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var idle []int
	for i, s := range h.slots {
		if !s.busy && fits(s) {
			idle = append(idle, i)
		}
	}
	if len(idle) == 0 {
		return 0, false
	}
	i := idle[pick%uint64(len(idle))]
	h.slots[i].busy = true
	return i, true
}

func (h *harness) release(i int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.slots[i].busy = false
}

// count records a carried-out event on instance slot i (-1: the broker).
func (h *harness) count(ev Event, i int) {
	h.mu.Lock()
	switch ev.Kind {
	case Kill:
		h.rep.Kills++
	case Freeze:
		h.rep.Zombies++
	case BrokerRestart:
		h.rep.BrokerRestarts++
	case AddInstance:
		h.rep.Added++
	case RemoveInstance:
		h.rep.Removed++
	}
	h.mu.Unlock()
	if i < 0 {
		h.log.Info(ev.Kind.String(), "planned_at", ev.At)
		return
	}
	h.log.Info(ev.Kind.String(), "instance", i, "planned_at", ev.At)
}

func (h *harness) skip(ev Event) {
	h.mu.Lock()
	h.rep.Skipped++
	h.mu.Unlock()
	h.log.Info("skipped: nothing to act on", "event", ev.Kind.String(), "planned_at", ev.At)
}

// fail ends the run with err at the next supervision.
func (h *harness) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fatal == nil {
		h.fatal = err
	}
}

// note sums up the events so far for the progress bar.
func (h *harness) note() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rep
	return fmt.Sprintf("kills %d, zombies %d, broker restarts %d, churn %d, rebalances %d", r.Kills, r.Zombies, r.BrokerRestarts, r.Added+r.Removed, r.Rebalances)
}
