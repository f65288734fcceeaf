// Package verify audits what a stream application committed to Kafka
// against what its input says it must have committed: nothing acknowledged
// lost, no duplicate (key, event id) in the committed output, per-key order
// kept, every output equal to an independent recomputation from the input,
// nothing from aborted transactions visible, and no transaction left open.
// It reads every topic read_committed, as a downstream consumer would.
package verify

import (
	"context"
	"fmt"

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
	partitions := map[int32]kgo.Offset{}
	left := map[int32]int64{}
	for p, e := range pe {
		if e.stable > e.start {
			partitions[p] = kgo.NewOffset().At(e.start)
			left[p] = e.stable
		}
	}
	if len(partitions) == 0 {
		return nil, nil
	}
	level := kgo.ReadUncommitted()
	if committed {
		level = kgo.ReadCommitted()
	}
	cl, err := kgo.NewClient(append(opts,
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
			if !ok || r.Offset >= end {
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
	return out, nil
}
