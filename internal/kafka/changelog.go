package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Reading changelogs into stores, shared by the restore of an active task
// (restore.go), the tailing of a standby (standby.go) and the global stores
// (global.go), whose topics are their changelogs: each applies what it
// reads in batches, each in one atomic write with the offset after its
// last record as the checkpoint of the store's partition (DESIGN invariant
// 2), so a crash anywhere leaves a store at its checkpoint.

// changelogTarget is what changelog records are applied to: the stores of
// an active task (*task.Task) or of a standby (standbyStores).
type changelogTarget interface {
	// Checkpoint returns the store's checkpoint; false when it has none.
	Checkpoint(name string) (int64, bool, error)
	// Restore applies changes with the checkpoint next in one atomic write.
	Restore(name string, changes []store.Change, next int64) error
	// Wipe empties the store and removes its checkpoint.
	Wipe(name string) error
}

// changelogPosition is where the reading of one store's changelog partition
// stands.
type changelogPosition struct {
	store, topic string
	partition    int32
	// applied is the store's checkpoint: the offset after the last record
	// applied to it.
	applied int64
	// read is the offset after the last record read (applied or batched).
	read int64
	// records counts the changelog records read (control records aside).
	records int64
	// end is where a restore stops; a standby never stops.
	end   int64
	batch []store.Change
	// empties counts fetches in a row that returned nothing below a stable
	// offset at or past end.
	empties int
}

// loggedStores returns the stores of sub-topology sub that have a
// changelog.
func (r *Runner) loggedStores(sub int) []string {
	var out []string
	for _, name := range r.topo.Subtopologies()[sub].Stores {
		if spec, _ := r.topo.Store(name); spec.Logged {
			out = append(out, name)
		}
	}
	return out
}

// openPositions lists the end of each logged store's changelog partition
// and reads the store's checkpoint. A store without a checkpoint, or with
// one past its changelog's end (the changelog was recreated), is wiped to be
// rebuilt from offset 0.
func (r *Runner) openPositions(ctx context.Context, adm *kadm.Client, target changelogTarget, id topo.TaskID, stores []string, log *slog.Logger) ([]*changelogPosition, error) {
	var topics []string
	for _, name := range stores {
		topics = append(topics, topo.ChangelogTopic(r.cfg.ApplicationID, name))
	}
	listCtx, cancel := context.WithTimeout(ctx, r.cfg.SessionTimeout)
	ends, err := adm.ListEndOffsets(listCtx, topics...)
	cancel()
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list changelog ends: %w", err)
	}
	var out []*changelogPosition
	for i, name := range stores {
		end, ok := ends.Lookup(topics[i], id.Partition)
		if !ok {
			return nil, fmt.Errorf("changelog %s has no partition %d", topics[i], id.Partition)
		}
		cp, ok, err := target.Checkpoint(name)
		if err != nil || !ok || cp > end.Offset {
			if err != nil || cp > end.Offset {
				log.Warn("local store does not match its changelog; rebuilding it", "store", name, "task", id, "checkpoint", cp, "changelog_end", end.Offset, "err", err)
			}
			if err := target.Wipe(name); err != nil {
				return nil, fmt.Errorf("wipe %s: %w", name, err)
			}
			cp = 0
		}
		out = append(out, &changelogPosition{store: name, topic: topics[i], partition: id.Partition, applied: cp, read: cp, end: end.Offset})
	}
	return out, nil
}

// changelogClient returns a client that reads changelogs read_committed,
// consuming nothing until told by consumeFrom. It keeps control records, so
// that its position passes the transaction markers.
func (r *Runner) changelogClient() (*kgo.Client, error) {
	return kgo.NewClient(append(r.clientOptions(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250*time.Millisecond),
	)...)
}

// consumeFrom makes cl read the positions' partitions from where they have
// read up to.
func consumeFrom(cl *kgo.Client, positions []*changelogPosition) {
	partitions := map[string]map[int32]kgo.Offset{}
	for _, pos := range positions {
		if partitions[pos.topic] == nil {
			partitions[pos.topic] = map[int32]kgo.Offset{}
		}
		partitions[pos.topic][pos.partition] = kgo.NewOffset().At(pos.read)
	}
	cl.AddConsumePartitions(partitions)
}

// take adds the records of one fetched partition that lie below pos.end to
// pos's batch, calling apply with the offset after the last record taken
// whenever batchSize changes wait. It reports whether the position reached
// pos.end; the records from there on are not taken.
func (pos *changelogPosition) take(fp kgo.FetchTopicPartition, batchSize int, apply func(pos *changelogPosition, next int64) error) (reached bool, err error) {
	for _, rec := range fp.Records {
		if rec.Offset >= pos.end {
			return true, nil
		}
		if !rec.Attrs.IsControl() {
			pos.batch = append(pos.batch, store.Change{Key: rec.Key, Value: rec.Value})
			pos.records++
		}
		pos.read = rec.Offset + 1
		if pos.read >= pos.end {
			return true, nil
		}
		if len(pos.batch) >= batchSize {
			if err := apply(pos, pos.read); err != nil {
				return false, err
			}
		}
	}
	// Nothing left below a stable offset at or past the end, seen by two
	// fetches in a row (the first may have skipped only aborted data): the
	// position has reached the end.
	if len(fp.Records) == 0 && fp.LastStableOffset >= pos.end {
		pos.empties++
		return pos.empties >= 2, nil
	}
	pos.empties = 0
	return false, nil
}

// apply writes pos's batch to target with the checkpoint next in one
// atomic write, and empties the batch. It returns the number of changes
// applied.
func (pos *changelogPosition) apply(target changelogTarget, next int64) (int, error) {
	n := len(pos.batch)
	if err := target.Restore(pos.store, pos.batch, next); err != nil {
		return 0, fmt.Errorf("apply changelog %s/%d: %w", pos.store, pos.partition, err)
	}
	pos.applied = next
	pos.batch = pos.batch[:0]
	return n, nil
}

// readToEnd reads the positions' partitions with cl, which must consume
// them from where each has read (consumeFrom), until every one has reached
// its end; it applies what it reads through apply, in batches of at most
// batchSize records, and last with the end as the checkpoint. Positions
// already at their end are not read. It ends on the fetch position, never
// on seeing a particular record: the last offsets before the end may be
// transaction markers, aborted data, or compacted away. what names the
// reading in errors ("restore", "bootstrap").
//
// Reading read_committed up to a high watermark listed at the start waits
// until every transaction that wrote before it has ended; readToEnd waits
// at most stallLimit without progress for that, which the broker bounds by
// the transactions' timeout. progress, if not nil, hears of each fetch that
// moved a position (done once it reached its end and was applied).
func readToEnd(ctx context.Context, cl *kgo.Client, positions []*changelogPosition, what string, batchSize int, stallLimit time.Duration,
	apply func(pos *changelogPosition, next int64) error, progress func(pos *changelogPosition, done bool)) error {
	type partition struct {
		topic string
		p     int32
	}
	todo := map[partition]*changelogPosition{}
	for _, pos := range positions {
		if pos.read < pos.end {
			todo[partition{pos.topic, pos.partition}] = pos
		}
	}
	lastProgress := time.Now()
	for len(todo) > 0 {
		pollCtx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var err error
		fetches.EachError(func(topic string, p int32, ferr error) {
			if !errors.Is(ferr, context.DeadlineExceeded) && err == nil {
				err = fmt.Errorf("%s fetch %s/%d: %w", what, topic, p, ferr)
			}
		})
		if err != nil {
			return err
		}
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			key := partition{fp.Topic, fp.Partition}
			pos := todo[key]
			if err != nil || pos == nil || fp.Err != nil {
				return
			}
			if len(fp.Records) > 0 {
				lastProgress = time.Now()
			}
			var reached bool
			if reached, err = pos.take(fp, batchSize, apply); err != nil {
				return
			}
			if !reached {
				if progress != nil {
					progress(pos, false)
				}
				return
			}
			if err = apply(pos, pos.end); err != nil {
				return
			}
			pos.read = pos.end
			if progress != nil {
				progress(pos, true)
			}
			delete(todo, key)
			cl.PauseFetchPartitions(map[string][]int32{fp.Topic: {fp.Partition}})
		})
		if err != nil {
			return err
		}
		if time.Since(lastProgress) > stallLimit {
			for _, pos := range todo {
				return fmt.Errorf("%s %s/%d made no progress for %v below the end %d of %s: a transaction on it neither commits nor aborts",
					what, pos.store, pos.partition, stallLimit, pos.end, pos.topic)
			}
		}
	}
	return nil
}
