package kafka

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Runner runs one topology as one instance of an application.
type Runner struct {
	cfg      Config
	topo     *topo.Topology
	metrics  *metrics
	stateDir string // StateDir/ApplicationID
	process  string // this process's id in transactional ids

	subOf      map[string]int   // source topic -> sub-topology
	deadLetter map[string]bool  // dead-letter topics
	partitions map[string]int32 // topic -> partition count
	topicIDs   map[string][16]byte

	life lifecycle
	// shutdownAsked: this instance asks the application to shut down
	// (ShutdownApplication); shutdownGranted: the group's leader told every
	// member to.
	shutdownAsked, shutdownGranted atomic.Bool
	shutdownCause                  atomic.Pointer[error]
	workers                        []atomic.Pointer[worker] // the current worker of each slot

	routes   routes       // the group's assignment by advertised host (routing.go)
	standbys standbys     // the standby tasks this instance keeps (standby.go)
	restores restoreBoard // progress of the restores of this instance's tasks (restoreprogress.go)

	blockCache *store.BlockCache // shared by the persistent stores; set while Run runs
	// globals are the global stores (global.go), bootstrapped before the
	// workers start; nil without any.
	globals atomic.Pointer[globalStores]

	mu        sync.Mutex
	queryable map[topo.TaskID]*queryTarget
	openDirs  map[string]chan struct{} // task directories open in this process; closed on release
	lock      *os.File
	ready     chan struct{}
}

// New validates cfg against the topology. It does not contact the cluster.
func New(t *topo.Topology, cfg Config) (*Runner, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, &ConfigError{err}
	}
	if c.StateDir == "" {
		c.StateDir = filepath.Join(os.TempDir(), "exactly-state")
	}
	process := c.InstanceID
	if process == "" {
		var b [6]byte
		rand.Read(b[:])
		process = hex.EncodeToString(b[:])
	}
	m, err := newMetrics(c.Registerer)
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("register the runtime's metrics: give each App its own Registerer (or wrap one with prometheus.WrapRegistererWith): %w", err)}
	}
	r := &Runner{
		cfg:      c,
		topo:     t,
		metrics:  m,
		stateDir: filepath.Join(c.StateDir, c.ApplicationID),
		process:  process,
		subOf:    map[string]int{},
		ready:    make(chan struct{}),
	}
	for _, sub := range t.Subtopologies() {
		for _, topic := range sub.SourceTopics {
			r.subOf[topic] = sub.ID
		}
	}
	r.standbys.r = r
	r.deadLetter = r.deadLetterTopics()
	r.life = lifecycle{workers: make([]State, c.Workers), listener: c.StateListener}
	r.workers = make([]atomic.Pointer[worker], c.Workers)
	if c.Registerer != nil {
		if err := c.Registerer.Register(newStoreEntries(r)); err != nil {
			return nil, &ConfigError{fmt.Errorf("register store metrics: %w", err)}
		}
	}
	return r, nil
}

// clientOptions are the options every client of the runner shares.
func (r *Runner) clientOptions() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(r.cfg.Brokers...),
		kgo.ClientID(r.cfg.ClientID),
		kgo.WithLogger(clientLogger{r.cfg.Logger}),
	}
	if r.cfg.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(r.cfg.TLS))
	}
	if s := r.cfg.SASL; s != nil {
		switch s.Mechanism {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: s.User, Pass: s.Password}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism()))
		}
	}
	return append(opts, r.cfg.ClientOptions...)
}

// Ready is closed once every worker has joined the group and restored the
// stores of its first assignment.
func (r *Runner) Ready() <-chan struct{} { return r.ready }

// Run locks the state directory, prepares topics, and runs the workers
// until ctx is cancelled (a clean shutdown: the last work is committed) or
// a worker fails.
func (r *Runner) Run(ctx context.Context) error {
	if err := r.lockStateDir(); err != nil {
		return err
	}
	defer r.unlockStateDir()
	r.blockCache = store.NewBlockCache(r.cfg.StoreBlockCacheSize)
	defer r.blockCache.Release()

	admCl, err := kgo.NewClient(r.clientOptions()...)
	if err != nil {
		return fmt.Errorf("connect to %v: %w", r.cfg.Brokers, err)
	}
	adm := kadm.NewClient(admCl)
	err = r.untilReachable(ctx, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.prepareTopics(ctx, adm)
	})
	admCl.Close()
	if err != nil {
		if ce := configFetchError(err); ce != nil {
			return ce
		}
		return err
	}

	globals, err := r.startGlobalStores(ctx)
	if err != nil {
		return err
	}
	defer globals.stop()
	r.globals.Store(globals)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r.life.set(StateRebalancing)
	var wg sync.WaitGroup
	errs := make([]error, r.cfg.Workers)
	readies := make([]chan struct{}, r.cfg.Workers)
	go r.watchdog(ctx)
	for i := range r.cfg.Workers {
		readies[i] = make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.runWorker(ctx, i, readies[i]); err != nil {
				errs[i] = err
				cancel(err)
			}
		}()
	}
	go func() {
		for _, c := range readies {
			select {
			case <-c:
			case <-ctx.Done():
				return
			}
		}
		close(r.ready)
	}()
	wg.Wait()
	r.standbys.stopAll()
	err = errors.Join(errs...)
	if err != nil {
		r.cfg.Logger.Error("instance stopped by an error", "err", err)
		r.life.set(StateError)
	} else {
		r.life.set(StateStopped)
	}
	return err
}

// watchdog restarts the session of a worker that holds processed work
// uncommitted for longer than StallTimeout, and keeps the instance
// unhealthy until that worker commits again.
func (r *Runner) watchdog(ctx context.Context) {
	tick := time.NewTicker(max(r.cfg.StallTimeout/8, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i := range r.workers {
			w := r.workers[i].Load()
			if w == nil {
				continue
			}
			since := w.uncommittedSince.Load()
			if since == 0 || time.Since(time.Unix(0, since)) < r.cfg.StallTimeout {
				continue
			}
			if w.stalled.CompareAndSwap(false, true) {
				r.metrics.stalledWorkers.Inc()
			}
			w.uncommittedSince.Store(time.Now().UnixNano()) // one restart per StallTimeout
			r.cfg.Logger.Warn("worker stalled: processed records stayed uncommitted; restarting its session",
				"worker", i, "uncommitted_for", time.Since(time.Unix(0, since)).Round(time.Second))
			if cancel := w.cancelSession.Load(); cancel != nil {
				(*cancel)(errStalled)
			}
		}
	}
}

// Healthy returns an error while a worker is stalled (see StallTimeout)
// or after a fatal error stopped the instance.
func (r *Runner) Healthy() error {
	if r.life.current() == StateError {
		return errors.New("stopped by a fatal error")
	}
	for i := range r.workers {
		if w := r.workers[i].Load(); w != nil && w.stalled.Load() {
			return fmt.Errorf("worker %d stalled: records processed more than %v ago are still uncommitted", i, r.cfg.StallTimeout)
		}
	}
	return nil
}

// untilReachable runs f until it succeeds, fails for a reason other than
// an unreachable cluster, or ctx ends. As Kafka Streams does, an instance
// started before its brokers waits for them, saying so every attempt.
func (r *Runner) untilReachable(ctx context.Context, f func() error) error {
	backoff := 250 * time.Millisecond
	for {
		err := f()
		if err == nil || !unreachable(err) {
			return err
		}
		r.cfg.Logger.Warn("the cluster does not answer; retrying", "brokers", r.cfg.Brokers, "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (the cluster never answered)", err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// unreachable reports whether err says the brokers could not be reached
// (rather than that they answered no).
func unreachable(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, syscall.ECONNREFUSED) || kerr.IsRetriable(err)
}

// State is the instance's current state.
func (r *Runner) State() State { return r.life.current() }

// runWorker runs worker i until ctx ends or it fails for good, and applies
// OnFatalError to a fatal failure.
func (r *Runner) runWorker(ctx context.Context, i int, ready chan struct{}) error {
	markReady := sync.OnceFunc(func() { close(ready) })
	backoff := time.Second
	for replaced := 0; ; {
		w := newWorker(r, i, markReady)
		if old := r.workers[i].Swap(w); old != nil && old.stalled.Load() {
			r.metrics.stalledWorkers.Dec()
		}
		err := w.run(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		var shutdown *ApplicationShutdownError
		switch {
		case errors.As(err, &shutdown):
			return err
		case !isFatal(err):
			return err // a configuration no retry can cure
		case r.cfg.OnFatalError == ShutdownApplication && !r.shutdownAsked.Load():
			r.cfg.Logger.Error("fatal error; asking every instance of the application to shut down", "worker", i, "err", err)
			r.shutdownCause.Store(&err)
			r.shutdownAsked.Store(true)
		case r.cfg.OnFatalError == ReplaceWorker && replaced < r.cfg.MaxWorkerReplacements:
			replaced++
			r.metrics.workerReplacements.Inc()
			r.cfg.Logger.Error("fatal error; replacing the worker", "worker", i, "replacement", replaced, "of", r.cfg.MaxWorkerReplacements, "backoff", backoff, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff *= 2
		case r.cfg.OnFatalError == ReplaceWorker:
			return fmt.Errorf("worker %d failed after %d replacements: %w", i, replaced, err)
		default:
			return err
		}
	}
}

// lockStateDir takes an exclusive lock on the application's state
// directory, so that two instances never share stores.
func (r *Runner) lockStateDir() error {
	if err := os.MkdirAll(r.stateDir, 0o755); err != nil {
		return fmt.Errorf("state directory %s: %w", r.stateDir, err)
	}
	path := filepath.Join(r.stateDir, ".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("state directory %s: %w", r.stateDir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("%w: %s (lock %s: %v): give each instance its own StateDir", ErrStateDirLocked, r.stateDir, path, err)
	}
	r.mu.Lock()
	r.lock = f
	r.mu.Unlock()
	return nil
}

func (r *Runner) unlockStateDir() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lock != nil {
		syscall.Flock(int(r.lock.Fd()), syscall.LOCK_UN)
		r.lock.Close()
		r.lock = nil
	}
}

// prepareTopics checks sources exist and are co-partitioned, and creates
// changelog topics (and, when configured, output topics).
func (r *Runner) prepareTopics(ctx context.Context, adm *kadm.Client) error {
	details, err := adm.ListTopics(ctx)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	r.partitions = map[string]int32{}
	r.topicIDs = map[string][16]byte{}
	for name, d := range details {
		if d.Err == nil {
			r.partitions[name] = int32(len(d.Partitions))
			r.topicIDs[name] = d.ID
		}
	}
	if err := r.createInternalTopics(ctx, adm); err != nil {
		return err
	}
	var changelogs []string
	for _, sub := range r.topo.Subtopologies() {
		var want int32
		for _, topic := range sub.SourceTopics {
			n, ok := r.partitions[topic]
			if !ok {
				return fmt.Errorf("source topic %q does not exist: create it before starting %s", topic, r.cfg.ApplicationID)
			}
			if want == 0 {
				want = n
			} else if n != want {
				return fmt.Errorf("sub-topology %d reads %s (%d partitions) and %s (%d partitions): sources of one sub-topology must be co-partitioned",
					sub.ID, sub.SourceTopics[0], want, topic, n)
			}
		}
		for _, name := range sub.Stores {
			spec, _ := r.topo.Store(name)
			if !spec.Logged {
				continue
			}
			topic := topo.ChangelogTopic(r.cfg.ApplicationID, name)
			if err := r.ensureTopic(ctx, adm, topic, want, map[string]*string{"cleanup.policy": ptr("compact")}); err != nil {
				return err
			}
			if r.partitions[topic] != want {
				return fmt.Errorf("changelog %s has %d partitions but its source has %d: delete the changelog (it is rebuilt) or fix the source", topic, r.partitions[topic], want)
			}
			changelogs = append(changelogs, topic)
		}
		for _, topic := range sub.SinkTopics {
			if _, ok := r.partitions[topic]; ok {
				continue
			}
			if !r.cfg.CreateTopics {
				return fmt.Errorf("output topic %q does not exist: create it, or set CreateTopics", topic)
			}
			n := r.cfg.OutputPartitions
			if n <= 0 {
				n = want
			}
			if err := r.ensureTopic(ctx, adm, topic, n, nil); err != nil {
				return err
			}
		}
	}
	return r.checkChangelogPolicies(ctx, adm, changelogs)
}

// createInternalTopics creates the topics the topology both writes and
// reads (repartition topics, a foreign-key join's subscription and
// response topics) when missing, with the partition count
// topo.InternalTopicPartitions decides: that of the topics read beside
// them, or else that of what their writers read.
func (r *Runner) createInternalTopics(ctx context.Context, adm *kadm.Client) error {
	counts := r.topo.InternalTopicPartitions(func(topic string) int32 { return r.partitions[topic] })
	for _, topic := range r.topo.RepartitionTopics() {
		if _, ok := r.partitions[topic]; ok {
			continue
		}
		n := counts[topic]
		if n == 0 {
			for _, sub := range r.topo.Subtopologies() {
				for _, src := range sub.SourceTopics {
					if _, ok := counts[src]; !ok && r.partitions[src] == 0 {
						return fmt.Errorf("source topic %q does not exist: create it before starting %s", src, r.cfg.ApplicationID)
					}
				}
			}
			return fmt.Errorf("internal topic %q: no source topic gives its partition count", topic)
		}
		if err := r.ensureTopic(ctx, adm, topic, n, nil); err != nil {
			return err
		}
	}
	return nil
}

func (r *Runner) ensureTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, configs map[string]*string) error {
	if _, ok := r.partitions[topic]; ok {
		return nil
	}
	resp, err := adm.CreateTopic(ctx, partitions, r.cfg.ReplicationFactor, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	r.partitions[topic] = partitions
	r.cfg.Logger.Info("created topic", "topic", topic, "partitions", partitions)
	return nil
}

func ptr[T any](v T) *T { return &v }

// deadLetterTopics are the topics of the topology's dead-letter sinks.
func (r *Runner) deadLetterTopics() map[string]bool {
	out := map[string]bool{}
	for _, sub := range r.topo.Subtopologies() {
		for _, name := range sub.Nodes {
			if n, _ := r.topo.Node(name); n.Kind() == topo.KindDeadLetterSink {
				out[n.Topics()[0]] = true
			}
		}
	}
	return out
}
