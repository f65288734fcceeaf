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
// lose it. While gate (if not nil) is held, no batch starts, and the rest
// of the stream is put off by as long. Paced returns how many records it
// produced again, and an error only when ctx ends first.
func Paced(ctx context.Context, cl *kgo.Client, records []*kgo.Record, duration time.Duration, steps int, gate *Gate) (retried int, err error) {
	steps = max(1, min(steps, len(records)))
	per := (len(records) + steps - 1) / steps
	start := time.Now()
	for step, first := 0, 0; first < len(records); step, first = step+1, first+per {
		if gate != nil {
			held, err := gate.wait(ctx)
			if err != nil {
				return retried, err
			}
			start = start.Add(held)
		}
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

// Gate pauses a paced stream, between two batches. The zero value is open.
type Gate struct {
	mu     sync.Mutex
	holds  int
	opened chan struct{} // closed when the last hold is released
}

// Hold closes the gate until as many Release calls.
func (g *Gate) Hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holds == 0 {
		g.opened = make(chan struct{})
	}
	g.holds++
}

// Release undoes one Hold.
func (g *Gate) Release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holds--
	if g.holds == 0 {
		close(g.opened)
	}
}

// wait returns once the gate is open, with how long it waited.
func (g *Gate) wait(ctx context.Context) (time.Duration, error) {
	g.mu.Lock()
	opened := g.opened
	held := g.holds > 0
	g.mu.Unlock()
	if !held {
		return 0, nil
	}
	start := time.Now()
	select {
	case <-opened:
		return time.Since(start), nil
	case <-ctx.Done():
		return time.Since(start), ctx.Err()
	}
}
