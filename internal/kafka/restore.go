package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/store"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// restorePending creates the tasks of newly assigned partitions: their
// stream time from the committed offsets' metadata, their stores restored
// from checkpoint to the changelog's end, then their processors initialized.
func (w *worker) restorePending(ctx context.Context) error {
	if len(w.pending) == 0 {
		return nil
	}
	ids := map[topo.TaskID]bool{}
	for topic, ps := range w.pending {
		sub, ok := w.r.subOf[topic]
		if !ok {
			continue
		}
		for _, p := range ps {
			ids[topo.TaskID{Subtopology: sub, Partition: p}] = true
		}
	}
	w.pending = map[string][]int32{}
	times, err := w.committedStreamTimes(ctx)
	if err != nil {
		return err
	}
	for id := range ids {
		if _, ok := w.tasks[id]; ok {
			continue
		}
		lt, err := w.startTask(ctx, id, times)
		if err != nil {
			return fmt.Errorf("start task %s: %w", id, err)
		}
		w.tasks[id] = lt
		w.r.setQueryable(id, &queryTarget{memory: lt.memory, persistent: pebbleOrNil(lt.persistent)})
		for _, topic := range lt.task.SourceTopics() {
			w.byInput[task.TopicPartition{Topic: topic, Partition: id.Partition}] = lt
		}
		w.r.metrics.tasks.Inc()
	}
	return nil
}

// committedStreamTimes reads the stream time committed with each input
// partition's offset. It waits for offsets held by an open transaction
// (KIP-447), so a previous owner's last commit is settled first.
func (w *worker) committedStreamTimes(ctx context.Context) (map[task.TopicPartition]int64, error) {
	var last error
	for attempt := 0; attempt < 100; attempt++ {
		resps, err := w.adm.FetchOffsets(kadm.RequireStable(ctx), w.r.cfg.ApplicationID)
		if err == nil {
			err = resps.Error()
		}
		if err == nil {
			times := map[task.TopicPartition]int64{}
			resps.Each(func(o kadm.OffsetResponse) {
				times[task.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = decodeStreamTime(o.Metadata)
			})
			return times, nil
		}
		last = err
		if !errors.Is(err, kerr.UnstableOffsetCommit) && !kerr.IsRetriable(err) {
			return nil, fmt.Errorf("fetch committed offsets: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("fetch committed offsets: %w", last)
}

func (w *worker) startTask(ctx context.Context, id topo.TaskID, times map[task.TopicPartition]int64) (*liveTask, error) {
	sub := w.r.topo.Subtopologies()[id.Subtopology]
	streamTime := int64(task.UnknownTime)
	for _, topic := range sub.SourceTopics {
		if st, ok := times[task.TopicPartition{Topic: topic, Partition: id.Partition}]; ok && st > streamTime {
			streamTime = st
		}
	}
	lt := &liveTask{id: id, memory: store.NewMemory()}
	cfg := task.Config{
		Memory: lt.memory,
		// Leaves room for headers under the producer's default batch
		// limit (1 MB), so a dead letter is never refused as too large.
		DeadLetterMaxBytes: 900_000,
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
	for _, name := range sub.Stores {
		if spec, _ := w.r.topo.Store(name); spec.Persistent && lt.persistent == nil {
			p, err := w.openPersistent(id)
			if err != nil {
				return nil, err
			}
			lt.persistent, cfg.Persistent = p, p
		}
	}
	tk, err := task.New(w.r.topo, cfg)
	if err != nil {
		if lt.persistent != nil {
			lt.persistent.Close()
		}
		return nil, err
	}
	lt.task = tk
	if err := w.restore(ctx, lt); err != nil {
		if lt.persistent != nil {
			lt.persistent.Close()
		}
		return nil, err
	}
	if err := tk.Initialize(); err != nil {
		if lt.persistent != nil {
			lt.persistent.Close()
		}
		return nil, err
	}
	return lt, nil
}

// restore reads each logged store's changelog partition from the store's
// checkpoint to the last stable offset, read_committed.
func (w *worker) restore(ctx context.Context, lt *liveTask) error {
	type work struct {
		store string
		topic string
		from  int64
		end   int64
	}
	var todo []*work
	var topics []string
	for _, name := range lt.task.Stores() {
		spec, _ := w.r.topo.Store(name)
		if !spec.Logged {
			continue
		}
		topic := topo.ChangelogTopic(w.r.cfg.ApplicationID, name)
		todo = append(todo, &work{store: name, topic: topic})
		topics = append(topics, topic)
	}
	if len(todo) == 0 {
		return nil
	}
	ends, err := w.adm.ListCommittedOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("list changelog ends: %w", err)
	}
	partitions := map[string]map[int32]kgo.Offset{}
	byTopic := map[string]*work{}
	for _, wk := range todo {
		end, ok := ends.Lookup(wk.topic, lt.id.Partition)
		if !ok {
			return fmt.Errorf("changelog %s has no partition %d", wk.topic, lt.id.Partition)
		}
		wk.end = end.Offset
		cp, ok, err := lt.task.Checkpoint(wk.store)
		if err != nil || !ok || cp > wk.end {
			if err != nil || cp > wk.end {
				w.log.Warn("local store does not match its changelog; rebuilding it", "store", wk.store, "task", lt.id, "checkpoint", cp, "changelog_end", wk.end, "err", err)
			}
			if err := lt.task.Wipe(wk.store); err != nil {
				return fmt.Errorf("wipe %s: %w", wk.store, err)
			}
			cp = 0
		}
		wk.from = cp
		w.r.metrics.restoreLeft.WithLabelValues(wk.store, strconv.Itoa(int(lt.id.Partition))).Set(float64(wk.end - wk.from))
		if wk.from < wk.end {
			partitions[wk.topic] = map[int32]kgo.Offset{lt.id.Partition: kgo.NewOffset().At(wk.from)}
			byTopic[wk.topic] = wk
		}
	}
	if len(partitions) == 0 {
		return nil
	}
	started := time.Now()
	cl, err := kgo.NewClient(append(w.r.clientOptions(),
		kgo.ConsumePartitions(partitions),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	const batchSize = 10000
	remaining := len(byTopic)
	batches := map[string][]store.Change{}
	flush := func(wk *work, next int64) error {
		changes := batches[wk.topic]
		if err := lt.task.Restore(wk.store, changes, next); err != nil {
			return fmt.Errorf("restore %s/%d: %w", wk.store, lt.id.Partition, err)
		}
		w.r.metrics.restored.WithLabelValues(wk.store).Add(float64(len(changes)))
		w.r.metrics.restoreLeft.WithLabelValues(wk.store, strconv.Itoa(int(lt.id.Partition))).Set(float64(wk.end - next))
		batches[wk.topic] = changes[:0]
		return nil
	}
	for remaining > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ferr error
		fetches.EachError(func(topic string, p int32, err error) { ferr = fmt.Errorf("restore fetch %s/%d: %w", topic, p, err) })
		if ferr != nil {
			return ferr
		}
		var err error
		fetches.EachRecord(func(rec *kgo.Record) {
			wk := byTopic[rec.Topic]
			if err != nil || wk == nil || rec.Offset >= wk.end {
				return
			}
			if !rec.Attrs.IsControl() {
				batches[wk.topic] = append(batches[wk.topic], store.Change{Key: rec.Key, Value: rec.Value})
			}
			if rec.Offset+1 >= wk.end {
				err = flush(wk, wk.end)
				delete(byTopic, rec.Topic)
				cl.PauseFetchPartitions(map[string][]int32{rec.Topic: {rec.Partition}})
				remaining--
			} else if len(batches[wk.topic]) >= batchSize {
				err = flush(wk, rec.Offset+1)
			}
		})
		if err != nil {
			return err
		}
	}
	w.log.Info("restored task", "task", lt.id, "took", time.Since(started).Round(time.Millisecond))
	return nil
}

func pebbleOrNil(p *store.Pebble) store.Backend {
	if p == nil {
		return nil
	}
	return p
}
