package main

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/orders"
	json "github.com/goccy/go-json"
	"github.com/lovoo/goka"
)

// orderState is goka's table value for one order: its aggregate, the event
// ids seen (dedup) and the events waiting for their prerequisites. The
// aggregate is encoded apart (stateCodec).
type orderState struct {
	Aggregate orders.Aggregate `json:"-"`
	Created   bool             `json:"created"`
	NextSeq   uint64           `json:"nextSeq"`
	Seen      map[string]bool  `json:"seen"`
	Waiting   []waiting        `json:"waiting"`
}

// waiting is a buffered event with its source record, for replay or for
// the dead-letter topic.
type waiting struct {
	Event     orders.Event `json:"event"`
	Key       []byte       `json:"key"`
	Value     []byte       `json:"value"`
	Partition int32        `json:"partition"`
	Offset    int64        `json:"offset"`
	Arrival   int64        `json:"arrival"`
	ExpiresAt int64        `json:"expiresAt"`
}

// expiry is the loopback message that asks an order to dead-letter the
// events that waited past the buffer TTL at stream time Now.
type expiry struct {
	Now int64 `json:"now"`
}

// partitionState is per input partition, in memory: stream time, the next
// sweep, an arrival counter (the buffer's tie-break) and the earliest
// expiry of each order with waiting events. goka has no stream-time
// punctuator, so the sweep runs from the input callback and reaches each
// expired order through the loop topic.
type partitionState struct {
	streamTime int64
	lastSweep  int64
	nextSweep  int64
	arrivals   int64
	expiries   map[string]int64
}

type projection struct {
	cfg         config
	firstRecord atomic.Int64 // unix nanoseconds of the first input record
	mu          sync.Mutex
	partitions  map[int32]*partitionState
}

func (p *projection) partition(n int32) *partitionState {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps := p.partitions[n]
	if ps == nil {
		ps = &partitionState{streamTime: -1 << 63, lastSweep: -1 << 63, nextSweep: p.cfg.sweepInterval, expiries: map[string]int64{}}
		p.partitions[n] = ps
	}
	return ps
}

func (p *projection) deadLetter(ctx goka.Context, key, value []byte, partition int32, offset int64, reason, message string) {
	ctx.Emit(goka.Stream(p.cfg.dlq), string(key), value, goka.WithCtxEmitHeaders(goka.Headers{
		exactly.HeaderErrorReason:     []byte(reason),
		exactly.HeaderErrorMessage:    []byte(message),
		exactly.HeaderSourceTopic:     []byte(p.cfg.input),
		exactly.HeaderSourcePartition: []byte(strconv.Itoa(int(partition))),
		exactly.HeaderSourceOffset:    []byte(strconv.FormatInt(offset, 10)),
	}))
}

// process is the input callback: decode, dedup, buffer or apply (and
// replay what became ready), then sweep when stream time crossed a sweep
// boundary.
func (p *projection) process(ctx goka.Context, msg any) {
	p.firstRecord.CompareAndSwap(0, time.Now().UnixNano())
	value, _ := msg.([]byte)
	key := []byte(ctx.Key())
	ps := p.partition(ctx.Partition())
	e, err := orders.Decoder{}.Decode(key, value)
	if err != nil {
		ps.streamTime = max(ps.streamTime, 0)
		var de *orders.DecodeError
		reason := orders.ReasonMalformed
		if errors.As(err, &de) {
			reason = de.Reason
		}
		p.deadLetter(ctx, key, value, ctx.Partition(), ctx.Offset(), reason, err.Error())
		return
	}
	before := ps.streamTime
	ps.streamTime = max(ps.streamTime, e.Metadata.Timestamp)
	p.handle(ctx, ps, e, key, value)
	if ps.streamTime > before && ps.streamTime >= ps.nextSweep {
		p.sweep(ctx, ps)
		ps.nextSweep = (ps.streamTime/p.cfg.sweepInterval + 1) * p.cfg.sweepInterval
	}
}

func (p *projection) handle(ctx goka.Context, ps *partitionState, e orders.Event, key, value []byte) {
	st, _ := ctx.Value().(*orderState)
	if st == nil {
		st = &orderState{Seen: map[string]bool{}}
	}
	id := e.Metadata.EventID
	if st.Seen[id] {
		return // the dedup TTL (7 days) outlives the benchmark's stream
	}
	st.Seen[id] = true
	order := e.OrderID()
	if !ready(st, e) {
		ps.arrivals++
		w := waiting{Event: e, Key: key, Value: value, Partition: ctx.Partition(), Offset: ctx.Offset(), Arrival: ps.arrivals,
			ExpiresAt: ps.streamTime + p.cfg.bufferTTL}
		st.Waiting = append(st.Waiting, w)
		slices.SortStableFunc(st.Waiting, func(a, b waiting) int {
			return cmp.Or(ref(a.Event).Compare(ref(b.Event)), cmp.Compare(a.Arrival, b.Arrival))
		})
		p.noteExpiry(ps, order, st)
		ctx.SetValue(st)
		return
	}
	p.apply(ctx, st, e)
	for {
		i := slices.IndexFunc(st.Waiting, func(w waiting) bool { return ready(st, w.Event) })
		if i < 0 {
			break
		}
		w := st.Waiting[i]
		st.Waiting = slices.Delete(st.Waiting, i, i+1)
		p.apply(ctx, st, w.Event)
	}
	p.noteExpiry(ps, order, st)
	ctx.SetValue(st)
}

func ref(e orders.Event) orders.EventRef {
	return orders.EventRef{Timestamp: e.Metadata.Timestamp, EventID: e.Metadata.EventID}
}

func ready(st *orderState, e orders.Event) bool {
	if e.Type != orders.TypeOrderCreated && !st.Created {
		return false
	}
	seq := e.Metadata.Sequence
	return seq == 0 || seq <= max(st.NextSeq, 1)
}

func (p *projection) apply(ctx goka.Context, st *orderState, e orders.Event) {
	st.Aggregate.Apply(e)
	if e.Type == orders.TypeOrderCreated {
		st.Created = true
	}
	if seq := e.Metadata.Sequence; seq >= max(st.NextSeq, 1) {
		st.NextSeq = seq + 1
	}
	out, _ := json.Marshal(st.Aggregate.Projection)
	ctx.Emit(goka.Stream(p.cfg.output), ctx.Key(), out, goka.WithCtxEmitHeaders(goka.Headers{orders.HeaderEventID: []byte(e.Metadata.EventID)}))
}

func (p *projection) noteExpiry(ps *partitionState, order string, st *orderState) {
	if len(st.Waiting) == 0 {
		delete(ps.expiries, order)
		return
	}
	earliest := st.Waiting[0].ExpiresAt
	for _, w := range st.Waiting {
		earliest = min(earliest, w.ExpiresAt)
	}
	ps.expiries[order] = earliest
}

// sweep asks every order with an expired waiting event to dead-letter it.
func (p *projection) sweep(ctx goka.Context, ps *partitionState) {
	now := ps.streamTime
	ps.lastSweep = now
	var due []string
	for order, at := range ps.expiries {
		if at <= now {
			due = append(due, order)
		}
	}
	slices.Sort(due)
	for _, order := range due {
		delete(ps.expiries, order)
		ctx.Loopback(order, &expiry{Now: now})
	}
}

// expire is the loop callback: dead-letter the order's events that expired
// at the sweep's stream time.
func (p *projection) expire(ctx goka.Context, msg any) {
	ex, _ := msg.(*expiry)
	st, _ := ctx.Value().(*orderState)
	if ex == nil || st == nil {
		return
	}
	// Sweeps after the one that sent this message skipped the order (it
	// was out of the index meanwhile): expire as of the latest sweep.
	ps := p.partition(ctx.Partition())
	now := max(ex.Now, ps.lastSweep)
	kept := st.Waiting[:0]
	for _, w := range st.Waiting {
		if w.ExpiresAt <= now {
			p.deadLetter(ctx, w.Key, w.Value, w.Partition, w.Offset, orders.ReasonExpired, "waited longer than the buffer TTL")
			continue
		}
		kept = append(kept, w)
	}
	st.Waiting = kept
	p.noteExpiry(ps, ctx.Key(), st)
	ctx.SetValue(st)
}

// stateCodec encodes an order's state with the codecs exactly's version
// uses for the same facts: the aggregate in the projection store's binary
// form (orders.AggregateSerde), length-prefixed, then the rest (ids seen,
// waiting events in their wire format) as JSON, with the JSON library of
// examples/orders.
type stateCodec struct{}

func (stateCodec) Encode(v any) ([]byte, error) {
	st, ok := v.(*orderState)
	if !ok {
		return nil, fmt.Errorf("goka bench: cannot encode %T as an order state", v)
	}
	agg, err := orders.AggregateSerde{}.Serialize(st.Aggregate)
	if err != nil {
		return nil, err
	}
	rest, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	b := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(agg)+len(rest)), uint64(len(agg)))
	return append(append(b, agg...), rest...), nil
}

func (stateCodec) Decode(b []byte) (any, error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || uint64(len(b)-w) < n {
		return nil, errors.New("goka bench: malformed order state")
	}
	agg, err := orders.AggregateSerde{}.Deserialize(b[w : w+int(n)])
	if err != nil {
		return nil, err
	}
	st := &orderState{Aggregate: agg}
	if err := json.Unmarshal(b[w+int(n):], st); err != nil {
		return nil, err
	}
	if st.Seen == nil {
		st.Seen = map[string]bool{}
	}
	return st, nil
}

type expiryCodec struct{}

func (expiryCodec) Encode(v any) ([]byte, error) { return json.Marshal(v) }
func (expiryCodec) Decode(b []byte) (any, error) {
	ex := &expiry{}
	return ex, json.Unmarshal(b, ex)
}
