package dsl

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// JoinWindows pair records of two streams whose timestamps are at most
// TimeDifference apart. Grace is how long after a record's window
// (timestamp ± TimeDifference) ends the other side may still arrive late.
type JoinWindows struct {
	TimeDifference, Grace time.Duration
}

// JoinKind says which unpaired records a stream–stream join keeps.
type JoinKind int

// The kinds of stream–stream join.
const (
	// JoinInner emits pairs only.
	JoinInner JoinKind = iota
	// JoinLeft also emits each left record that found no pair, once no
	// partner can arrive any more (stream time past its timestamp + 2 ×
	// difference + grace: a partner up to difference later is accepted
	// until its own window, plus grace, has passed).
	JoinLeft
	// JoinOuter emits unpaired records of both sides, likewise.
	JoinOuter
)

// Joined is what a stream–stream join hands the joiner: a pair, or one
// side alone (the other's Has is false).
type Joined[V1, V2 any] struct {
	Left     V1
	HasLeft  bool
	Right    V2
	HasRight bool
}

// buffered is one side's record in the join store.
type buffered struct {
	Value   []byte `json:"v"`
	Matched bool   `json:"m"`
	TS      int64  `json:"t"`
}

type joinSide[K, V, VR any] struct {
	left    bool // this processor receives the left stream
	w       JoinWindows
	kind    JoinKind
	keys    serde.Serde[K]
	values  serde.Serde[V]
	emit    func(ctx exactly.ProcessorContext[K, VR], k K, self, other []byte, hasSelf, hasOther bool, ts int64) error
	stores  [3]string // this side, other side, closing index
	dropped func()
	ctx     exactly.ProcessorContext[K, VR]
	mine    store.KeyValueStore[[]byte, []byte]
	theirs  store.KeyValueStore[[]byte, []byte]
	closing store.KeyValueStore[[]byte, []byte]
}

func (p *joinSide[K, V, VR]) Init(ctx exactly.ProcessorContext[K, VR]) (err error) {
	p.ctx = ctx
	if p.mine, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.stores[0]); err != nil {
		return err
	}
	if p.theirs, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.stores[1]); err != nil {
		return err
	}
	p.closing, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.stores[2])
	return err
}

// joinKey is keyPrefix timestamp sequence: a key's records sort by time.
func joinKey(kb []byte, ts int64, seq int64) []byte {
	b := binary.BigEndian.AppendUint64(keyPrefix(kb), uint64(ts))
	return binary.BigEndian.AppendUint64(b, uint64(seq))
}

func (p *joinSide[K, V, VR]) Process(rec exactly.Record[K, V]) error {
	kb, err := p.keys.Serialize(rec.Key)
	if err != nil {
		return err
	}
	vb, err := p.values.Serialize(rec.Value)
	if err != nil {
		return err
	}
	ts := rec.Timestamp.UnixMilli()
	diff, grace := p.w.TimeDifference.Milliseconds(), p.w.Grace.Milliseconds()
	streamTime := p.ctx.StreamTime().UnixMilli()
	if ts+diff+grace < streamTime {
		p.dropped()
		return p.close(streamTime)
	}
	prefix := keyPrefix(kb)
	// The tie-break among a key's records of one timestamp is how many
	// this side already holds: unique whatever produced them (records of
	// one input from a FlatMap, or of a punctuator, share an offset).
	seq, err := p.countAt(prefix, ts)
	if err != nil {
		return err
	}
	lo := binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(max(ts-diff, 0)))
	hi := binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(ts+diff+1))
	it, err := p.theirs.Range(lo, hi)
	if err != nil {
		return err
	}
	type hit struct {
		key []byte
		b   buffered
	}
	var hits []hit
	for it.Next() {
		var b buffered
		if err := json.Unmarshal(it.Value(), &b); err != nil {
			it.Close()
			return err
		}
		hits = append(hits, hit{bytes.Clone(it.Key()), b})
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, h := range hits {
		if err := p.emit(p.ctx, rec.Key, vb, h.b.Value, true, true, max(ts, h.b.TS)); err != nil {
			return err
		}
		if !h.b.Matched {
			h.b.Matched = true
			raw, _ := json.Marshal(h.b)
			if err := p.theirs.Put(h.key, raw); err != nil {
				return err
			}
		}
	}
	mine := joinKey(kb, ts, seq)
	raw, _ := json.Marshal(buffered{Value: vb, Matched: len(hits) > 0, TS: ts})
	if err := p.mine.Put(mine, raw); err != nil {
		return err
	}
	side := byte('r')
	if p.left {
		side = 'l'
	}
	// A partner up to diff later is accepted until stream time passes its
	// own timestamp + diff + grace, so this record waits for partners
	// until ts + 2·diff + grace (Kafka Streams' before + after + grace).
	closeAt := binary.BigEndian.AppendUint64(nil, uint64(ts+2*diff+grace))
	if err := p.closing.Put(append(append(closeAt, side), mine...), []byte{}); err != nil {
		return err
	}
	return p.close(streamTime)
}

// countAt counts this side's records of the key with prefix at ts.
func (p *joinSide[K, V, VR]) countAt(prefix []byte, ts int64) (int64, error) {
	it, err := p.mine.Prefix(binary.BigEndian.AppendUint64(bytes.Clone(prefix), uint64(ts)))
	if err != nil {
		return 0, err
	}
	var n int64
	for it.Next() {
		n++
	}
	return n, it.Close()
}

// close drops records no partner can join any more, emitting the
// unpaired ones the join kind keeps.
func (p *joinSide[K, V, VR]) close(streamTime int64) error {
	return closeDue(p.closing, streamTime, func(ck []byte) error {
		left := ck[8] == 'l'
		key := ck[9:]
		st := p.theirs
		if left == p.left {
			st = p.mine
		}
		raw, ok, err := st.Get(key)
		if err != nil || !ok {
			return err
		}
		var b buffered
		if err := json.Unmarshal(raw, &b); err != nil {
			return err
		}
		if keep := p.kind == JoinOuter || (p.kind == JoinLeft && left); keep && !b.Matched {
			kb, _, err := splitKeyPrefix(key)
			if err != nil {
				return err
			}
			k, err := p.keys.Deserialize(kb)
			if err != nil {
				return err
			}
			self, other := b.Value, []byte(nil)
			if left != p.left {
				self, other = nil, b.Value
			}
			if err := p.emit(p.ctx, k, self, other, left == p.left, left != p.left, b.TS); err != nil {
				return err
			}
		}
		return st.Delete(key)
	})
}

func (p *joinSide[K, V, VR]) Close() error { return nil }

// JoinStreams joins two co-partitioned streams by key within w: each pair
// of records of one key at most w.TimeDifference apart yields
// join(Joined{...}); with JoinLeft or JoinOuter, records that never paired
// are emitted alone once no partner can arrive, so no spurious unpaired
// result precedes a pair. Records later than their window's end + grace
// (timestamp + difference + grace before stream time) are dropped
// (dropped_records_total{reason="late"}); each side keeps its records
// for 2 × difference + grace of stream time, so every two accepted
// records of a key at most difference apart are paired. name names the
// join's three stores (name-left, name-right, name-closing), kept as m
// says. Invalid windows are reported by Build.
func JoinStreams[K, V1, V2, VR any](left KStream[K, V1], right KStream[K, V2], w JoinWindows, kind JoinKind, name string,
	join func(K, Joined[V1, V2]) VR, values serde.Serde[VR], m Materialized) KStream[K, VR] {
	sb := left.sb
	if w.TimeDifference < 0 || w.Grace < 0 {
		sb.b.AddError(fmt.Errorf("join %q: time difference and grace must not be negative", name))
	}
	stores := [3]string{name + "-left", name + "-right", name + "-closing"}
	dropped := sb.dropped.WithLabelValues("late").Inc
	// emit decodes both sides from their bytes, whichever side is "self".
	emitFor := func(selfIsLeft bool) func(ctx exactly.ProcessorContext[K, VR], k K, self, other []byte, hasSelf, hasOther bool, ts int64) error {
		return func(ctx exactly.ProcessorContext[K, VR], k K, self, other []byte, hasSelf, hasOther bool, ts int64) error {
			lb, rb, hasL, hasR := self, other, hasSelf, hasOther
			if !selfIsLeft {
				lb, rb, hasL, hasR = other, self, hasOther, hasSelf
			}
			var j Joined[V1, V2]
			var err error
			if hasL {
				if j.Left, err = left.values.Deserialize(lb); err != nil {
					return err
				}
				j.HasLeft = true
			}
			if hasR {
				if j.Right, err = right.values.Deserialize(rb); err != nil {
					return err
				}
				j.HasRight = true
			}
			ctx.Forward(exactly.Record[K, VR]{Key: k, Value: join(k, j), Timestamp: time.UnixMilli(ts)})
			return nil
		}
	}
	ln, rn := sb.name("KSTREAM-JOINTHIS"), sb.name("KSTREAM-JOINOTHER")
	exactly.AddProcessor(sb.b, ln, func() exactly.Processor[K, V1, K, VR] {
		return &joinSide[K, V1, VR]{left: true, w: w, kind: kind, keys: left.keys, values: left.values, emit: emitFor(true),
			stores: stores, dropped: dropped}
	}, left.node)
	exactly.AddProcessor(sb.b, rn, func() exactly.Processor[K, V2, K, VR] {
		return &joinSide[K, V2, VR]{left: false, w: w, kind: kind, keys: right.keys, values: right.values, emit: emitFor(false),
			stores: [3]string{stores[1], stores[0], stores[2]}, dropped: dropped}
	}, right.node)
	for _, s := range stores {
		exactly.AddStore(sb.b, exactly.Store[[]byte, []byte]{Name: s, Keys: serde.Bytes, Values: serde.Bytes, Persistent: m.Persistent}, ln, rn)
	}
	merged := sb.name("KSTREAM-MERGE")
	exactly.AddProcessor(sb.b, merged, exactly.ProcessorFunc[K, VR, K, VR](func(ctx exactly.ProcessorContext[K, VR], rec exactly.Record[K, VR]) error {
		ctx.Forward(rec)
		return nil
	}).Supplier(), ln, rn)
	return KStream[K, VR]{sb: sb, node: merged, keys: left.keys, values: values}
}
