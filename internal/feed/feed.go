// Package feed produces a prepared stream of records at the pace of a live
// source, for the demos and the chaos harness.
package feed

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Paced produces records in their order, in steps batches spread evenly
// over about duration, as a live source would. A batch is acknowledged
// before the next one starts. A record the cluster refuses (a restarted
// broker that lost the idempotent producer's sequence, say) is produced
// again until it is acknowledged: the topic may then hold it twice, never
// lose it. Paced returns how many records it produced again, and an error
// only when ctx ends first.
func Paced(ctx context.Context, cl *kgo.Client, records []*kgo.Record, duration time.Duration, steps int) (retried int, err error) {
	steps = max(1, min(steps, len(records)))
	per := (len(records) + steps - 1) / steps
	start := time.Now()
	for step, first := 0, 0; first < len(records); step, first = step+1, first+per {
		batch := records[first:min(first+per, len(records))]
		for len(batch) > 0 {
			failed := produce(ctx, cl, batch)
			if err := ctx.Err(); err != nil {
				return retried, err
			}
			if len(failed) > 0 {
				retried += len(failed)
				time.Sleep(100 * time.Millisecond)
			}
			batch = failed
		}
		next := start.Add(duration * time.Duration(step+1) / time.Duration(steps))
		select {
		case <-ctx.Done():
			return retried, ctx.Err()
		case <-time.After(time.Until(next)):
		}
	}
	return retried, nil
}

// produce sends batch and waits for every acknowledgement; it returns the
// records that failed.
func produce(ctx context.Context, cl *kgo.Client, batch []*kgo.Record) []*kgo.Record {
	var (
		mu     sync.Mutex
		failed []*kgo.Record
		wg     sync.WaitGroup
	)
	wg.Add(len(batch))
	for _, r := range batch {
		cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				failed = append(failed, r)
				mu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	return failed
}
