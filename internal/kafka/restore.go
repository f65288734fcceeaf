package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/exactly-go/exactly/internal/crashpoint"
	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/internal/tracing"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// restorePending creates the tasks of newly assigned partitions: their
// positions and stream time from the group's committed offsets, their stores
// restored from checkpoint to the changelog's end, then their processors
// initialized. Partitions marked for rewind get their consumer position set
// to the committed offset; restorePending returns them, so that records
// fetched before the rewind are not processed.
func (w *worker) restorePending(ctx context.Context) (rewound map[task.TopicPartition]bool, err error) {
	if len(w.pending) == 0 {
		return nil, nil
	}
	var ids []topo.TaskID
	for topic, ps := range w.pending {
		sub, ok := w.r.subOf[topic]
		if !ok {
			continue
		}
		for _, p := range ps {
			id := topo.TaskID{Subtopology: sub, Partition: p}
			if _, ok := w.tasks[id]; !ok && !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	w.pending = map[string][]int32{}
	if len(ids) == 0 {
		return nil, nil
	}
	var partitions []task.TopicPartition
	for _, id := range ids {
		for _, topic := range w.r.topo.Subtopologies()[id.Subtopology].SourceTopics {
			partitions = append(partitions, task.TopicPartition{Topic: topic, Partition: id.Partition})
		}
	}
	committed, err := w.fetchCommitted(ctx, partitions)
	if err != nil {
		return nil, err
	}
	rewind := map[string]map[int32]kgo.EpochOffset{}
	for _, tp := range partitions {
		if !w.rewind[tp] {
			continue
		}
		delete(w.rewind, tp)
		if rewind[tp.Topic] == nil {
			rewind[tp.Topic] = map[int32]kgo.EpochOffset{}
		}
		// Offset 0 where nothing is committed: the consumer starts at the
		// earliest offset, as it does without a commit.
		rewind[tp.Topic][tp.Partition] = kgo.EpochOffset{Epoch: -1, Offset: max(committed[tp].offset, 0)}
		if rewound == nil {
			rewound = map[task.TopicPartition]bool{}
		}
		rewound[tp] = true
	}
	w.cl.SetOffsets(rewind)
	for _, id := range ids {
		lt, err := w.startTask(ctx, id, committed)
		if err != nil {
			w.r.restores.forget(id)
			return nil, fmt.Errorf("start task %s: %w", id, err)
		}
		w.tasks[id] = lt
		lt.query = &queryTarget{memory: lt.memory, persistent: pebbleOrNil(lt.persistent)}
		w.r.setQueryable(id, lt.query)
		for _, topic := range lt.task.SourceTopics() {
			w.byInput[task.TopicPartition{Topic: topic, Partition: id.Partition}] = lt
		}
		w.r.metrics.tasks.Inc()
	}
	return rewound, nil
}

// committedOffset is what the group holds for one input partition.
type committedOffset struct {
	offset     int64 // -1: nothing committed yet
	streamTime int64
}

// fetchCommitted reads the offsets (and the stream time in their metadata)
// committed for the given partitions. It asks for these partitions only and
// waits while one of them is held by an open transaction (KIP-447), so a
// previous owner's last commit is settled first; other members' pending
// commits elsewhere in the group do not hold it up.
func (w *worker) fetchCommitted(ctx context.Context, partitions []task.TopicPartition) (map[task.TopicPartition]committedOffset, error) {
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = w.r.cfg.ApplicationID
	req.RequireStable = true
	byTopic := map[string][]int32{}
	for _, tp := range partitions {
		byTopic[tp.Topic] = append(byTopic[tp.Topic], tp.Partition)
	}
	for _, topic := range slices.Sorted(maps.Keys(byTopic)) {
		rt := kmsg.NewOffsetFetchRequestTopic()
		rt.Topic, rt.Partitions = topic, byTopic[topic]
		req.Topics = append(req.Topics, rt)
	}
	ctx, cancel := context.WithTimeout(ctx, w.r.cfg.TransactionTimeout+w.r.cfg.SessionTimeout)
	defer cancel()
	var last error
	for {
		out, err := w.tryFetchCommitted(ctx, req)
		if err == nil {
			return out, nil
		}
		last = err
		if !errors.Is(err, kerr.UnstableOffsetCommit) && !kerr.IsRetriable(err) {
			return nil, fmt.Errorf("fetch committed offsets: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("fetch committed offsets: still unsettled after %v (a previous owner's transaction neither committed nor aborted): %w",
				w.r.cfg.TransactionTimeout+w.r.cfg.SessionTimeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *worker) tryFetchCommitted(ctx context.Context, req *kmsg.OffsetFetchRequest) (map[task.TopicPartition]committedOffset, error) {
	resp, err := req.RequestWith(ctx, w.cl)
	if err != nil {
		return nil, err
	}
	out := map[task.TopicPartition]committedOffset{}
	add := func(topic string, p int32, code int16, offset int64, meta *string) error {
		if err := kerr.ErrorForCode(code); err != nil {
			return fmt.Errorf("%s/%d: %w", topic, p, err)
		}
		c := committedOffset{offset: offset, streamTime: task.UnknownTime}
		if meta != nil {
			c.streamTime = decodeStreamTime(*meta)
		}
		out[task.TopicPartition{Topic: topic, Partition: p}] = c
		return nil
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, err
	}
	for _, g := range resp.Groups {
		if err := kerr.ErrorForCode(g.ErrorCode); err != nil {
			return nil, err
		}
		for _, t := range g.Topics {
			for _, p := range t.Partitions {
				if err := add(t.Topic, p.Partition, p.ErrorCode, p.Offset, p.Metadata); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := add(t.Topic, p.Partition, p.ErrorCode, p.Offset, p.Metadata); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// startTask creates, restores and initializes the task id. A standby of it
// in this process is stopped first, and its stores taken over: the restore
// then reads only what the standby had not applied.
func (w *worker) startTask(ctx context.Context, id topo.TaskID, committed map[task.TopicPartition]committedOffset) (_ *liveTask, err error) {
	memory, handed, err := w.r.standbys.takeOver(ctx, id)
	defer func() {
		if err != nil {
			w.r.standbys.activeClosed(id)
		}
	}()
	if err != nil {
		return nil, err
	}
	if memory != nil || handed != nil {
		w.log.Info("taking over the stores of this instance's standby", "task", id)
	}
	if memory == nil {
		memory = store.NewMemory()
	}
	sub := w.r.topo.Subtopologies()[id.Subtopology]
	lt := &liveTask{id: id, memory: memory, committed: map[task.TopicPartition]int64{}, stableEnd: map[task.TopicPartition]int64{},
		dataEnd: map[task.TopicPartition]int64{}, seenEnd: map[task.TopicPartition]int64{},
		processed: w.r.metrics.taskProcessed.WithLabelValues(id.String())}
	streamTime := int64(task.UnknownTime)
	for _, topic := range sub.SourceTopics {
		tp := task.TopicPartition{Topic: topic, Partition: id.Partition}
		c, ok := committed[tp]
		if !ok {
			c = committedOffset{offset: -1, streamTime: task.UnknownTime}
		}
		lt.committed[tp] = c.offset
		streamTime = max(streamTime, c.streamTime)
	}
	cfg := task.Config{
		Memory:             lt.memory,
		DeadLetterMaxBytes: task.DefaultDeadLetterMaxBytes,
		Tracer:             tracing.Tracer(w.r.cfg.TracerProvider),
		ApplicationID:      w.r.cfg.ApplicationID,
		ID:                 id,
		StreamTime:         streamTime,
		WallClock:          time.Now().UnixMilli(),
		PartitionCount: func(topic string) (int32, error) {
			if n, ok := w.r.partitions[topic]; ok {
				return n, nil
			}
			return 0, fmt.Errorf("partition count of %q is unknown", topic)
		},
	}
	cfg.Globals, cfg.PersistentGlobals = w.r.globals.Load().backends()
	if handed != nil {
		lt.persistent, lt.release, cfg.Persistent = handed.persistent, handed.release, handed.persistent
	}
	for _, name := range sub.Stores {
		if spec, _ := w.r.topo.Store(name); spec.Persistent && lt.persistent == nil {
			p, release, err := w.r.openPersistent(ctx, id, w.log)
			if err != nil {
				return nil, err
			}
			lt.persistent, lt.release, cfg.Persistent = p, release, p
		}
	}
	tk, err := task.New(w.r.topo, cfg)
	if err != nil {
		lt.closeStores()
		return nil, err
	}
	lt.task = tk
	if err := w.restoreTraced(ctx, lt); err != nil {
		lt.closeStores()
		return nil, err
	}
	if err := tk.Initialize(); err != nil {
		lt.closeStores()
		return nil, err
	}
	return lt, nil
}

// restore brings each logged store of the task up to its changelog: it
// reads, read_committed, from the store's checkpoint to the high watermark
// the changelog had when the restore began (readToEnd).
//
// The end is the high watermark, not the last stable offset: transaction
// markers land on each partition independently, so the group's offsets can
// already show a previous owner's commit while this changelog's stable
// offset still stands before that transaction's records. Reading up to the
// high watermark read after the offsets were settled waits until every
// transaction that wrote before it has ended, committed or aborted.
func (w *worker) restore(ctx context.Context, lt *liveTask) error {
	stores := w.r.loggedStores(lt.id.Subtopology)
	if len(stores) == 0 {
		return nil
	}
	positions, err := w.r.openPositions(ctx, w.adm, lt.task, lt.id, stores, w.log)
	if err != nil {
		return err
	}
	partition := strconv.Itoa(int(lt.id.Partition))
	var reading []*changelogPosition
	for _, pos := range positions {
		w.r.metrics.restoreLeft.WithLabelValues(pos.store, partition).Set(float64(pos.end - pos.applied))
		if pos.applied < pos.end {
			reading = append(reading, pos)
			w.r.restores.begin(lt.id, pos, time.Now())
		}
	}
	if len(reading) == 0 {
		return nil
	}
	started := time.Now()
	cl, err := w.r.changelogClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	consumeFrom(cl, reading)
	apply := func(pos *changelogPosition, next int64) error {
		n, err := pos.apply(lt.task, next)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		w.r.metrics.restored.WithLabelValues(pos.store).Add(float64(n))
		lt.restored += int64(n)
		if next < pos.end && crashpoint.Armed() {
			// The crash finds the batch on disk, as a SIGKILL a moment
			// later would (Pebble writes its log behind the commit).
			if lt.persistent != nil {
				lt.persistent.Sync()
			}
			crashpoint.Reach(crashpoint.MidRestore)
		}
		w.r.metrics.restoreLeft.WithLabelValues(pos.store, partition).Set(float64(pos.end - next))
		return nil
	}
	if err := readToEnd(ctx, cl, reading, "restore", crashpoint.RestoreBatch(10000), w.r.stallLimit(), apply, w.r.restores.progress); err != nil {
		return err
	}
	w.r.metrics.restoreDuration.Observe(time.Since(started).Seconds())
	w.log.Info("restored task", "task", lt.id, "took", time.Since(started).Round(time.Millisecond))
	return nil
}

// stallLimit is how long reading a changelog to its end waits without
// progress: open transactions on it end within their timeout.
func (r *Runner) stallLimit() time.Duration { return 2*r.cfg.TransactionTimeout + 10*time.Second }
