package dsl

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// A foreign-key join runs in two places, as Kafka Streams' does: the left
// table's tasks (partitioned by the left key) and the right table's
// (partitioned by the foreign key). They talk through two internal topics:
//
//   - the subscription topic, keyed by foreign key and partitioned like
//     the right table's topic: "left key k now refers to you (with this
//     hash of its value)" or "no longer";
//   - the response topic, keyed by left key and partitioned like the left
//     table's topic: "for k's value with this hash, the right value is …".
//
// The right side keeps the subscriptions in a store (foreign key, left
// key → hash), answers each one with the right value it finds, and
// answers every subscriber again when the right value changes. The left
// side joins a response only if its hash is that of the left value it
// holds now, so a response to a value that has since changed (its foreign
// key moved on) is dropped instead of overwriting a newer result.

// subscription is a record of the subscription topic.
type subscription struct {
	subscribe bool // false: unsubscribe
	respond   bool // unsubscribe: answer with no value (the left key was deleted)
	hash      []byte
	leftKey   []byte
}

var subscriptionSerde = serde.Funcs[subscription]{
	SerializeFunc: func(s subscription) ([]byte, error) {
		var flags byte
		if s.subscribe {
			flags |= 1
		}
		if s.respond {
			flags |= 2
		}
		b := append([]byte{flags}, byte(len(s.hash)))
		return append(append(b, s.hash...), s.leftKey...), nil
	},
	DeserializeFunc: func(b []byte) (subscription, error) {
		if len(b) < 2 || len(b) < 2+int(b[1]) {
			return subscription{}, fmt.Errorf("%w: subscription of %d bytes", serde.ErrInvalid, len(b))
		}
		n := int(b[1])
		return subscription{subscribe: b[0]&1 != 0, respond: b[0]&2 != 0,
			hash: bytes.Clone(b[2 : 2+n]), leftKey: bytes.Clone(b[2+n:])}, nil
	},
}

// response is a record of the response topic.
type response struct {
	hash       []byte // nil: the left key was deleted
	hasRight   bool
	rightValue []byte
}

var responseSerde = serde.Funcs[response]{
	SerializeFunc: func(r response) ([]byte, error) {
		var flags byte
		if r.hasRight {
			flags |= 1
		}
		b := append([]byte{flags}, byte(len(r.hash)))
		return append(append(b, r.hash...), r.rightValue...), nil
	},
	DeserializeFunc: func(b []byte) (response, error) {
		if len(b) < 2 || len(b) < 2+int(b[1]) {
			return response{}, fmt.Errorf("%w: response of %d bytes", serde.ErrInvalid, len(b))
		}
		n := int(b[1])
		r := response{hasRight: b[0]&1 != 0, rightValue: bytes.Clone(b[2+n:])}
		if n > 0 {
			r.hash = bytes.Clone(b[2 : 2+n])
		}
		return r, nil
	},
}

// valueHash identifies a left value in subscriptions and responses.
func valueHash(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:16]
}

// subscriptionKey is len(foreign key) foreign key left key, so that a
// foreign key's subscribers share a prefix.
func subscriptionKey(fk, leftKey []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(len(fk)))
	return append(append(b, fk...), leftKey...)
}

func subscriptionPrefix(fk []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(fk))), fk...)
}

// subscriptionSender turns the left table's changes into subscriptions.
type subscriptionSender[K, V, KO any] struct {
	foreignKey  func(V) KO
	leftKeys    serde.Serde[K]
	leftValues  serde.Serde[V]
	foreignKeys serde.Serde[KO]
	ctx         exactly.ProcessorContext[KO, subscription]
}

func (p *subscriptionSender[K, V, KO]) Init(ctx exactly.ProcessorContext[KO, subscription]) error {
	p.ctx = ctx
	return nil
}

func (p *subscriptionSender[K, V, KO]) Process(rec exactly.Record[K, Change[V]]) error {
	kb, err := p.leftKeys.Serialize(rec.Key)
	if err != nil {
		return err
	}
	c := rec.Value
	var newFK KO
	var newFKBytes, hash []byte
	if c.HasNew {
		newFK = p.foreignKey(c.New)
		if newFKBytes, err = p.foreignKeys.Serialize(newFK); err != nil {
			return err
		}
		vb, err := p.leftValues.Serialize(c.New)
		if err != nil {
			return err
		}
		hash = valueHash(vb)
	}
	send := func(fk KO, s subscription) {
		p.ctx.Forward(exactly.Record[KO, subscription]{Key: fk, Value: s, Timestamp: rec.Timestamp, Headers: rec.Headers})
	}
	if c.HasOld {
		oldFK := p.foreignKey(c.Old)
		oldFKBytes, err := p.foreignKeys.Serialize(oldFK)
		if err != nil {
			return err
		}
		if !c.HasNew || !bytes.Equal(oldFKBytes, newFKBytes) {
			send(oldFK, subscription{leftKey: kb, respond: !c.HasNew})
		}
	}
	if c.HasNew {
		send(newFK, subscription{subscribe: true, hash: hash, leftKey: kb})
	}
	return nil
}

func (p *subscriptionSender[K, V, KO]) Close() error { return nil }

// subscriptionReceiver keeps the subscriptions of the right side's
// partition and answers each with the right value it finds.
type subscriptionReceiver[KO, VO any] struct {
	stores      [2]string // subscriptions, right table
	foreignKeys serde.Serde[KO]
	rightValues serde.Serde[VO]
	ctx         exactly.ProcessorContext[[]byte, response]
	subs        store.KeyValueStore[[]byte, []byte]
	right       store.KeyValueStore[KO, VO]
}

func (p *subscriptionReceiver[KO, VO]) Init(ctx exactly.ProcessorContext[[]byte, response]) (err error) {
	p.ctx = ctx
	if p.subs, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.stores[0]); err != nil {
		return err
	}
	p.right, err = exactly.GetKeyValueStore[KO, VO](ctx, p.stores[1])
	return err
}

func (p *subscriptionReceiver[KO, VO]) Process(rec exactly.Record[KO, subscription]) error {
	fk, err := p.foreignKeys.Serialize(rec.Key)
	if err != nil {
		return err
	}
	s := rec.Value
	key := subscriptionKey(fk, s.leftKey)
	if !s.subscribe {
		if err := p.subs.Delete(key); err != nil {
			return err
		}
		if s.respond {
			p.ctx.Forward(exactly.Record[[]byte, response]{Key: s.leftKey, Value: response{}, Timestamp: rec.Timestamp})
		}
		return nil
	}
	if err := p.subs.Put(key, s.hash); err != nil {
		return err
	}
	r := response{hash: s.hash}
	v, found, err := p.right.Get(rec.Key)
	if err != nil {
		return err
	}
	if found {
		if r.rightValue, err = p.rightValues.Serialize(v); err != nil {
			return err
		}
		r.hasRight = true
	}
	p.ctx.Forward(exactly.Record[[]byte, response]{Key: s.leftKey, Value: r, Timestamp: rec.Timestamp})
	return nil
}

func (p *subscriptionReceiver[KO, VO]) Close() error { return nil }

// foreignUpdater answers every subscriber of a right key again when its
// value changes.
type foreignUpdater[KO, VO any] struct {
	store       string
	foreignKeys serde.Serde[KO]
	rightValues serde.Serde[VO]
	ctx         exactly.ProcessorContext[[]byte, response]
	subs        store.KeyValueStore[[]byte, []byte]
}

func (p *foreignUpdater[KO, VO]) Init(ctx exactly.ProcessorContext[[]byte, response]) (err error) {
	p.ctx = ctx
	p.subs, err = exactly.GetKeyValueStore[[]byte, []byte](ctx, p.store)
	return err
}

func (p *foreignUpdater[KO, VO]) Process(rec exactly.Record[KO, Change[VO]]) error {
	fk, err := p.foreignKeys.Serialize(rec.Key)
	if err != nil {
		return err
	}
	var value []byte
	if rec.Value.HasNew {
		if value, err = p.rightValues.Serialize(rec.Value.New); err != nil {
			return err
		}
	}
	prefix := subscriptionPrefix(fk)
	it, err := p.subs.Prefix(prefix)
	if err != nil {
		return err
	}
	var out []exactly.Record[[]byte, response]
	for it.Next() {
		out = append(out, exactly.Record[[]byte, response]{
			Key:       bytes.Clone(it.Key()[len(prefix):]),
			Value:     response{hash: bytes.Clone(it.Value()), hasRight: rec.Value.HasNew, rightValue: value},
			Timestamp: rec.Timestamp,
		})
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, r := range out {
		p.ctx.Forward(r)
	}
	return nil
}

func (p *foreignUpdater[KO, VO]) Close() error { return nil }

// responseJoiner joins the responses that still match the left value and
// keeps the result, so that each change carries the result it replaces.
type responseJoiner[K, V, VO, VR any] struct {
	stores      [2]string // left table, result
	leftOuter   bool
	leftValues  serde.Serde[V]
	rightValues serde.Serde[VO]
	join        func(K, Joined[V, VO]) VR
	ctx         exactly.ProcessorContext[K, Change[VR]]
	left        store.KeyValueStore[K, V]
	result      store.KeyValueStore[K, VR]
}

func (p *responseJoiner[K, V, VO, VR]) Init(ctx exactly.ProcessorContext[K, Change[VR]]) (err error) {
	p.ctx = ctx
	if p.left, err = exactly.GetKeyValueStore[K, V](ctx, p.stores[0]); err != nil {
		return err
	}
	p.result, err = exactly.GetKeyValueStore[K, VR](ctx, p.stores[1])
	return err
}

func (p *responseJoiner[K, V, VO, VR]) Process(rec exactly.Record[K, response]) error {
	lv, hasLeft, err := p.left.Get(rec.Key)
	if err != nil {
		return err
	}
	var current []byte
	if hasLeft {
		vb, err := p.leftValues.Serialize(lv)
		if err != nil {
			return err
		}
		current = valueHash(vb)
	}
	if !bytes.Equal(current, rec.Value.hash) {
		return nil // an answer about a left value that has changed since
	}
	var c Change[VR]
	if hasLeft && (rec.Value.hasRight || p.leftOuter) {
		j := Joined[V, VO]{Left: lv, HasLeft: true}
		if rec.Value.hasRight {
			if j.Right, err = p.rightValues.Deserialize(rec.Value.rightValue); err != nil {
				return err
			}
			j.HasRight = true
		}
		c.New, c.HasNew = p.join(rec.Key, j), true
	}
	if c.Old, c.HasOld, err = p.result.Get(rec.Key); err != nil {
		return err
	}
	switch {
	case c.HasNew:
		err = p.result.Put(rec.Key, c.New)
	case c.HasOld:
		err = p.result.Delete(rec.Key)
	default:
		return nil
	}
	if err != nil {
		return err
	}
	p.ctx.Forward(exactly.Record[K, Change[VR]]{Key: rec.Key, Value: c, Timestamp: rec.Timestamp, Headers: rec.Headers})
	return nil
}

func (p *responseJoiner[K, V, VO, VR]) Close() error { return nil }

// SubscriptionTopic is the topic on which the left side of the
// foreign-key join called name subscribes to right keys.
func SubscriptionTopic(applicationID, name string) string {
	return applicationID + "-" + name + "-subscription-registration-topic"
}

// ResponseTopic is the topic on which the right side of the foreign-key
// join called name answers the left side.
func ResponseTopic(applicationID, name string) string {
	return applicationID + "-" + name + "-subscription-response-topic"
}

// JoinOnForeignKey joins each entry of the left table with the entry of
// the right table whose key foreignKey extracts from the left value (Kafka
// Streams' foreign-key join): kind JoinInner keeps the left entries whose
// foreign key the right table holds, JoinLeft every left entry (HasRight
// false where the right one is missing). The result is keyed like the
// left table and follows changes of both sides: a left value that changes
// its foreign key, or is deleted, and a right value that changes or is
// deleted, update or retract the results that depend on them. The tables
// need not be co-partitioned.
//
// name names the join's internal topics, SubscriptionTopic (partitioned
// like the right table's topic, by foreign key) and ResponseTopic
// (partitioned like the left table's topic), its stores name-subscriptions
// (on the right side) and name (the result, queryable, on the left side),
// both kept as m says.
// Both topics are partitioned by Kafka's default partitioner, so the
// tables' topics must be too. Options.ApplicationID is required; a kind
// other than JoinInner and JoinLeft is reported by Build. Sides that are
// not materialized get a store for the join. Results carry the timestamp
// of the update that caused them.
func JoinOnForeignKey[K, V, KO, VO, VR any](left KTable[K, V], right KTable[KO, VO], kind JoinKind, name string, foreignKey func(V) KO,
	join func(K, Joined[V, VO]) VR, values serde.Serde[VR], m Materialized) KTable[K, VR] {
	sb := left.sb
	result := KTable[K, VR]{sb: sb, node: left.node, keys: left.keys, values: values, Store: name}
	if sb.opts.ApplicationID == "" {
		sb.b.AddError(fmt.Errorf("foreign-key join %q: set Options.ApplicationID to the application's id; its internal topics are named after it", name))
		return result
	}
	if kind != JoinInner && kind != JoinLeft {
		sb.b.AddError(fmt.Errorf("foreign-key join %q: kind must be JoinInner or JoinLeft", name))
		return result
	}
	left, right = left.readable(), right.readable()
	subsTopic, respTopic := SubscriptionTopic(sb.opts.ApplicationID, name), ResponseTopic(sb.opts.ApplicationID, name)
	subsStore := name + "-subscriptions"

	// Left side: changes become subscriptions.
	send := name + "-subscription-send"
	exactly.AddProcessor(sb.b, send, func() exactly.Processor[K, Change[V], KO, subscription] {
		return &subscriptionSender[K, V, KO]{foreignKey: foreignKey, leftKeys: left.keys, leftValues: left.values, foreignKeys: right.keys}
	}, left.node)
	exactly.AddSink(sb.b, name+"-subscription-sink", exactly.Sink[KO, subscription]{Topic: subsTopic, Keys: right.keys, Values: subscriptionSerde}, send)

	// Right side: subscriptions are kept and answered, and answered again
	// when the right value changes.
	subsSource := name + "-subscription-source"
	exactly.AddSource(sb.b, subsSource, exactly.Source[KO, subscription]{Topics: []string{subsTopic}, Keys: right.keys, Values: subscriptionSerde})
	receive := name + "-subscription-receive"
	exactly.AddProcessor(sb.b, receive, func() exactly.Processor[KO, subscription, []byte, response] {
		return &subscriptionReceiver[KO, VO]{stores: [2]string{subsStore, right.Store}, foreignKeys: right.keys, rightValues: right.values}
	}, subsSource)
	update := name + "-foreign-update"
	exactly.AddProcessor(sb.b, update, func() exactly.Processor[KO, Change[VO], []byte, response] {
		return &foreignUpdater[KO, VO]{store: subsStore, foreignKeys: right.keys, rightValues: right.values}
	}, right.node)
	exactly.AddStore(sb.b, exactly.Store[[]byte, []byte]{Name: subsStore, Keys: serde.Bytes, Values: serde.Bytes, Persistent: m.Persistent}, receive, update)
	sb.b.Connect(receive, right.Store)
	exactly.AddSink(sb.b, name+"-response-sink", exactly.Sink[[]byte, response]{Topic: respTopic, Keys: serde.Bytes, Values: responseSerde}, receive, update)

	// Left side again: responses that still match become results.
	respSource := name + "-response-source"
	exactly.AddSource(sb.b, respSource, exactly.Source[K, response]{Topics: []string{respTopic}, Keys: left.keys, Values: responseSerde})
	joiner := name + "-response-join"
	exactly.AddProcessor(sb.b, joiner, func() exactly.Processor[K, response, K, Change[VR]] {
		return &responseJoiner[K, V, VO, VR]{stores: [2]string{left.Store, name}, leftOuter: kind == JoinLeft,
			leftValues: left.values, rightValues: right.values, join: join}
	}, respSource)
	exactly.AddStore(sb.b, exactly.Store[K, VR]{Name: name, Keys: left.keys, Values: values, Persistent: m.Persistent}, joiner)
	sb.b.Connect(joiner, left.Store)
	result.node = joiner
	return result
}
