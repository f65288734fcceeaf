package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/store"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// worker is one consumer-group member with its own (transactional)
// producer. It owns its tasks; rebalance callbacks reach them only under mu,
// and with BlockRebalanceOnPoll they run only while the worker is polling.
type worker struct {
	r     *Runner
	index int
	log   *slog.Logger
	eos   bool
	ready chan struct{}

	sess *kgo.GroupTransactSession // exactly_once_v2 only
	cl   *kgo.Client
	adm  *kadm.Client

	mu        sync.Mutex
	tasks     map[topo.TaskID]*liveTask
	byInput   map[task.TopicPartition]*liveTask
	pending   map[string][]int32 // assigned, not yet restored
	assigned  bool
	readyOnce sync.Once

	lastCommit time.Time
	timestamps []int64 // record timestamps since the last commit
	fatal      error   // a failure that must stop the worker

	inTxn bool // a transaction is open (exactly_once_v2)
	// produceCtx governs sends. It outlives the run's context, so that
	// records sent before a shutdown still reach the final commit; it ends
	// with the session, or when the shutdown's commit runs out of time.
	produceCtx    context.Context
	cancelProduce context.CancelFunc
	inflight      *sync.WaitGroup // records sent and not yet acknowledged
	produceMu     sync.Mutex
	produceErr    error // the first failed send of the current commit
}

type liveTask struct {
	id         topo.TaskID
	task       *task.Task
	memory     *store.Memory
	persistent *store.Pebble
}

func newWorker(r *Runner, index int, ready chan struct{}) (*worker, error) {
	return &worker{
		r:     r,
		index: index,
		log:   r.cfg.Logger.With("worker", index),
		eos:   r.cfg.Guarantee == ExactlyOnceV2,
		ready: ready,
	}, nil
}

// run runs sessions until ctx ends. A session that fails for a reason
// other than a record the topology fails on (fencing, an unknown
// transaction outcome, a lost connection) is closed, its tasks dropped
// uncommitted, and a new session joins the group.
func (w *worker) run(ctx context.Context) error {
	for {
		err := w.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		var re *task.RecordError
		var ce *configError
		if errors.As(err, &re) || errors.As(err, &ce) {
			return err
		}
		w.log.Warn("session ended; rejoining", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (w *worker) clientOptions() []kgo.Opt {
	cfg := &w.r.cfg
	var topics []string
	for _, sub := range w.r.topo.Subtopologies() {
		topics = append(topics, sub.SourceTopics...)
	}
	opts := append(w.r.clientOptions(),
		kgo.ConsumerGroup(cfg.ApplicationID),
		kgo.ConsumeTopics(topics...),
		kgo.Balancers(newTaskBalancer(w.r.topo)),
		kgo.BlockRebalanceOnPoll(),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(cfg.RebalanceTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, cfg.SessionTimeout/3)),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RecordPartitioner(explicitOrKeyPartitioner{}),
		kgo.OnPartitionsAssigned(w.onAssigned),
		kgo.OnPartitionsRevoked(w.onRevoked),
		kgo.OnPartitionsLost(w.onLost),
	)
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(fmt.Sprintf("%s-%d", cfg.InstanceID, w.index)))
	}
	if w.eos {
		opts = append(opts,
			kgo.TransactionalID(fmt.Sprintf("%s-%s-%d", cfg.ApplicationID, w.r.process, w.index)),
			kgo.TransactionTimeout(cfg.TransactionTimeout),
		)
	}
	return opts
}

// session is one membership in the group, from join to close.
func (w *worker) session(ctx context.Context) (err error) {
	w.tasks = map[topo.TaskID]*liveTask{}
	w.byInput = map[task.TopicPartition]*liveTask{}
	w.pending = map[string][]int32{}
	w.fatal = nil
	w.inTxn = false
	w.inflight = &sync.WaitGroup{}
	w.produceErr = nil
	w.produceCtx, w.cancelProduce = context.WithCancel(context.WithoutCancel(ctx))
	defer w.cancelProduce()
	if w.eos {
		w.sess, err = kgo.NewGroupTransactSession(w.clientOptions()...)
		if err != nil {
			return &configError{fmt.Errorf("create transactional session: %w", err)}
		}
		w.cl = w.sess.Client()
	} else {
		w.cl, err = kgo.NewClient(w.clientOptions()...)
		if err != nil {
			return &configError{fmt.Errorf("create client: %w", err)}
		}
	}
	w.adm = kadm.NewClient(w.cl)
	defer w.closeSession(ctx)

	w.lastCommit = time.Now()
	for {
		if ctx.Err() != nil {
			return w.shutdown()
		}
		pollCtx, cancel := context.WithDeadline(ctx, w.lastCommit.Add(w.r.cfg.CommitInterval))
		fetches := w.cl.PollRecords(pollCtx, w.r.cfg.MaxPollRecords)
		cancel()
		if fetches.IsClientClosed() {
			return errors.New("client closed")
		}
		err := w.iteration(ctx, fetches)
		w.cl.AllowRebalance()
		if err != nil {
			return err
		}
	}
}

// iteration restores newly assigned tasks, processes one polled batch and
// commits when the interval has passed, all while rebalances are blocked.
func (w *worker) iteration(ctx context.Context, fetches kgo.Fetches) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fatal != nil {
		return w.fatal
	}
	var fetchErr error
	fetches.EachError(func(topic string, p int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return
		}
		w.log.Warn("fetch error", "topic", topic, "partition", p, "err", err)
		fetchErr = err
	})
	if fetchErr != nil {
		if err := configFetchError(fetchErr); err != nil {
			return err
		}
	}
	if fetchErr != nil && isFatalFetchError(fetchErr) {
		return fetchErr
	}
	if err := w.restorePending(ctx); err != nil {
		return err
	}
	if w.assigned {
		w.readyOnce.Do(func() { close(w.ready) })
	}

	start := time.Now()
	n := 0
	var procErr error
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if procErr != nil || len(fp.Records) == 0 {
			return
		}
		lt := w.byInput[task.TopicPartition{Topic: fp.Topic, Partition: fp.Partition}]
		if lt == nil {
			procErr = fmt.Errorf("records for %s/%d, which has no task", fp.Topic, fp.Partition)
			return
		}
		for _, rec := range fp.Records {
			raw := rawOf(rec)
			if err := lt.task.Process(&raw); err != nil {
				procErr = err
				return
			}
			w.timestamps = append(w.timestamps, raw.Timestamp)
			n++
		}
		last := fp.Records[len(fp.Records)-1].Offset
		w.r.metrics.lag.WithLabelValues(fp.Topic, strconv.Itoa(int(fp.Partition))).Set(float64(max(fp.HighWatermark-last-1, 0)))
	})
	if procErr == nil {
		now := time.Now().UnixMilli()
		for _, lt := range w.tasks {
			if err := lt.task.AdvanceWallClock(now); err != nil {
				procErr = err
				break
			}
		}
	}
	if n > 0 {
		w.r.metrics.processed.Add(float64(n))
		w.r.metrics.processLatency.Observe(time.Since(start).Seconds() / float64(n))
	}
	if procErr != nil {
		w.abortAll()
		w.inflight.Wait()
		if w.eos && w.inTxn {
			w.sess.End(ctx, kgo.TryAbort)
			w.inTxn = false
		}
		return procErr
	}
	if ctx.Err() != nil {
		// Stopping: the shutdown's commit, which has a context of its own,
		// commits this batch; a commit under the cancelled context would
		// fail and discard (EOS) or leave uncommitted (ALOS) its work.
		return nil
	}
	if time.Since(w.lastCommit) >= w.r.cfg.CommitInterval {
		commitCtx, cancel := withGrace(ctx, shutdownGrace)
		defer cancel()
		return w.commit(commitCtx)
	}
	return w.sendOutputs(ctx)
}

// sendOutputs sends the output records processed so far without waiting,
// so that producing overlaps with processing; under exactly_once_v2 they go
// into the open transaction and share its fate.
func (w *worker) sendOutputs(ctx context.Context) error {
	for _, lt := range w.tasks {
		outs := lt.task.TakeOutputs()
		if len(outs) == 0 {
			continue
		}
		if err := w.beginTxn(); err != nil {
			return err
		}
		for i := range outs {
			w.sendOutput(ctx, &outs[i])
		}
	}
	return nil
}

func (w *worker) beginTxn() error {
	if !w.eos || w.inTxn {
		return nil
	}
	if err := w.sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	w.inTxn = true
	return nil
}

// send produces rec asynchronously; failures are kept for the commit, and
// onAck runs with the acknowledged record. The record is bound to
// produceCtx, not ctx: cancelling the run must not fail the sends that the
// shutdown's final commit waits for.
func (w *worker) send(_ context.Context, rec *kgo.Record, onAck func(*kgo.Record)) {
	w.inflight.Add(1)
	wg := w.inflight
	w.cl.Produce(w.produceCtx, rec, func(r *kgo.Record, err error) {
		defer wg.Done()
		if err != nil {
			w.produceMu.Lock()
			if w.produceErr == nil {
				w.produceErr = fmt.Errorf("produce to %s: %w", r.Topic, err)
			}
			w.produceMu.Unlock()
			return
		}
		if onAck != nil {
			onAck(r)
		}
	})
}

func (w *worker) sendOutput(ctx context.Context, out *topo.Output) {
	rec := &kgo.Record{Topic: out.Topic, Partition: out.Partition, Key: out.Key, Value: out.Value, Timestamp: time.UnixMilli(out.Timestamp)}
	if len(out.Headers) > 0 {
		rec.Headers = make([]kgo.RecordHeader, len(out.Headers))
		for i, h := range out.Headers {
			rec.Headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
	}
	if w.r.deadLetter[out.Topic] {
		w.r.metrics.deadLetters.WithLabelValues(out.Topic).Inc()
	}
	w.r.metrics.outputsProduced.Inc()
	w.send(ctx, rec, nil)
}

func isFatalFetchError(err error) bool {
	return errors.Is(err, kgo.ErrClientClosed)
}

// configFetchError turns a group error no rejoin can cure into a
// configError that says what to change.
func configFetchError(err error) error {
	switch {
	case errors.Is(err, kerr.InvalidSessionTimeout):
		return &configError{fmt.Errorf("the broker refuses the session timeout (group.min/max.session.timeout.ms): change SessionTimeout: %w", err)}
	case errors.Is(err, kerr.GroupAuthorizationFailed), errors.Is(err, kerr.TopicAuthorizationFailed),
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed), errors.Is(err, kerr.SaslAuthenticationFailed):
		return &configError{fmt.Errorf("not authorized: check the credentials and ACLs: %w", err)}
	}
	return nil
}

func rawOf(rec *kgo.Record) topo.Raw {
	raw := topo.Raw{
		Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset,
		Key: rec.Key, Value: rec.Value, Timestamp: rec.Timestamp.UnixMilli(),
	}
	if len(rec.Headers) > 0 {
		raw.Headers = make([]topo.Header, len(rec.Headers))
		for i, h := range rec.Headers {
			raw.Headers[i] = topo.Header{Key: h.Key, Value: h.Value}
		}
	}
	return raw
}

// pendingCommit is one task's part of a commit in flight.
type pendingCommit struct {
	lt          *liveTask
	c           *task.Commit
	checkpoints map[string]int64
}

// commit makes everything the tasks produced since the last commit durable
// together, then applies the store buffers.
func (w *worker) commit(ctx context.Context) error {
	start := time.Now()
	w.lastCommit = start
	var parts []*pendingCommit
	nothing := true
	for _, id := range slices.SortedFunc(maps.Keys(w.tasks), compareTaskIDs) {
		lt := w.tasks[id]
		c := lt.task.PrepareCommit()
		if !c.Empty() {
			nothing = false
		}
		parts = append(parts, &pendingCommit{lt: lt, c: c, checkpoints: map[string]int64{}})
	}
	if nothing && !w.inTxn {
		return nil
	}
	w.r.metrics.commits.Inc()
	if err := w.beginTxn(); err != nil {
		return err
	}
	w.produce(ctx, parts)
	w.inflight.Wait()
	w.produceMu.Lock()
	produceErr := w.produceErr
	w.produceErr = nil
	w.produceMu.Unlock()

	var committed bool
	if w.eos {
		endCtx := kgo.PreTxnCommitFnContext(ctx, w.streamTimeMetadata(parts))
		try := kgo.TryCommit
		if produceErr != nil {
			try = kgo.TryAbort
		}
		var err error
		committed, err = w.sess.End(endCtx, try)
		w.inTxn = false
		if err != nil {
			w.abortAll()
			w.r.metrics.transactions.WithLabelValues("aborted").Inc()
			return fmt.Errorf("end transaction: %w", err)
		}
		if !committed {
			w.log.Info("transaction aborted; input will be redelivered", "produce_err", produceErr)
			w.abortAll()
			w.r.metrics.transactions.WithLabelValues("aborted").Inc()
			w.timestamps = w.timestamps[:0]
			return nil
		}
		w.r.metrics.transactions.WithLabelValues("committed").Inc()
	} else if produceErr != nil {
		// Nothing was applied and no offset committed: rewind and redo.
		w.abortAll()
		w.cl.SetOffsets(w.cl.CommittedOffsets())
		w.log.Warn("produce failed; input will be redelivered", "err", produceErr)
		w.timestamps = w.timestamps[:0]
		return nil
	}

	for _, p := range parts {
		if err := p.lt.task.CompleteCommit(p.checkpoints); err != nil {
			// The commit is durable; only the local store is behind. A new
			// session restores it from its checkpoint.
			return fmt.Errorf("apply committed writes of task %s: %w", p.lt.id, err)
		}
	}
	if !w.eos {
		if err := w.commitOffsets(ctx, parts); err != nil {
			return err
		}
	}
	now := time.Now()
	for _, ts := range w.timestamps {
		w.r.metrics.e2eLatency.Observe(float64(now.UnixMilli()-ts) / 1000)
	}
	w.timestamps = w.timestamps[:0]
	w.r.metrics.commitLatency.Observe(time.Since(start).Seconds())
	return nil
}

// produce sends the remaining outputs and every changelog record of the
// commit, recording each store's checkpoint (the offset after its last
// acknowledged changelog record) as acknowledgements arrive.
func (w *worker) produce(ctx context.Context, parts []*pendingCommit) {
	var mu sync.Mutex
	for _, p := range parts {
		for i := range p.c.Outputs {
			w.sendOutput(ctx, &p.c.Outputs[i])
		}
		for _, sc := range p.c.Changelogs {
			topic := topo.ChangelogTopic(w.r.cfg.ApplicationID, sc.Store)
			storeName, checkpoints := sc.Store, p.checkpoints
			for _, ch := range sc.Changes {
				rec := &kgo.Record{Topic: topic, Partition: p.lt.id.Partition, Key: ch.Key, Value: ch.Value}
				if p.c.StreamTime >= 0 {
					rec.Timestamp = time.UnixMilli(p.c.StreamTime)
				}
				w.send(ctx, rec, func(r *kgo.Record) {
					mu.Lock()
					if r.Offset+1 > checkpoints[storeName] {
						checkpoints[storeName] = r.Offset + 1
					}
					mu.Unlock()
				})
			}
		}
	}
}

// streamTimeMetadata writes each task's stream time into the metadata of
// its partitions' offset commits, so a task restarted anywhere resumes at
// the same stream time.
func (w *worker) streamTimeMetadata(parts []*pendingCommit) func(*kmsg.TxnOffsetCommitRequest) error {
	times := w.streamTimes(parts)
	return func(req *kmsg.TxnOffsetCommitRequest) error {
		for i := range req.Topics {
			t := &req.Topics[i]
			for j := range t.Partitions {
				if st, ok := times[task.TopicPartition{Topic: t.Topic, Partition: t.Partitions[j].Partition}]; ok {
					t.Partitions[j].Metadata = &st
				}
			}
		}
		return nil
	}
}

func (w *worker) streamTimes(parts []*pendingCommit) map[task.TopicPartition]string {
	times := map[task.TopicPartition]string{}
	for _, p := range parts {
		meta := encodeStreamTime(p.c.StreamTime)
		for _, topic := range p.lt.task.SourceTopics() {
			times[task.TopicPartition{Topic: topic, Partition: p.lt.id.Partition}] = meta
		}
	}
	return times
}

// commitOffsets commits input offsets after the outputs were acknowledged
// (at_least_once).
func (w *worker) commitOffsets(ctx context.Context, parts []*pendingCommit) error {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	for _, p := range parts {
		for tp, next := range p.c.Offsets {
			if offsets[tp.Topic] == nil {
				offsets[tp.Topic] = map[int32]kgo.EpochOffset{}
			}
			offsets[tp.Topic][tp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: next}
		}
	}
	if len(offsets) == 0 {
		return nil
	}
	times := w.streamTimes(parts)
	commitCtx := kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			t := &req.Topics[i]
			for j := range t.Partitions {
				if st, ok := times[task.TopicPartition{Topic: t.Topic, Partition: t.Partitions[j].Partition}]; ok {
					t.Partitions[j].Metadata = &st
				}
			}
		}
		return nil
	})
	var commitErr error
	w.cl.CommitOffsetsSync(commitCtx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			commitErr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 && commitErr == nil {
					commitErr = fmt.Errorf("commit %s/%d: error code %d", t.Topic, p.Partition, p.ErrorCode)
				}
			}
		}
	})
	if commitErr != nil {
		// The outputs are durable and the stores applied; only the offsets
		// are behind, so the input is redelivered (at-least-once).
		w.log.Warn("offset commit failed; records after the last commit will be redelivered", "err", commitErr)
	}
	return nil
}

const streamTimePrefix = "exactly:v1:st="

func encodeStreamTime(st int64) string {
	if st == task.UnknownTime {
		return ""
	}
	return streamTimePrefix + strconv.FormatInt(st, 10)
}

func decodeStreamTime(meta string) int64 {
	s, ok := strings.CutPrefix(meta, streamTimePrefix)
	if !ok {
		return task.UnknownTime
	}
	st, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return task.UnknownTime
	}
	return st
}

// shutdownGrace bounds how long a commit may go on after the run is
// cancelled, and how long the final commit of a shutdown may take.
const shutdownGrace = 10 * time.Second

// withGrace returns a context that ends grace after ctx ends, so that a
// commit under way when the run is cancelled completes instead of failing
// half done (which would abort its transaction, or leave its offsets
// uncommitted under at_least_once, and redo the work after a restart).
func withGrace(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	out, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	return out, func() { stop(); cancel() }
}

// abortAll discards every task's work since the last commit.
func (w *worker) abortAll() {
	for _, lt := range w.tasks {
		lt.task.Abort()
	}
}

// shutdown commits what is pending and closes the tasks; the session's
// deferred close leaves the group.
func (w *worker) shutdown() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	stop := context.AfterFunc(ctx, w.cancelProduce)
	defer stop()
	if err := w.commit(ctx); err != nil {
		w.log.Warn("final commit failed", "err", err)
		w.abortAll()
	}
	w.log.Info("shut down cleanly")
	return nil
}

// closeSession closes every task without applying anything uncommitted and
// closes the client.
func (w *worker) closeSession(ctx context.Context) {
	w.mu.Lock()
	for id, lt := range w.tasks {
		w.closeTask(lt, false)
		delete(w.tasks, id)
	}
	w.byInput = map[task.TopicPartition]*liveTask{}
	w.mu.Unlock()
	if w.r.cfg.InstanceID != "" && !w.r.cfg.LeaveGroupOnClose {
		w.cl.CloseAllowingRebalance()
	} else {
		w.cl.LeaveGroup()
		w.cl.Close()
	}
}

func (w *worker) closeTask(lt *liveTask, abort bool) {
	w.r.setQueryable(lt.id, nil)
	if abort {
		lt.task.Abort()
	}
	if err := lt.task.Close(); err != nil {
		w.log.Warn("close task", "task", lt.id, "err", err)
	}
	if lt.persistent != nil {
		lt.persistent.Close()
	}
	for _, topic := range lt.task.SourceTopics() {
		delete(w.byInput, task.TopicPartition{Topic: topic, Partition: lt.id.Partition})
	}
	w.r.metrics.tasks.Dec()
}

// ---- rebalance callbacks (run while the worker is polling) ----

func (w *worker) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.assigned = true
	if len(assigned) > 0 {
		w.r.metrics.rebalances.WithLabelValues("assigned").Inc()
	}
	for topic, ps := range assigned {
		w.pending[topic] = append(w.pending[topic], ps...)
	}
	w.log.Info("partitions assigned", "partitions", assigned)
}

func (w *worker) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(revoked) == 0 {
		return // a rebalance that takes nothing from this member
	}
	w.r.metrics.rebalances.WithLabelValues("revoked").Inc()
	if !w.eos {
		// Hand the partitions over with their work committed.
		if err := w.commit(ctx); err != nil {
			w.log.Warn("commit on revocation failed", "err", err)
			w.abortAll()
		}
	}
	// Under exactly_once_v2 the session aborts the open transaction: the
	// revoked tasks' work is discarded here, the others' at the next End.
	w.dropTasks(revoked, w.eos)
	w.log.Info("partitions revoked", "partitions", revoked)
}

func (w *worker) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.r.metrics.rebalances.WithLabelValues("lost").Inc()
	w.dropTasks(lost, true)
	w.log.Warn("partitions lost", "partitions", lost)
}

func (w *worker) dropTasks(partitions map[string][]int32, abort bool) {
	for topic, ps := range partitions {
		for _, p := range ps {
			tp := task.TopicPartition{Topic: topic, Partition: p}
			if lt := w.byInput[tp]; lt != nil {
				w.closeTask(lt, abort)
				delete(w.tasks, lt.id)
			}
			if pend := w.pending[topic]; pend != nil {
				w.pending[topic] = slices.DeleteFunc(pend, func(x int32) bool { return x == p })
			}
		}
	}
}

func compareTaskIDs(a, b topo.TaskID) int {
	if a.Subtopology != b.Subtopology {
		return a.Subtopology - b.Subtopology
	}
	return int(a.Partition - b.Partition)
}

// taskDir is where a task's persistent stores live.
func (w *worker) taskDir(id topo.TaskID) string {
	return filepath.Join(w.r.stateDir, id.String())
}

func (w *worker) openPersistent(id topo.TaskID) (*store.Pebble, error) {
	dir := w.taskDir(id)
	p, err := store.OpenPebble(dir)
	if err == nil {
		return p, nil
	}
	w.log.Warn("local store unreadable; wiping it to rebuild from the changelog", "task", id, "dir", dir, "err", err)
	if rmErr := os.RemoveAll(dir); rmErr != nil {
		return nil, fmt.Errorf("wipe %s: %w", dir, rmErr)
	}
	return store.OpenPebble(dir)
}

// explicitOrKeyPartitioner keeps a partition the task chose (changelogs,
// custom partitioners) and otherwise hashes the key as Kafka does.
type explicitOrKeyPartitioner struct{}

func (explicitOrKeyPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	return &explicitTopicPartitioner{hash: kgo.StickyKeyPartitioner(nil).ForTopic(topic)}
}

type explicitTopicPartitioner struct {
	hash kgo.TopicPartitioner
}

func (p *explicitTopicPartitioner) RequiresConsistency(*kgo.Record) bool { return true }
func (p *explicitTopicPartitioner) Partition(r *kgo.Record, n int) int {
	if r.Partition >= 0 && int(r.Partition) < n {
		return int(r.Partition)
	}
	return p.hash.Partition(r, n)
}

// configError is a failure no retry can cure.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }
