// Package verify audits what a stream application committed to Kafka
// against what its input says it must have committed: nothing acknowledged
// lost, no duplicate (key, event id) in the committed output, per-key order
// kept, every output equal to an independent recomputation from the input,
// nothing from aborted transactions visible, and no transaction left open.
// It reads every topic read_committed, as a downstream consumer would.
//
// Three checks share these invariants. [Orders] is a domain audit of the
// orders application: it recomputes the projections and dead letters from
// the input with an oracle written apart from the topology. [Payments]
// audits the payments application together with its gateway's charges:
// every order charged once, reported once, declines dead-lettered.
// [Replay] works
// for any deterministic topology: it recomputes the output by replaying
// the committed input through the topology itself in the test driver, so
// it proves that crashes, restarts, rebalances and aborted transactions
// left no trace, though not that the topology is right.
package verify

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// topicEnds returns, per partition of topic, the log start, the last
// stable offset (where read_committed readers stop) and the high watermark.
type partitionEnds struct {
	start, stable, high int64
}

func ends(ctx context.Context, adm *kadm.Client, topic string) (map[int32]partitionEnds, error) {
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list start offsets of %s: %w", topic, err)
	}
	stable, err := adm.ListCommittedOffsets(ctx, topic)
	if err == nil {
		err = stable.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list stable offsets of %s: %w", topic, err)
	}
	high, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = high.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	out := map[int32]partitionEnds{}
	high.Each(func(o kadm.ListedOffset) {
		s, _ := starts.Lookup(topic, o.Partition)
		st, _ := stable.Lookup(topic, o.Partition)
		out[o.Partition] = partitionEnds{start: s.Offset, stable: st.Offset, high: o.Offset}
	})
	return out, nil
}

// readTopic reads every record of topic up to each partition's last stable
// offset with the given isolation level. Control records are consumed (to
// know where the reader stands) but not returned.
func readTopic(ctx context.Context, opts []kgo.Opt, topic string, pe map[int32]partitionEnds, committed bool) ([]*kgo.Record, error) {
	ranges := map[int32]offsetRange{}
	for p, e := range pe {
		ranges[p] = offsetRange{from: e.start, to: e.stable}
	}
	return readRanges(ctx, opts, topic, ranges, committed)
}

// offsetRange is the offsets [from, to) of one partition.
type offsetRange struct{ from, to int64 }

// readRanges reads the records of topic in each partition's range, with the
// given isolation level, in partition order. A range must end at or below
// the partition's last stable offset, or the read waits for the deadline.
func readRanges(ctx context.Context, opts []kgo.Opt, topic string, ranges map[int32]offsetRange, committed bool) ([]*kgo.Record, error) {
	partitions := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	for p, r := range ranges {
		if r.to > r.from {
			partitions[p] = kgo.NewOffset().At(r.from)
			left[p] = r.to
		}
	}
	if len(partitions) == 0 {
		return nil, nil
	}
	level := kgo.ReadUncommitted()
	if committed {
		level = kgo.ReadCommitted()
	}
	cl, err := kgo.NewClient(append(slices.Clip(opts),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: partitions}),
		kgo.FetchIsolationLevel(level),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(left) > 0 {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w (partitions not read to the end: %v)", topic, err, left)
		}
		var ferr error
		fetches.EachError(func(_ string, p int32, err error) { ferr = fmt.Errorf("read %s/%d: %w", topic, p, err) })
		if ferr != nil {
			return nil, ferr
		}
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := left[r.Partition]
			if !ok {
				return
			}
			if r.Offset >= end {
				// The range ended in a gap (records read_committed skips).
				delete(left, r.Partition)
				return
			}
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
			if r.Offset+1 >= end {
				delete(left, r.Partition)
			}
		})
	}
	slices.SortStableFunc(out, func(a, b *kgo.Record) int { return cmp.Compare(a.Partition, b.Partition) })
	return out, nil
}
