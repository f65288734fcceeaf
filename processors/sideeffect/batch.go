package sideeffect

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/exactly-go/exactly"
)

// The pending store holds, under pendingNextKey, the sequence number of the
// next pending event, and each pending event under pendingPrefix followed by
// its sequence number (big-endian, so the store iterates in input order).
// Both live in the store, so an abort rolls them back together.
var (
	pendingNextKey = []byte{0x00}
	pendingPrefix  = []byte{0x01}
)

// pendingEvent is an event waiting for its call: the serialized record, its
// idempotency key, and the input record to dead-letter if it fails.
type pendingEvent struct {
	IdempotencyKey string                `json:"idempotencyKey"`
	Key            []byte                `json:"key"`
	Value          []byte                `json:"value"`
	Timestamp      int64                 `json:"timestamp"`
	Headers        []exactly.Header      `json:"headers,omitempty"`
	Source         *exactly.SourceRecord `json:"source,omitempty"`
}

// stash appends rec to the pending store and flushes when MaxBatch events
// have gathered.
func (p *processor[K, V, R]) stash(idemKey string, rec exactly.Record[K, V]) error {
	name := p.ctx.NodeName()
	ev := pendingEvent{IdempotencyKey: idemKey, Timestamp: rec.Timestamp.UnixMilli(), Headers: rec.Headers}
	var err error
	if ev.Key, err = p.opts.Keys.Serialize(rec.Key); err != nil {
		return fmt.Errorf("sideeffect %q: serialize key of pending event %s: %w", name, idemKey, err)
	}
	if ev.Value, err = p.opts.Values.Serialize(rec.Value); err != nil {
		return fmt.Errorf("sideeffect %q: serialize value of pending event %s: %w", name, idemKey, err)
	}
	if src, ok := p.ctx.Source(); ok {
		ev.Source = &src
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("sideeffect %q: encode pending event %s: %w", name, idemKey, err)
	}
	next, err := p.nextSequence()
	if err != nil {
		return err
	}
	if err := p.pending.Put(pendingKey(next), b); err != nil {
		return fmt.Errorf("sideeffect %q: store pending event %s: %w", name, idemKey, err)
	}
	if err := p.pending.Put(pendingNextKey, binary.BigEndian.AppendUint64(nil, next+1)); err != nil {
		return fmt.Errorf("sideeffect %q: store pending sequence: %w", name, err)
	}
	p.stashed++
	if p.stashed >= p.opts.MaxBatch {
		return p.flush()
	}
	return nil
}

func (p *processor[K, V, R]) nextSequence() (uint64, error) {
	b, found, err := p.pending.Get(pendingNextKey)
	if err != nil {
		return 0, fmt.Errorf("sideeffect %q: read pending sequence: %w", p.ctx.NodeName(), err)
	}
	if !found || len(b) != 8 {
		return 0, nil
	}
	return binary.BigEndian.Uint64(b), nil
}

func pendingKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), pendingPrefix...), seq)
}

// batchCall is one pending event of a flush and what became of it.
type batchCall[K, V, R any] struct {
	storeKey  []byte
	ev        pendingEvent
	rec       exactly.Record[K, V]
	duplicate bool // an earlier event of the batch has the same key
	out       outcome[R]
}

// flush calls every pending event, at most Concurrency at a time and those
// with equal record keys one after the other, then records the outcomes in
// input order and empties the pending store. It runs on the task's
// goroutine, inside the task's transaction.
func (p *processor[K, V, R]) flush() error {
	p.stashed = 0
	calls, err := p.loadPending()
	if err != nil || len(calls) == 0 {
		return err
	}
	// Events of one record key, in input order; keys in order of first
	// appearance.
	var groups [][]*batchCall[K, V, R]
	groupOf := map[string]int{}
	firstOf := map[string]bool{}
	for _, c := range calls {
		if c.duplicate || firstOf[c.ev.IdempotencyKey] {
			c.duplicate = true
			continue
		}
		firstOf[c.ev.IdempotencyKey] = true
		i, ok := groupOf[string(c.ev.Key)]
		if !ok {
			i = len(groups)
			groupOf[string(c.ev.Key)] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], c)
	}
	slots := make(chan struct{}, p.opts.Concurrency)
	deadline := time.Now().Add(p.opts.Retry.For)
	var wg sync.WaitGroup
	for _, group := range groups {
		wg.Go(func() {
			for _, c := range group {
				slots <- struct{}{}
				c.out = execute(p.callCtx, p, c.ev.IdempotencyKey, c.rec.Key, c.rec.Value, deadline)
				<-slots
			}
		})
	}
	wg.Wait()

	name := p.ctx.NodeName()
	for _, c := range calls {
		if c.out.deferred && !c.duplicate {
			continue // stays pending, for the next flush
		}
		if err := p.pending.Delete(c.storeKey); err != nil {
			return fmt.Errorf("sideeffect %q: remove pending event %s: %w", name, c.ev.IdempotencyKey, err)
		}
		if c.duplicate {
			p.metrics.skipped()
			continue
		}
		if err := p.complete(c.ev.IdempotencyKey, c.rec, c.ev.Source, c.out); err != nil {
			return err
		}
	}
	return nil
}

// loadPending reads the pending events in input order, dropping those whose
// key was recorded since they were stashed.
func (p *processor[K, V, R]) loadPending() ([]*batchCall[K, V, R], error) {
	name := p.ctx.NodeName()
	it, err := p.pending.Prefix(pendingPrefix)
	if err != nil {
		return nil, fmt.Errorf("sideeffect %q: read pending events: %w", name, err)
	}
	var calls []*batchCall[K, V, R]
	for it.Next() {
		c := &batchCall[K, V, R]{storeKey: it.Key()}
		if err := json.Unmarshal(it.Value(), &c.ev); err != nil {
			it.Close()
			return nil, fmt.Errorf("sideeffect %q: decode pending event: %w", name, err)
		}
		if c.rec.Key, err = p.opts.Keys.Deserialize(c.ev.Key); err == nil {
			c.rec.Value, err = p.opts.Values.Deserialize(c.ev.Value)
		}
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("sideeffect %q: decode pending event %s: %w: Options.Keys and Values must read what they wrote", name, c.ev.IdempotencyKey, err)
		}
		c.rec.Timestamp = time.UnixMilli(c.ev.Timestamp)
		c.rec.Headers = c.ev.Headers
		calls = append(calls, c)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("sideeffect %q: read pending events: %w", name, err)
	}
	for _, c := range calls {
		done, err := p.recorded(c.ev.IdempotencyKey)
		if err != nil {
			return nil, err
		}
		c.duplicate = c.duplicate || done
	}
	return calls, nil
}
