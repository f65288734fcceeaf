package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/internal/feed"
	"github.com/exactly-go/exactly/internal/fleet"
	"github.com/exactly-go/exactly/internal/progress"
)

// brokerName is the broker's name among the harness's processes.
const brokerName = "broker"

// harness is one run: its processes, its clients and what happened so far.
type harness struct {
	cfg     Config
	dir     string
	procs   fleet.Fleet
	log     *slog.Logger
	brokers []string
	listen  string // the owned broker's address, the same at every start
	cl      *kgo.Client
	adm     *kadm.Client

	gate  feed.Gate    // holds the input while a broker kill waits for quiet
	quiet sync.RWMutex // read-held by instance events, held by a quiesced broker kill

	mu         sync.Mutex
	slots      []slot
	brokerBusy bool
	rep        Report
	fatal      error
	groupState string
	// lastCommitted and lastEnd are the figures of the last poll that
	// the cluster answered.
	lastCommitted, lastEnd int64
}

// slot is one instance place: its state directory and id survive its
// processes.
type slot struct {
	live      bool // should be running
	busy      bool // an event is acting on it
	started   time.Time
	quickDies int // exits on its own right after starting, in a row
}

// Run starts the broker (unless Config.Brokers names one) and the
// instances, produces the input while it carries out the schedule (see
// Config.Schedule), waits for the instances to commit the whole input,
// stops them gracefully, and runs the verifiers. The report's OK says
// whether the run held; an error means the run could not be carried out
// (a process that cannot start, an unreachable cluster, ctx ended).
// Every child process is stopped when Run returns, and dies with the
// calling process.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &harness{cfg: cfg, dir: cfg.Dir, slots: make([]slot, cfg.MaxInstances)}
	h.rep.Seed, h.rep.Generated = cfg.Seed, len(cfg.Input)
	if h.dir == "" {
		if h.dir, err = os.MkdirTemp("", "exactly-chaos-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return nil, err
	}
	h.rep.Dir = h.dir
	lock, err := lockDir(h.dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	eventsLog, err := os.OpenFile(filepath.Join(h.dir, "events.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer eventsLog.Close()
	h.log = slog.New(slog.NewMultiHandler(slog.NewTextHandler(eventsLog, nil), cfg.Logger.Handler()))
	defer h.procs.Close(cfg.StopGrace)

	rep, err := h.run(ctx)
	if err == nil && rep.OK() && cfg.Dir == "" {
		h.procs.Close(cfg.StopGrace)
		os.RemoveAll(h.dir)
	}
	return rep, err
}

func (h *harness) run(ctx context.Context) (*Report, error) {
	cfg := h.cfg
	h.brokers = cfg.Brokers
	if len(cfg.BrokerCommand) > 0 {
		addr, err := fleet.FreeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		h.listen, h.brokers = addr, []string{addr}
		if err := h.startBroker(ctx); err != nil {
			return nil, err
		}
	}
	var err error
	h.cl, err = kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(h.brokers...), kgo.ProducerLinger(5 * time.Millisecond)}, cfg.ClientOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("chaos: client for %s: %w", strings.Join(h.brokers, ","), err)
	}
	defer h.cl.Close()
	h.adm = kadm.NewClient(h.cl)
	if err := h.createTopics(ctx); err != nil {
		return nil, err
	}
	h.log.Info("run starts", "brokers", strings.Join(h.brokers, ","), "instances", cfg.Instances, "input", len(cfg.Input),
		"kills", cfg.Kills, "zombies", cfg.Zombies, "broker_restarts", cfg.BrokerRestarts, "churn", cfg.Churn, "seed", cfg.Seed)
	for i := range cfg.Instances {
		h.slots[i].live = true
		if err := h.startSlot(i); err != nil {
			return nil, err
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	out := cfg.Progress
	if out == nil {
		out = io.Discard
	}
	bar := progress.New(out, "committed", int64(len(cfg.Input)))
	produced := make(chan error, 1)
	go func() {
		steps := max(1, int(cfg.Duration/(100*time.Millisecond)))
		retried, err := feed.Paced(runCtx, h.cl, cfg.Input, cfg.Duration, steps, &h.gate)
		h.mu.Lock()
		h.rep.Reproduced = retried
		h.mu.Unlock()
		produced <- err
	}()
	scheduled := make(chan struct{})
	go func() {
		defer close(scheduled)
		h.carryOut(runCtx, start, cfg.Schedule())
	}()

	// Watch until the input is produced, the schedule carried out and the
	// group has committed the whole input, or CatchUp after that.
	var deadline time.Time
	var feedErr error
	feeding, scheduling := len(cfg.Input) > 0, true
	if !feeding {
		close(produced)
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err, ok := <-produced:
			if ok && feeding {
				feeding, feedErr = false, err
			}
			produced = nil
		case <-scheduled:
			scheduling, scheduled = false, nil
		case <-tick.C:
		}
		if feedErr != nil {
			return nil, fmt.Errorf("chaos: produce the input: %w", feedErr)
		}
		if err := h.supervise(); err != nil {
			return nil, err
		}
		committed, end, caughtUp := h.poll(runCtx)
		bar.SetTotal(max(end, int64(len(cfg.Input))))
		bar.Set(committed, h.note())
		if feeding || scheduling {
			continue
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(cfg.CatchUp)
			h.log.Info("schedule carried out and input produced; waiting for the group to commit it", "committed", committed, "end", end)
		}
		if caughtUp {
			h.rep.CaughtUp = true
			break
		}
		if time.Now().After(deadline) {
			h.log.Warn("the group did not commit the whole input in time", "committed", committed, "end", end, "catch_up", cfg.CatchUp)
			break
		}
	}
	bar.Finish()
	cancel()
	h.stopInstances()
	committed, end, _ := h.poll(ctx)
	h.mu.Lock()
	h.rep.Elapsed, h.rep.Committed, h.rep.RecordsIn = time.Since(start), committed, end
	h.mu.Unlock()

	target := Target{Brokers: h.brokers, ApplicationID: cfg.ApplicationID}
	for _, v := range cfg.Verifiers {
		verdict, err := v.Verify(ctx, target)
		if err != nil {
			return nil, err
		}
		h.rep.Verdicts = append(h.rep.Verdicts, verdict)
	}
	h.log.Info("run ends", "ok", h.rep.OK(), "kills", h.rep.Kills, "zombies", h.rep.Zombies, "broker_restarts", h.rep.BrokerRestarts)
	rep := h.rep
	return &rep, nil
}

// carryOut carries out events at their times, each in a goroutine of its
// own, and returns when every one has finished.
func (h *harness) carryOut(ctx context.Context, start time.Time, events []Event) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, ev := range events {
		if !sleep(ctx, time.Until(start.Add(ev.At))) {
			return
		}
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
	i, ok := h.claim(ev.Pick, func(s slot) bool { return s.live })
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
	i, ok := h.claim(ev.Pick, func(s slot) bool { return !s.live })
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
		h.waitQuiet(ctx)
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

// waitQuiet waits, for a minute at most, until the group has committed
// all the input produced so far and no transaction is open on any topic.
func (h *harness) waitQuiet(ctx context.Context) {
	start := time.Now()
	deadline := start.Add(time.Minute)
	for {
		_, _, caughtUp := h.poll(ctx)
		if caughtUp && h.openTransactions(ctx) == 0 {
			h.log.Info("quiet: input committed, no transaction open", "waited", time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			h.log.Warn("no quiet moment for a broker kill within a minute; killing it anyway")
			return
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
}

// openTransactions counts the partitions whose last stable offset is below
// their high watermark: a transaction has written there and not ended.
// It returns -1 when the cluster does not answer.
func (h *harness) openTransactions(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	topics, err := h.adm.ListTopics(ctx)
	if err != nil {
		return -1
	}
	high, err := h.adm.ListEndOffsets(ctx, topics.Names()...)
	if err != nil {
		return -1
	}
	stable, err := h.adm.ListCommittedOffsets(ctx, topics.Names()...)
	if err != nil {
		return -1
	}
	open := 0
	high.Each(func(o kadm.ListedOffset) {
		if s, ok := stable.Lookup(o.Topic, o.Partition); o.Err != nil || !ok || s.Err != nil || s.Offset < o.Offset {
			open++
		}
	})
	return open
}

// waitForBroker returns once the owned broker is not being restarted:
// an instance started while the cluster is unreachable may exit at once
// (the runtime needs the cluster to start), which would tell nothing.
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
// fit; false if none does.
func (h *harness) claim(pick uint64, fits func(slot) bool) (int, bool) {
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

// supervise starts again what exited on its own, as an orchestrator
// would, and fails the run when an instance exits right after every
// start: its command line is wrong.
func (h *harness) supervise() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fatal != nil {
		return h.fatal
	}
	if h.listen != "" && !h.brokerBusy && !h.procs.Running(brokerName) {
		h.rep.BrokerExits++
		h.log.Warn("the broker exited on its own; starting it again", "log", filepath.Join(h.dir, brokerName+".log"))
		h.brokerBusy = true
		go func() {
			if err := h.startBroker(context.Background()); err != nil {
				h.fail(err)
			}
			h.mu.Lock()
			h.brokerBusy = false
			h.mu.Unlock()
		}()
	}
	for i := range h.slots {
		s := &h.slots[i]
		if !s.live || s.busy || h.brokerBusy || h.procs.Running(instanceName(i)) {
			continue
		}
		h.rep.Exits++
		logFile := filepath.Join(h.dir, instanceName(i)+".log")
		if time.Since(s.started) < 3*time.Second {
			s.quickDies++
		} else {
			s.quickDies = 0
		}
		if s.quickDies >= 3 {
			return fmt.Errorf("chaos: %s exits right after it starts (%d times in a row); its log %s ends:\n%s", instanceName(i), s.quickDies, logFile, tail(logFile, 15))
		}
		h.log.Warn("an instance exited on its own; starting it again", "instance", i, "log", logFile)
		s.started = time.Now()
		if err := h.startSlotLocked(i); err != nil {
			return err
		}
	}
	return nil
}

// poll reads the group's committed offsets and the input's end offsets,
// and notes group rebalances. caughtUp says every input record is
// committed. While the cluster does not answer, it returns the last
// figures it read.
func (h *harness) poll(ctx context.Context) (committed, end int64, caughtUp bool) {
	committed, end, caughtUp, ok := h.read(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if ok {
		h.lastCommitted, h.lastEnd = committed, end
	}
	return h.lastCommitted, h.lastEnd, ok && caughtUp
}

func (h *harness) read(ctx context.Context) (committed, end int64, caughtUp, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if groups, err := h.adm.DescribeGroups(ctx, h.cfg.ApplicationID); err == nil {
		state := groups[h.cfg.ApplicationID].State
		h.mu.Lock()
		if h.groupState == "Stable" && (state == "PreparingRebalance" || state == "CompletingRebalance") {
			h.rep.Rebalances++
		}
		h.groupState = state
		h.mu.Unlock()
	}
	ends, err := h.adm.ListEndOffsets(ctx, h.cfg.InputTopics...)
	if err != nil {
		return 0, 0, false, false
	}
	offsets, err := h.adm.FetchOffsets(ctx, h.cfg.ApplicationID)
	if err != nil {
		return 0, 0, false, false
	}
	caughtUp, ok = true, true
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			ok = false
			return
		}
		at := int64(0)
		if c, ok := offsets.Lookup(o.Topic, o.Partition); ok && c.Err == nil {
			at = max(c.At, 0)
		}
		end += o.Offset
		committed += min(at, o.Offset)
		caughtUp = caughtUp && at >= o.Offset
	})
	return committed, end, caughtUp, ok
}

// stopInstances stops every instance gracefully, all at once, and starts
// none after.
func (h *harness) stopInstances() {
	h.mu.Lock()
	for i := range h.slots {
		h.slots[i].live = false
	}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for i := range h.slots {
		wg.Go(func() { h.procs.Stop(instanceName(i), h.cfg.StopGrace) })
	}
	wg.Wait()
}

func (h *harness) startSlot(i int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.slots[i].started = time.Now()
	return h.startSlotLocked(i)
}

// startSlotLocked starts the instance in slot i with its placeholders
// filled in; h.mu is held.
func (h *harness) startSlotLocked(i int) error {
	if !h.slots[i].live {
		return nil
	}
	httpAddr, err := fleet.FreeLoopbackAddr()
	if err != nil {
		return err
	}
	stateDir := filepath.Join(h.dir, "state", instanceName(i))
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	vars := h.cfg.instanceVars(h.brokers, i, stateDir, httpAddr)
	args := expand(h.cfg.Command, vars)
	env := append(append(fleet.WithoutExactlyEnv(os.Environ()), h.cfg.Env...), environ(vars)...)
	h.procs.Set(instanceName(i), fleet.Spec{Path: args[0], Args: args[1:], Env: env, Log: filepath.Join(h.dir, instanceName(i)+".log")})
	if err := h.procs.Start(instanceName(i)); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	return nil
}

// startBroker starts the owned broker and waits until it accepts
// connections.
func (h *harness) startBroker(ctx context.Context) error {
	dataDir := filepath.Join(h.dir, "broker-data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	args := expand(h.cfg.BrokerCommand, map[string]string{"listen": h.listen, "data-dir": dataDir})
	logFile := filepath.Join(h.dir, brokerName+".log")
	h.procs.Set(brokerName, fleet.Spec{Path: args[0], Args: args[1:], Log: logFile})
	if err := h.procs.Start(brokerName); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", h.listen, time.Second)
		if err == nil {
			conn.Close()
			h.log.Info("broker listening", "addr", h.listen)
			return nil
		}
		if !h.procs.Running(brokerName) || time.Now().After(deadline) || !sleep(ctx, 50*time.Millisecond) {
			return fmt.Errorf("chaos: the broker (%s) does not listen on %s; its log %s ends:\n%s", strings.Join(args, " "), h.listen, logFile, tail(logFile, 15))
		}
	}
}

// createTopics creates the configured topics that do not exist.
func (h *harness) createTopics(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, t := range h.cfg.Topics {
		parts := t.Partitions
		if parts == 0 {
			parts = h.cfg.Partitions
		}
		configs := map[string]*string{}
		for k, v := range t.Configs {
			configs[k] = &v
		}
		resp, err := h.adm.CreateTopic(ctx, parts, -1, configs, t.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("chaos: create topic %s on %s: %w", t.Name, strings.Join(h.brokers, ","), err)
		}
	}
	return nil
}

// lockDir takes the run's directory for this run alone; closing the file
// releases it.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("chaos: directory %s is in use by another run (%w): give each run its own Dir", dir, err)
	}
	return f, nil
}

func instanceName(i int) string { return "instance-" + strconv.Itoa(i) }

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
