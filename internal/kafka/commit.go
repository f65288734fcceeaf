package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exactly-go/exactly/internal/crashpoint"
	"github.com/exactly-go/exactly/internal/kafkaerr"
	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

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
			w.sendOutput(&outs[i])
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
// onAck runs with the acknowledged record. A record the broker refuses for
// good is also kept as a refusal of out (nil for changelog records). The
// record is bound to produceCtx, not the run's context: cancelling the run
// must not fail the sends that the shutdown's final commit waits for.
func (w *worker) send(rec *kgo.Record, out *topo.Output, onAck func(*kgo.Record)) {
	m := w.membership
	m.inflight.Add(1)
	m.cl.Produce(m.produceCtx, rec, func(r *kgo.Record, err error) {
		defer m.inflight.Done()
		if err != nil {
			w.produceFailed(m, r, out, err)
			return
		}
		if onAck != nil {
			onAck(r)
		}
	})
}

// produceFailed keeps a failed send for the commit of the membership m
// that sent it.
func (w *worker) produceFailed(m *membership, r *kgo.Record, out *topo.Output, err error) {
	kind := "transient"
	switch {
	case kafkaerr.RefusedForGood(err):
		kind = "refused"
	case unknownTopic(err):
		// The topic was deleted, perhaps recreated: the producer must learn
		// the topic's new id before a later commit can succeed.
		kind = "unknown-topic"
		m.cl.ForceMetadataRefresh()
	}
	w.r.metrics.produceErrors.WithLabelValues(r.Topic, kind).Inc()
	m.produceMu.Lock()
	defer m.produceMu.Unlock()
	if m.produceErr == nil {
		m.produceErr = fmt.Errorf("produce to %s: %w", r.Topic, err)
	}
	if kind == "refused" {
		m.refused = append(m.refused, refusal{topic: r.Topic, out: out, size: len(r.Key) + len(r.Value), err: err})
	}
}

func (w *worker) sendOutput(out *topo.Output) {
	rec := &kgo.Record{Topic: out.Topic, Partition: out.Partition, Key: out.Key, Value: out.Value, Timestamp: time.UnixMilli(out.Timestamp)}
	if len(out.Headers) > 0 {
		rec.Headers = make([]kgo.RecordHeader, len(out.Headers))
		for i, h := range out.Headers {
			rec.Headers[i] = kgo.RecordHeader{Key: h.Key, Value: h.Value}
		}
	}
	if w.r.deadLetter[out.Topic] {
		w.deadLetters[out.Topic]++
	}
	w.r.metrics.outputsProduced.Inc()
	w.send(rec, out, nil)
}

// pendingCommit is one task's part of a commit in flight.
type pendingCommit struct {
	lt          *liveTask
	c           *task.Commit
	checkpoints map[string]int64
}

// commit makes everything the tasks produced since the last commit durable
// together, then applies the store buffers.
func (w *worker) commit(ctx context.Context) (err error) {
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
	span := w.traceCommit(ctx, parts, len(w.timestamps))
	defer func() { span.end(err) }()
	if len(parts) == 0 {
		// Every task was revoked or lost while the transaction was open:
		// nothing of it may commit.
		span.aborted()
		_, err := w.sess.End(ctx, kgo.TryAbort)
		w.inTxn, w.txnRebalanced = false, false
		w.r.metrics.transactions.WithLabelValues("aborted").Inc()
		if err != nil {
			return fmt.Errorf("abort transaction of revoked tasks: %w", err)
		}
		return nil
	}
	w.r.metrics.commits.Inc()
	if err := w.beginTxn(); err != nil {
		w.r.metrics.commitFailures.WithLabelValues("begin").Inc()
		return err
	}
	w.produce(parts)
	if err := w.waitInflight(ctx); err != nil {
		w.r.metrics.commitFailures.WithLabelValues("produce").Inc()
		return err
	}
	crashpoint.Reach(crashpoint.AfterProduce)
	w.produceMu.Lock()
	produceErr, refused := w.produceErr, w.refused
	w.produceErr, w.refused = nil, nil
	w.produceMu.Unlock()
	deadLetters := w.deadLetters
	w.deadLetters = map[string]int{}

	var committed bool
	if w.eos {
		endCtx := kgo.PreTxnCommitFnContext(ctx, w.txnOffsets(parts))
		try := kgo.TryCommit
		if produceErr != nil {
			try = kgo.TryAbort
		}
		var err error
		committed, err = w.sess.End(endCtx, try)
		rebalanced, spanned := w.txnRebalanced, w.txnSpannedRebalance
		w.inTxn, w.txnRebalanced, w.txnSpannedRebalance = false, false, false
		if err != nil {
			// The outcome is unknown: a new session starts from the
			// group's committed offsets and the changelogs.
			span.unknown()
			w.abortAll()
			w.r.metrics.transactions.WithLabelValues("aborted").Inc()
			w.r.metrics.commitFailures.WithLabelValues("end-transaction").Inc()
			return fmt.Errorf("end transaction: %w", err)
		}
		if !committed {
			span.aborted()
			w.r.metrics.transactions.WithLabelValues("aborted").Inc()
			w.timestamps = w.timestamps[:0]
			switch {
			case produceErr != nil:
				w.log.Info("transaction aborted after a failed send; input will be redelivered", "err", produceErr)
				w.abortAll()
				return w.refuse(refused)
			case rebalanced:
				w.log.Info("transaction aborted: partitions were revoked since the previous transaction ended; input will be redelivered")
				w.abortAll()
			default:
				// The session reports no commit, but some of the broker
				// answers it retries as an abort leave the first attempt's
				// outcome open (franz-go retries an unknown server error on
				// EndTxn as an abort). Only the group knows. Around a
				// rebalance this is the usual abort of a transaction whose
				// generation moved on: the same restart, said quietly.
				if spanned {
					w.log.Info("transaction aborted across a rebalance")
				} else {
					w.log.Warn("transaction not committed and the broker did not say why; its outcome is taken from the group")
				}
				w.restartTasks()
			}
			return nil
		}
		w.r.metrics.transactions.WithLabelValues("committed").Inc()
		crashpoint.Reach(crashpoint.AfterEndTxn)
	} else if produceErr != nil {
		// Nothing was applied and no offset committed: rewind and redo.
		span.aborted()
		w.abortAll()
		w.cl.SetOffsets(w.cl.CommittedOffsets())
		w.log.Warn("produce failed; input will be redelivered", "err", produceErr)
		w.timestamps = w.timestamps[:0]
		return w.refuse(refused)
	}
	for topic, n := range deadLetters {
		w.r.metrics.deadLetters.WithLabelValues(topic).Add(float64(n))
	}

	for _, p := range parts {
		maps.Copy(p.lt.committed, p.c.Offsets)
		for tp := range p.lt.stableEnd {
			w.reportLag(p.lt, tp)
		}
		if p.lt.persistent != nil {
			if err := store.CheckFreeSpace(p.lt.persistent.Dir()); err != nil {
				return fmt.Errorf("apply committed writes of task %s: %w", p.lt.id, err)
			}
		}
		if err := p.lt.task.CompleteCommit(p.checkpoints); err != nil {
			// The commit is durable; only the local store is behind. A new
			// session restores it from its checkpoint.
			return fmt.Errorf("apply committed writes of task %s: %w", p.lt.id, err)
		}
	}
	if !w.eos {
		w.commitOffsets(ctx, parts)
	}
	w.uncommittedSince.Store(0)
	if w.stalled.CompareAndSwap(true, false) {
		w.r.metrics.stalledWorkers.Dec()
		w.log.Info("committing again after a stall")
	}
	w.r.metrics.observeCommitted(w.timestamps, time.Now().UnixMilli())
	w.timestamps = w.timestamps[:0]
	w.r.metrics.commitLatency.Observe(time.Since(start).Seconds())
	return nil
}

// produce sends the remaining outputs and every changelog record of the
// commit, recording each store's checkpoint (the offset after its last
// acknowledged changelog record) as acknowledgements arrive.
func (w *worker) produce(parts []*pendingCommit) {
	var mu sync.Mutex
	for _, p := range parts {
		for i := range p.c.Outputs {
			w.sendOutput(&p.c.Outputs[i])
		}
		for _, sc := range p.c.Changelogs {
			topic := topo.ChangelogTopic(w.r.cfg.ApplicationID, sc.Store)
			storeName, checkpoints := sc.Store, p.checkpoints
			onAck := func(r *kgo.Record) {
				mu.Lock()
				if r.Offset+1 > checkpoints[storeName] {
					checkpoints[storeName] = r.Offset + 1
				}
				mu.Unlock()
			}
			for _, ch := range sc.Changes {
				rec := &kgo.Record{Topic: topic, Partition: p.lt.id.Partition, Key: ch.Key, Value: ch.Value}
				if p.c.StreamTime >= 0 {
					rec.Timestamp = time.UnixMilli(p.c.StreamTime)
				}
				w.send(rec, nil, onAck)
			}
		}
	}
}

// txnOffsets completes the transaction's offset commit. It puts each
// task's stream time into the metadata of its partitions' offsets, so a task
// restarted anywhere resumes at the same stream time; and it commits the
// offsets of every task in the transaction, also of those that consumed
// nothing since the last commit (their committed offset again). An offset
// commit is what makes the group coordinator check this member's generation
// (KIP-447): without one, a member expelled from the group could still
// commit what a wall-clock punctuator produced for tasks another member now
// owns. A transaction that would carry no offset at all is refused.
func (w *worker) txnOffsets(parts []*pendingCommit) func(*kmsg.TxnOffsetCommitRequest) error {
	times := w.streamTimes(parts)
	return func(req *kmsg.TxnOffsetCommitRequest) error {
		have := map[task.TopicPartition]bool{}
		topicIndex := map[string]int{}
		for i, t := range req.Topics {
			topicIndex[t.Topic] = i
			for _, p := range t.Partitions {
				have[task.TopicPartition{Topic: t.Topic, Partition: p.Partition}] = true
			}
		}
		for _, p := range parts {
			for _, tp := range slices.SortedFunc(maps.Keys(p.lt.committed), compareTopicPartitions) {
				if have[tp] {
					continue
				}
				i, ok := topicIndex[tp.Topic]
				if !ok {
					rt := kmsg.NewTxnOffsetCommitRequestTopic()
					rt.Topic, rt.TopicID = tp.Topic, w.r.topicIDs[tp.Topic]
					req.Topics = append(req.Topics, rt)
					i = len(req.Topics) - 1
					topicIndex[tp.Topic] = i
				}
				rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
				rp.Partition, rp.LeaderEpoch = tp.Partition, -1
				// Nothing committed yet: offset 0 resumes where no commit
				// would (the consumer starts at the earliest offset).
				rp.Offset = max(p.lt.committed[tp], 0)
				req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
			}
		}
		if len(req.Topics) == 0 {
			return errNoOffsets
		}
		for i, t := range req.Topics {
			for j, p := range t.Partitions {
				req.Topics[i].Partitions[j].Metadata = times.of(t.Topic, p.Partition, p.Metadata)
			}
		}
		return nil
	}
}

// errNoOffsets aborts a transaction that holds no task's offsets.
var errNoOffsets = errors.New("the transaction carries no input offset, so the group cannot confirm this member may write it")

func compareTopicPartitions(a, b task.TopicPartition) int {
	if c := strings.Compare(a.Topic, b.Topic); c != 0 {
		return c
	}
	return int(a.Partition - b.Partition)
}

// streamTimes is the offset-commit metadata of each input partition of a
// commit: its task's stream time.
type streamTimes map[task.TopicPartition]string

func (w *worker) streamTimes(parts []*pendingCommit) streamTimes {
	times := streamTimes{}
	for _, p := range parts {
		meta := encodeStreamTime(p.c.StreamTime)
		for _, topic := range p.lt.task.SourceTopics() {
			times[task.TopicPartition{Topic: topic, Partition: p.lt.id.Partition}] = meta
		}
	}
	return times
}

// of returns the metadata to commit for topic/partition, or def when the
// commit has no task for it.
func (s streamTimes) of(topic string, partition int32, def *string) *string {
	if st, ok := s[task.TopicPartition{Topic: topic, Partition: partition}]; ok {
		return &st
	}
	return def
}

// commitOffsets commits input offsets after the outputs were acknowledged
// (at_least_once). A failure only logs: the outputs are durable and the
// stores applied, so the input after the last commit is redelivered.
func (w *worker) commitOffsets(ctx context.Context, parts []*pendingCommit) {
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
		return
	}
	times := w.streamTimes(parts)
	commitCtx := kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i, t := range req.Topics {
			for j, p := range t.Partitions {
				req.Topics[i].Partitions[j].Metadata = times.of(t.Topic, p.Partition, p.Metadata)
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
		w.r.metrics.commitFailures.WithLabelValues("offsets").Inc()
		w.log.Warn("offset commit failed; records after the last commit will be redelivered", "err", commitErr)
	}
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

// waitInflight waits for every record sent to be acknowledged or failed,
// as long as ctx allows. A broker that neither answers nor fails the sends
// ends the session (closing the client fails what is left).
func (w *worker) waitInflight(ctx context.Context) error {
	done, m := make(chan struct{}), w.membership
	go func() { m.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		w.abortAll()
		return fmt.Errorf("records sent but neither acknowledged nor failed: %w", context.Cause(ctx))
	}
}

// abortAll discards every task's work since the last commit.
func (w *worker) abortAll() {
	w.deadLetters = map[string]int{}
	for _, lt := range w.tasks {
		lt.task.Abort()
	}
}

// refusal is an output (or changelog record, out nil) the broker refused
// for good.
type refusal struct {
	topic string
	out   *topo.Output
	size  int
	err   error
}

// refuse hands each refused output's input record to its task, which will
// not process it again but dead-letter it or fail (OnProductionError), so
// that the record never stops the other records and partitions of the
// worker. A refused record that no input record can answer for (a changelog
// record, a punctuator's output, a dead letter) stops the worker.
func (w *worker) refuse(refused []refusal) error {
	for _, r := range refused {
		if r.out == nil || r.out.SourceTopic == "" || w.r.deadLetter[r.topic] {
			what := "a changelog record"
			switch {
			case r.out != nil && w.r.deadLetter[r.topic]:
				what = "a dead letter"
			case r.out != nil:
				what = "an output of a punctuator"
			}
			return &refusedError{what: what, topic: r.topic, size: r.size, err: r.err}
		}
		tp := task.TopicPartition{Topic: r.out.SourceTopic, Partition: r.out.SourcePartition}
		if lt := w.byInput[tp]; lt != nil {
			w.log.Warn("output refused by the broker; its input record will not be processed again",
				"topic", r.topic, "bytes", r.size, "source_topic", tp.Topic, "source_partition", tp.Partition, "source_offset", r.out.SourceOffset, "err", r.err)
			lt.task.Refuse(tp, r.out.SourceOffset, fmt.Errorf("the broker refuses an output of %d bytes to %s: %w", r.size, r.topic, r.err))
		}
	}
	return nil
}

func unknownTopic(err error) bool {
	return errors.Is(err, kerr.UnknownTopicID) || errors.Is(err, kerr.UnknownTopicOrPartition)
}
