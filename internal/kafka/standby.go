package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exactly-go/exactly/internal/crashpoint"
	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Standby replicas (Config.StandbyReplicas). The group's leader gives each
// member its standby tasks in the assignment (balancer.go, placement.go);
// the instance keeps them in one registry, standbys, whichever of its
// workers they were given to, so that a task that becomes active anywhere
// in the process takes its standby's stores over.
//
// A standby opens the task's directory as an active task does (one holder
// per process at a time: stores.go), and tails the task's changelog
// partitions read_committed with a client of its own, from each store's
// checkpoint, applying each fetched batch with its new checkpoint in one
// atomic write (changelog.go, the restore's own path). It never blocks a
// worker: it runs on its own goroutine, each poll has a deadline, and a
// failure only restarts the standby after a backoff. When its task becomes
// active in this process, the worker starting the task stops the standby
// first (takeOver), which hands its stores to the active task (the
// persistent one still open, with its directory), whose restore then reads
// only what the standby had not applied yet.

// standbys are the standby tasks of this instance.
type standbys struct {
	r *Runner

	mu sync.Mutex
	// desired holds, per worker, the standby tasks its latest assignment
	// gave it.
	desired map[int][]topo.TaskID
	// active holds the tasks active (starting or running) in this process:
	// they have no standby here.
	active  map[topo.TaskID]bool
	running map[topo.TaskID]*standbyTask // including ones stopping
	// retired holds the in-memory stores of standbys that stopped, for a
	// while: the assignment that stops a standby because its task becomes
	// active here reaches the balancer before the worker starts the task.
	retired map[topo.TaskID]*store.Memory
	stopped bool
	wg      sync.WaitGroup
}

// standbyTask is one running standby.
type standbyTask struct {
	id     topo.TaskID
	cancel context.CancelFunc
	done   chan struct{} // closed once its stores are closed and its directory released
	// memory holds its in-memory stores, retired when it stops.
	memory *store.Memory
	// handOver asks the stopping standby to leave its persistent store
	// open for takeOver, which finds it in handed once done is closed.
	handOver atomic.Bool
	handed   *handedStore

	mu    sync.Mutex
	lag   map[string]int64 // store -> offsets behind the changelog's stable end
	ready bool             // caught up with the changelog once
	query *queryTarget     // its backends while open
}

// assign records the standby tasks worker's latest assignment gave it, and
// starts and stops standbys to match. It never blocks: stopping happens on
// the standby's goroutine.
func (s *standbys) assign(worker int, tasks []topo.TaskID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.desired == nil {
		s.desired = map[int][]topo.TaskID{}
	}
	s.desired[worker] = slices.Clone(tasks)
	s.reconcile()
}

// held returns the standby tasks worker was given, for its subscription.
func (s *standbys) held(worker int) []topo.TaskID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.desired[worker])
}

// reconcile starts the standbys wanted and not running, and stops those
// running and no longer wanted. s.mu is held.
func (s *standbys) reconcile() {
	want := map[topo.TaskID]bool{}
	for _, tasks := range s.desired {
		for _, id := range tasks {
			if !s.active[id] {
				want[id] = true
			}
		}
	}
	for id, st := range s.running {
		if !want[id] || s.stopped {
			st.cancel()
		}
	}
	if s.stopped {
		return
	}
	for _, id := range slices.SortedFunc(maps.Keys(want), compareTaskIDs) {
		if s.running[id] == nil {
			s.start(id)
		}
	}
}

// start runs a standby of id on a goroutine of its own. s.mu is held.
func (s *standbys) start(id topo.TaskID) {
	if s.running == nil {
		s.running = map[topo.TaskID]*standbyTask{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := &standbyTask{id: id, cancel: cancel, done: make(chan struct{}), lag: map[string]int64{}, memory: s.retired[id]}
	delete(s.retired, id)
	if st.memory == nil {
		st.memory = store.NewMemory()
	}
	s.running[id] = st
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.r.metrics.standbyTasks.Inc()
		s.run(ctx, st)
		s.r.metrics.standbyTasks.Dec()
		for _, name := range s.r.loggedStores(id.Subtopology) {
			s.r.metrics.standbyLag.DeleteLabelValues(name, strconv.Itoa(int(id.Partition)))
		}
		cancel()
		s.mu.Lock()
		if s.running[id] == st {
			delete(s.running, id)
		}
		s.retire(id, st.memory)
		close(st.done)
		s.reconcile() // wanted again meanwhile: start afresh
		s.mu.Unlock()
	}()
}

// retire keeps the in-memory stores of a stopped standby of id for a
// rebalance timeout, for takeOver or a new standby of id. s.mu is held.
func (s *standbys) retire(id topo.TaskID, memory *store.Memory) {
	if s.retired == nil {
		s.retired = map[topo.TaskID]*store.Memory{}
	}
	s.retired[id] = memory
	time.AfterFunc(s.r.cfg.RebalanceTimeout, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.retired[id] == memory {
			delete(s.retired, id)
		}
	})
}

// takeRetired returns and forgets the retired in-memory stores of id.
func (s *standbys) takeRetired(id topo.TaskID) *store.Memory {
	s.mu.Lock()
	defer s.mu.Unlock()
	memory := s.retired[id]
	delete(s.retired, id)
	return memory
}

// handedStore is a standby's persistent store, open, with its directory,
// handed to the active task.
type handedStore struct {
	persistent *store.Pebble
	release    func()
}

// takeOver stops the standby of id, if this process runs one, before id
// becomes active here, and returns its in-memory stores, or those of one
// that stopped a moment ago (nil if none), and its persistent store still
// open with its directory (nil if it had none open). Until activeClosed,
// no standby of id runs in this process.
func (s *standbys) takeOver(ctx context.Context, id topo.TaskID) (*store.Memory, *handedStore, error) {
	s.mu.Lock()
	if s.active == nil {
		s.active = map[topo.TaskID]bool{}
	}
	s.active[id] = true
	st := s.running[id]
	if st != nil {
		st.handOver.Store(true)
		st.cancel()
	}
	s.mu.Unlock()
	if st == nil {
		return s.takeRetired(id), nil, nil
	}
	select {
	case <-st.done:
		return s.takeRetired(id), st.handed, nil
	case <-ctx.Done():
		go func() {
			<-st.done
			if h := st.handed; h != nil {
				h.persistent.Close()
				h.release()
			}
		}()
		return nil, nil, fmt.Errorf("stop the standby of %s: %w", id, ctx.Err())
	}
}

// activeClosed says id is no longer active in this process: a standby of it
// may run here again.
func (s *standbys) activeClosed(id topo.TaskID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.active, id)
	s.reconcile()
}

// stopAll stops every standby and waits until their stores are closed.
func (s *standbys) stopAll() {
	s.mu.Lock()
	s.stopped = true
	s.reconcile()
	s.mu.Unlock()
	s.wg.Wait()
}

// GetStandby reads key from this instance's standby copy of the key's
// partition of a store, and says how many changelog records the copy was
// behind the changelog's read_committed end at its last fetch. Without a
// standby of the partition here it returns a *NotLocalError naming the
// active's address; while the standby opens its stores, ErrRestoring.
func (r *Runner) GetStandby(ctx context.Context, storeName string, key []byte) (value []byte, found bool, lag int64, err error) {
	spec, sub, partitions, err := r.locate(storeName)
	if err != nil {
		return nil, false, 0, err
	}
	id := topo.TaskID{Subtopology: sub.ID, Partition: partitionOf(sub.SourceTopics[0], key, partitions)}
	r.standbys.mu.Lock()
	st := r.standbys.running[id]
	r.standbys.mu.Unlock()
	if st == nil {
		host, _ := r.routes.hostsOf(id)
		return nil, false, 0, &NotLocalError{Store: storeName, Partition: id.Partition, Host: host}
	}
	st.mu.Lock()
	target, lag := st.query, st.lag[storeName]
	st.mu.Unlock()
	ok := false
	if target != nil {
		ok, err = target.read(spec.Persistent, func(backend store.Backend) (err error) {
			value, found, err = committedView(backend, spec).Get(key)
			return err
		})
	}
	if !ok {
		return nil, false, 0, fmt.Errorf("store %s partition %d: the standby is starting or stopping: %w", storeName, id.Partition, ErrRestoring)
	}
	return value, found, lag, err
}

// StandbyTasks returns the standby tasks this instance keeps, in order.
func (r *Runner) StandbyTasks() []StandbyTask { return r.standbys.list() }

// StandbyTask is a standby task this instance keeps.
type StandbyTask struct {
	ID topo.TaskID
	// Lag is the number of changelog offsets its stores are behind the
	// changelogs' read_committed end, as last fetched.
	Lag int64
	// CaughtUp: it has reached its changelogs' end once since it started.
	CaughtUp bool
}

// list returns the running standbys, in order.
func (s *standbys) list() []StandbyTask {
	s.mu.Lock()
	running := slices.Collect(maps.Values(s.running))
	s.mu.Unlock()
	var out []StandbyTask
	for _, st := range running {
		st.mu.Lock()
		t := StandbyTask{ID: st.id, CaughtUp: st.ready}
		for _, lag := range st.lag {
			t.Lag += lag
		}
		st.mu.Unlock()
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b StandbyTask) int { return compareTaskIDs(a.ID, b.ID) })
	return out
}

// run keeps the standby going until ctx ends, starting it again after a
// growing backoff when it fails.
func (s *standbys) run(ctx context.Context, st *standbyTask) {
	log := s.r.cfg.Logger.With("standby", st.id)
	backoff := time.Second
	for {
		err := s.tail(ctx, st, log)
		if ctx.Err() != nil {
			return
		}
		log.Warn("standby task failed; starting it again", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// tail opens the standby's stores and applies its changelogs to them until
// ctx ends (it then returns nil) or something fails.
func (s *standbys) tail(ctx context.Context, st *standbyTask, log *slog.Logger) error {
	stores := s.r.loggedStores(st.id.Subtopology)
	var persistent *store.Pebble
	for _, name := range stores {
		if spec, _ := s.r.topo.Store(name); spec.Persistent && persistent == nil {
			p, release, err := s.r.openPersistent(ctx, st.id, log)
			if err != nil {
				return err
			}
			persistent = p
			defer func() {
				if ctx.Err() != nil && st.handOver.Load() {
					st.handed = &handedStore{persistent: p, release: release} // to the active task
					return
				}
				p.Close()
				release()
			}()
		}
	}
	target := newStandbyStores(s.r.topo, stores, st.memory, persistent)
	query := &queryTarget{memory: st.memory, persistent: pebbleOrNil(persistent)}
	st.mu.Lock()
	st.query = query
	st.mu.Unlock()
	defer func() {
		query.close() // before the deferred close of the stores
		st.mu.Lock()
		st.query = nil
		st.mu.Unlock()
	}()

	cl, err := s.r.changelogClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	positions, err := s.r.openPositions(ctx, kadm.NewClient(cl), target, st.id, stores, log)
	if err != nil {
		return err
	}
	byTopic := map[string]*changelogPosition{}
	caughtUp := map[string]bool{}
	partition := strconv.Itoa(int(st.id.Partition))
	for _, pos := range positions {
		byTopic[pos.topic] = pos
		st.setLag(pos.store, pos.end-pos.applied)
		s.r.metrics.standbyLag.WithLabelValues(pos.store, partition).Set(float64(pos.end - pos.applied))
		caughtUp[pos.topic] = pos.applied >= pos.end
		pos.end = math.MaxInt64 // a standby reads on
	}
	consumeFrom(cl, positions)
	batchSize := crashpoint.RestoreBatch(10000)
	apply := func(pos *changelogPosition, next int64) error {
		if crashpoint.Armed() {
			// The crash finds the earlier batches on disk, as a SIGKILL a
			// moment later would.
			if persistent != nil {
				persistent.Sync()
			}
			crashpoint.Reach(crashpoint.AfterStandbyRead)
		}
		n, err := pos.apply(target, next)
		if err != nil {
			return fmt.Errorf("standby: %w", err)
		}
		s.r.metrics.standbyRecords.WithLabelValues(pos.store).Add(float64(n))
		return nil
	}
	log.Info("standby task started", "checkpoints", len(positions))
	for {
		pollCtx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		var err error
		fetches.EachError(func(topic string, p int32, ferr error) {
			if !errors.Is(ferr, context.DeadlineExceeded) && err == nil {
				err = fmt.Errorf("standby fetch %s/%d: %w", topic, p, ferr)
			}
		})
		if err != nil {
			return err
		}
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			pos := byTopic[fp.Topic]
			if err != nil || pos == nil || fp.Err != nil {
				return
			}
			if _, err = pos.take(fp, batchSize, apply); err != nil {
				return
			}
			if pos.read > pos.applied {
				if err = apply(pos, pos.read); err != nil {
					return
				}
			}
			if fp.LastStableOffset >= 0 {
				lag := max(fp.LastStableOffset-pos.applied, 0)
				st.setLag(pos.store, lag)
				s.r.metrics.standbyLag.WithLabelValues(pos.store, partition).Set(float64(lag))
				caughtUp[fp.Topic] = caughtUp[fp.Topic] || lag == 0
			}
		})
		if err != nil {
			return err
		}
		if !st.isReady() && !slices.Contains(slices.Collect(maps.Values(caughtUp)), false) {
			st.mu.Lock()
			st.ready = true
			st.mu.Unlock()
			log.Info("standby task caught up with its changelogs")
		}
	}
}

func (st *standbyTask) setLag(name string, lag int64) {
	st.mu.Lock()
	st.lag[name] = lag
	st.mu.Unlock()
}

func (st *standbyTask) isReady() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.ready
}

// standbyStores are the logged stores of one task as a standby keeps them:
// on the backends, under the keys and with the checkpoints an active task
// uses (so that the active task can take them over), without processors.
type standbyStores struct {
	txns map[string]*store.Txn // store -> the buffer over its backend
}

func newStandbyStores(t *topo.Topology, stores []string, memory store.Backend, persistent *store.Pebble) *standbyStores {
	memoryTxn := store.NewTxn(memory)
	var persistentTxn *store.Txn
	if persistent != nil {
		persistentTxn = store.NewTxn(persistent)
	}
	s := &standbyStores{txns: map[string]*store.Txn{}}
	never := func() int64 { return math.MinInt64 }
	for _, name := range stores {
		spec, _ := t.Store(name)
		txn := memoryTxn
		if spec.Persistent {
			txn = persistentTxn
		}
		txn.Open(name, spec.Options, never)
		s.txns[name] = txn
	}
	return s
}

// Checkpoint implements changelogTarget.
func (s *standbyStores) Checkpoint(name string) (int64, bool, error) {
	return s.txns[name].Checkpoint(name)
}

// Restore implements changelogTarget.
func (s *standbyStores) Restore(name string, changes []store.Change, next int64) error {
	return s.txns[name].Restore(name, changes, next)
}

// Wipe implements changelogTarget.
func (s *standbyStores) Wipe(name string) error { return s.txns[name].Wipe(name) }
