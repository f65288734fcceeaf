package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exactly-go/exactly/internal/crashpoint"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kgo"
)

// worker is one slot of the instance: it runs group memberships (sessions)
// one after another, each with its own client and (transactional) producer.
// It owns its tasks; rebalance callbacks reach them only under mu, and with
// BlockRebalanceOnPoll they run only while the worker is polling.
type worker struct {
	r     *Runner
	index int
	log   *slog.Logger
	eos   bool
	ready func() // marks the worker's slot ready, once for all its replacements

	mu sync.Mutex
	// The current membership; session replaces it, under mu, with a new
	// one, so no field of an ended membership is ever reused.
	*membership

	// uncommittedSince is when the worker first processed work that no
	// commit has made durable yet (unix ns, 0: none); it survives failed
	// sessions, so that repeated failures show as a stall.
	uncommittedSince atomic.Int64
	stalled          atomic.Bool
	cancelSession    atomic.Pointer[context.CancelCauseFunc]
	rebalancingSince atomic.Int64 // unix ns since the worker rebalances (0: running)
	// endPoll ends the poll in progress (nil between polls), so that newly
	// assigned tasks start at once rather than at the poll's deadline.
	endPoll atomic.Pointer[context.CancelFunc]
	// finalCommit is set while the current session's final commit may run
	// (shutdown): the group's revocation and loss callbacks then leave the
	// tasks alone (see onRevoked).
	finalCommit atomic.Bool
}

func newWorker(r *Runner, index int, ready func()) *worker {
	return &worker{
		r:     r,
		index: index,
		log:   r.cfg.Logger.With("worker", index),
		eos:   r.cfg.Guarantee == ExactlyOnceV2,
		ready: ready,
	}
}

// run runs sessions until ctx ends or one fails for good (a fatal error or
// a configuration no retry cures). A session that fails for another reason
// (fencing, an unknown transaction outcome, a lost connection) is closed,
// its tasks dropped uncommitted, and a new session joins the group after a
// backoff that grows from 500ms to 30s while sessions keep failing fast.
func (w *worker) run(ctx context.Context) error {
	backoff := 500 * time.Millisecond
	for {
		started := time.Now()
		err := w.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if fenced(err) {
			w.r.metrics.fencedProducers.Inc()
		}
		var ce *ConfigError
		if isFatal(err) || errors.As(err, &ce) {
			return err
		}
		if time.Since(started) > time.Minute {
			backoff = 500 * time.Millisecond
		}
		w.log.Warn("session ended; rejoining", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
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
		kgo.Balancers(w.balancer()),
		kgo.BlockRebalanceOnPoll(),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(cfg.RebalanceTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, cfg.SessionTimeout/3)),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(), // skipped, but they show the position (reportLag)
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RecordPartitioner(explicitOrKeyPartitioner{}),
		kgo.OnPartitionsAssigned(w.onAssigned),
		kgo.OnPartitionsRevoked(w.onRevoked),
		kgo.OnPartitionsLost(w.onLost),
	)
	if crashpoint.Armed() {
		opts = append(opts, kgo.WithHooks(protocolCrashHooks{}))
	}
	if id := w.instanceID(); id != "" {
		opts = append(opts, kgo.InstanceID(id))
	}
	if w.eos {
		opts = append(opts,
			kgo.TransactionalID(fmt.Sprintf("%s-%s-%d", cfg.ApplicationID, w.r.process, w.index)),
			kgo.TransactionTimeout(cfg.TransactionTimeout),
		)
	}
	return opts
}

// instanceID is the worker's static group instance id ("": dynamic).
func (w *worker) instanceID() string {
	if w.r.cfg.InstanceID == "" {
		return ""
	}
	return fmt.Sprintf("%s-%d", w.r.cfg.InstanceID, w.index)
}

// errStalled ends a session the watchdog found stalled.
var errStalled = errors.New("stalled: processed work stayed uncommitted longer than StallTimeout")

// session is one membership in the group, from join to close.
func (w *worker) session(parent context.Context) (err error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	w.cancelSession.Store(&cancel)
	m, err := w.join(ctx)
	if err != nil {
		return err
	}
	defer m.cancelProduce()
	defer w.closeSession(ctx)
	w.rebalancing()

	for {
		if ctx.Err() != nil {
			w.shutdown()
			if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
				return cause
			}
			return nil
		}
		if w.r.shutdownGranted.Load() {
			w.shutdown()
			if cause := w.r.shutdownCause.Load(); cause != nil && w.r.shutdownAsked.Load() {
				return &ApplicationShutdownError{Cause: *cause}
			}
			return &ApplicationShutdownError{}
		}
		pollCtx, cancel := context.WithDeadline(ctx, w.lastCommit.Add(w.r.cfg.CommitInterval))
		polled := time.Now()
		w.endPoll.Store(&cancel)
		fetches := w.cl.PollRecords(pollCtx, w.r.cfg.MaxPollRecords)
		w.endPoll.Store(nil)
		cancel()
		w.r.metrics.pollLatency.Observe(time.Since(polled).Seconds())
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
	if w.r.shutdownAsked.Load() {
		// Waiting for the group to pass the request on: nothing is
		// processed, the poll only drives the rebalance.
		return nil
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
	rewound, err := w.restorePending(ctx)
	if err != nil {
		return err
	}
	if w.assigned {
		w.ready()
		w.running()
	}

	start := time.Now()
	n := 0
	var procErr error
	// raw holds each record while its task processes it; no task keeps it
	// after Process returns, so one serves the whole batch.
	var raw topo.Raw
	fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
		if procErr != nil || len(fp.Records) == 0 {
			return
		}
		tp := task.TopicPartition{Topic: fp.Topic, Partition: fp.Partition}
		if rewound[tp] {
			return // fetched from the old position; the consumer fetches again from the committed one
		}
		lt := w.byInput[tp]
		if lt == nil {
			procErr = fmt.Errorf("records for %s/%d, which has no task", fp.Topic, fp.Partition)
			return
		}
		processed := 0
		for _, rec := range fp.Records {
			if rec.Attrs.IsControl() {
				// A transaction marker: nothing to process, but the
				// position is past it (see reportLag).
				lt.seenEnd[tp] = rec.Offset + 1
				continue
			}
			lt.dataEnd[tp], lt.seenEnd[tp] = rec.Offset+1, rec.Offset+1
			if rec.Offset < lt.committed[tp] {
				continue // committed before: its effects are durable already
			}
			raw = rawOf(rec)
			if err := lt.task.Process(&raw); err != nil {
				procErr = err
				return
			}
			w.timestamps = append(w.timestamps, raw.Timestamp)
			n++
			processed++
		}
		lt.processed.Add(float64(processed))
		lt.stableEnd[tp] = fp.LastStableOffset
		w.reportLag(lt, tp)
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
		w.uncommittedSince.CompareAndSwap(0, time.Now().UnixNano())
		w.r.metrics.processed.Add(float64(n))
		crashpoint.Reach(crashpoint.AfterProcess)
		w.r.metrics.processLatency.Observe(time.Since(start).Seconds() / float64(n))
	}
	if procErr != nil {
		w.abortAll()
		if w.eos && w.inTxn {
			abortCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.commitTimeout())
			if w.waitInflight(abortCtx) == nil {
				w.sess.End(abortCtx, kgo.TryAbort)
			}
			cancel()
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
		commitCtx, cancelDeadline := context.WithTimeout(commitCtx, w.commitTimeout())
		defer cancelDeadline()
		return w.commit(commitCtx)
	}
	return w.sendOutputs(ctx)
}

// reportLag sets exactly_consumer_lag of one input partition: the offsets
// between what the group has committed and the partition's last stable
// offset, so that it grows while nothing commits. Transaction markers
// after the last committed record are not lag: once every record fetched
// is committed, the position past the markers counts as consumed, so an
// idle transactional input reads 0.
func (w *worker) reportLag(lt *liveTask, tp task.TopicPartition) {
	consumed := max(lt.committed[tp], 0)
	if consumed >= lt.dataEnd[tp] {
		consumed = max(consumed, lt.seenEnd[tp])
	}
	lag := max(lt.stableEnd[tp]-consumed, 0)
	w.r.metrics.lag.WithLabelValues(tp.Topic, strconv.Itoa(int(tp.Partition))).Set(float64(lag))
}

// commitTimeout bounds one commit: a transaction open longer than the
// transaction timeout is aborted by the broker anyway.
func (w *worker) commitTimeout() time.Duration { return w.r.cfg.TransactionTimeout }

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
