package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
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
	if err := h.setUp(ctx); err != nil {
		return nil, err
	}
	defer h.cl.Close()
	start := time.Now()
	caughtUp, err := h.drive(ctx, start)
	if err != nil {
		return nil, err
	}
	h.stopInstances()
	committed, end, _ := h.poll(ctx)
	h.mu.Lock()
	h.rep.Elapsed, h.rep.Committed, h.rep.RecordsIn, h.rep.CaughtUp = time.Since(start), committed, end, caughtUp
	h.mu.Unlock()

	target := Target{Brokers: h.brokers, ApplicationID: h.cfg.ApplicationID}
	var verdicts []Verdict
	for _, v := range h.cfg.Verifiers {
		verdict, err := v.Verify(ctx, target)
		if err != nil {
			return nil, err
		}
		verdicts = append(verdicts, verdict)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rep.Verdicts = verdicts
	h.log.Info("run ends", "ok", h.rep.OK(), "kills", h.rep.Kills, "zombies", h.rep.Zombies, "broker_restarts", h.rep.BrokerRestarts)
	rep := h.rep
	return &rep, nil
}

// setUp starts the owned broker, connects, creates the topics and starts
// the first instances.
func (h *harness) setUp(ctx context.Context) error {
	cfg := h.cfg
	h.brokers = cfg.Brokers
	if len(cfg.BrokerCommand) > 0 {
		addr, err := fleet.FreeLoopbackAddr()
		if err != nil {
			return err
		}
		h.listen, h.brokers = addr, []string{addr}
		if err := h.startBroker(ctx); err != nil {
			return err
		}
	}
	var err error
	h.cl, err = kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(h.brokers...), kgo.ProducerLinger(5 * time.Millisecond)}, cfg.ClientOptions...)...)
	if err != nil {
		return fmt.Errorf("chaos: client for %s: %w", strings.Join(h.brokers, ","), err)
	}
	h.adm = kadm.NewClient(h.cl)
	if err := h.createTopics(ctx); err != nil {
		h.cl.Close()
		return err
	}
	h.log.Info("run starts", "brokers", strings.Join(h.brokers, ","), "instances", cfg.Instances, "input", len(cfg.Input),
		"kills", cfg.Kills, "zombies", cfg.Zombies, "broker_restarts", cfg.BrokerRestarts, "churn", cfg.Churn, "seed", cfg.Seed)
	for i := range cfg.Instances {
		h.slots[i].live = true
		if err := h.startSlot(i); err != nil {
			h.cl.Close()
			return err
		}
	}
	return nil
}

// drive produces the input and carries out the schedule, supervising the
// processes and showing progress, until both are done and the group has
// committed the whole input (caughtUp), or CatchUp after that.
func (h *harness) drive(ctx context.Context, start time.Time) (caughtUp bool, err error) {
	cfg := h.cfg
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := cfg.Progress
	if out == nil {
		out = io.Discard
	}
	bar := progress.New(out, "committed", int64(len(cfg.Input)))
	defer bar.Finish()
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
	eventsDone := scheduled
	defer func() { cancel(); <-eventsDone }() // no event acts after drive

	var deadline time.Time
	feeding, scheduling := len(cfg.Input) > 0, true
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case err := <-produced:
			if feeding && err != nil {
				return false, fmt.Errorf("chaos: produce the input: %w", err)
			}
			feeding, produced = false, nil
		case <-scheduled:
			scheduling, scheduled = false, nil
		case <-tick.C:
		}
		if err := h.supervise(); err != nil {
			return false, err
		}
		committed, end, caughtUp := h.poll(runCtx)
		bar.SetTotal(max(end, int64(len(cfg.Input))))
		bar.Set(committed, h.note())
		switch {
		case feeding || scheduling:
			continue
		case deadline.IsZero():
			deadline = time.Now().Add(cfg.CatchUp)
			h.log.Info("schedule carried out and input produced; waiting for the group to commit it", "committed", committed, "end", end)
		}
		if caughtUp {
			return true, nil
		}
		if time.Now().After(deadline) {
			h.log.Warn("the group did not commit the whole input in time", "committed", committed, "end", end, "catch_up", cfg.CatchUp)
			return false, nil
		}
	}
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
