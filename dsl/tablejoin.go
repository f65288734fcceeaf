package dsl

import (
	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// tableJoinSide turns the updates of one side of a table–table join into
// updates of the result, reading the other side's current value.
type tableJoinSide[K, VS, VO, VR any] struct {
	other string // the other side's store
	// result joins this side's value with the other side's, either of
	// which may be absent, for the join kind.
	result func(k K, self VS, hasSelf bool, other VO, hasOther bool) (VR, bool)
	ctx    exactly.ProcessorContext[K, Change[VR]]
	kv     store.KeyValueStore[K, VO]
}

func (p *tableJoinSide[K, VS, VO, VR]) Init(ctx exactly.ProcessorContext[K, Change[VR]]) (err error) {
	p.ctx = ctx
	p.kv, err = exactly.GetKeyValueStore[K, VO](ctx, p.other)
	return err
}

func (p *tableJoinSide[K, VS, VO, VR]) Process(rec exactly.Record[K, Change[VS]]) error {
	other, found, err := p.kv.Get(rec.Key)
	if err != nil {
		return err
	}
	var out Change[VR]
	out.Old, out.HasOld = p.result(rec.Key, rec.Value.Old, rec.Value.HasOld, other, found)
	out.New, out.HasNew = p.result(rec.Key, rec.Value.New, rec.Value.HasNew, other, found)
	if out.HasOld || out.HasNew {
		p.ctx.Forward(exactly.Record[K, Change[VR]]{Key: rec.Key, Value: out, Timestamp: rec.Timestamp, Headers: rec.Headers})
	}
	return nil
}

func (p *tableJoinSide[K, VS, VO, VR]) Close() error { return nil }

// keeps reports whether a join of kind has a result for a key whose left
// and right values are present or not.
func (kind JoinKind) keeps(hasLeft, hasRight bool) bool {
	switch kind {
	case JoinInner:
		return hasLeft && hasRight
	case JoinLeft:
		return hasLeft
	default:
		return hasLeft || hasRight
	}
}

// JoinTables joins two co-partitioned tables by key (Kafka Streams'
// KTable–KTable join): the result table holds join(k, Joined{...}) for
// every key whose values the join kind keeps (JoinInner: both sides;
// JoinLeft: the left side; JoinOuter: either), and is updated whenever
// either side changes. When an update or deletion of one side ends a
// result (an inner join's partner deleted), the result is deleted, so
// operations downstream retract what they saw. Each result update carries
// the timestamp of the update that caused it. Sides that are not
// materialized get a store for the join; the result is not materialized
// (Materialize it to query it).
func JoinTables[K, V1, V2, VR any](left KTable[K, V1], right KTable[K, V2], kind JoinKind,
	join func(K, Joined[V1, V2]) VR, values serde.Serde[VR]) KTable[K, VR] {
	sb := left.sb
	left, right = left.readable(), right.readable()
	result := func(k K, l V1, hasL bool, r V2, hasR bool) (VR, bool) {
		if !kind.keeps(hasL, hasR) {
			var zero VR
			return zero, false
		}
		return join(k, Joined[V1, V2]{Left: l, HasLeft: hasL, Right: r, HasRight: hasR}), true
	}
	ln, rn := sb.name("KTABLE-JOINTHIS"), sb.name("KTABLE-JOINOTHER")
	exactly.AddProcessor(sb.b, ln, func() exactly.Processor[K, Change[V1], K, Change[VR]] {
		return &tableJoinSide[K, V1, V2, VR]{other: right.Store, result: result}
	}, left.node)
	exactly.AddProcessor(sb.b, rn, func() exactly.Processor[K, Change[V2], K, Change[VR]] {
		return &tableJoinSide[K, V2, V1, VR]{other: left.Store,
			result: func(k K, r V2, hasR bool, l V1, hasL bool) (VR, bool) { return result(k, l, hasL, r, hasR) }}
	}, right.node)
	sb.b.Connect(ln, right.Store)
	sb.b.Connect(rn, left.Store)
	merged := sb.name("KTABLE-MERGE")
	exactly.AddProcessor(sb.b, merged, exactly.ProcessorFunc[K, Change[VR], K, Change[VR]](
		func(ctx exactly.ProcessorContext[K, Change[VR]], rec exactly.Record[K, Change[VR]]) error {
			ctx.Forward(rec)
			return nil
		}).Supplier(), ln, rn)
	return KTable[K, VR]{sb: sb, node: merged, keys: left.keys, values: values}
}
