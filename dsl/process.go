package dsl

import (
	"bytes"
	"fmt"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/processors/dedup"
	"github.com/exactly-go/exactly/processors/reorder"
	"github.com/exactly-go/exactly/serde"
)

// Process hangs a Processor API node in the middle of a chain, as Kafka
// Streams' process() does: supplier makes one processor per task, which
// receives the stream's records and may forward any number of records of
// new types, from Process or from its punctuators. The stores it uses are
// declared on the builder (exactly.AddStore(sb.Builder(), ...), with no
// processor) and named in stores; Process connects them. Its dead letters
// go to the dead-letter sinks added with DeadLetterTo on the returned
// stream.
//
// The processor may change keys, so a grouping downstream goes through a
// repartition topic; ProcessValues is for processors that keep them. An
// empty name gives the node a generated one; Node on the result returns it.
func Process[K, V, K2, V2 any](s KStream[K, V], name string, supplier func() exactly.Processor[K, V, K2, V2],
	keys serde.Serde[K2], values serde.Serde[V2], stores ...string) KStream[K2, V2] {
	if name == "" {
		name = s.sb.name("KSTREAM-PROCESSOR")
	}
	exactly.AddProcessor(s.sb.b, name, supplier, s.node)
	if len(stores) > 0 {
		s.sb.b.Connect(name, stores...)
	}
	return KStream[K2, V2]{sb: s.sb, node: name, keys: keys, values: values, rekeyed: true}
}

// ProcessValues is Process for a processor that keeps each record's key
// (Kafka Streams' processValues): the stream stays partitioned by key, so
// a grouping downstream needs no repartition. A record the processor
// forwards while processing an input record must carry that record's key
// (equal serialized bytes); another key fails the record, as a processing
// error. Records forwarded from punctuators are not checked.
func ProcessValues[K, V, V2 any](s KStream[K, V], name string, supplier func() exactly.Processor[K, V, K, V2],
	values serde.Serde[V2], stores ...string) KStream[K, V2] {
	if name == "" {
		name = s.sb.name("KSTREAM-PROCESSVALUES")
	}
	keys := s.keys
	exactly.AddProcessor(s.sb.b, name, func() exactly.Processor[K, V, K, V2] {
		return &fixedKeyProcessor[K, V, V2]{inner: supplier(), keys: keys}
	}, s.node)
	if len(stores) > 0 {
		s.sb.b.Connect(name, stores...)
	}
	return KStream[K, V2]{sb: s.sb, node: name, keys: s.keys, values: values, rekeyed: s.rekeyed}
}

// fixedKeyProcessor checks that its inner processor forwards the key of
// the record it is processing.
type fixedKeyProcessor[K, V, V2 any] struct {
	inner   exactly.Processor[K, V, K, V2]
	keys    serde.Serde[K]
	current []byte // serialized key of the record being processed; nil outside Process
	err     error
}

func (p *fixedKeyProcessor[K, V, V2]) Init(ctx exactly.ProcessorContext[K, V2]) error {
	return p.inner.Init(&fixedKeyContext[K, V2]{ProcessorContext: ctx, check: p.check})
}

func (p *fixedKeyProcessor[K, V, V2]) Process(rec exactly.Record[K, V]) error {
	kb, err := p.keys.Serialize(rec.Key)
	if err != nil {
		return err
	}
	p.current, p.err = kb, nil
	err = p.inner.Process(rec)
	p.current = nil
	if err != nil {
		return err
	}
	return p.err
}

func (p *fixedKeyProcessor[K, V, V2]) check(key K) bool {
	if p.current == nil || p.err != nil {
		return p.err == nil
	}
	kb, err := p.keys.Serialize(key)
	if err == nil && !bytes.Equal(kb, p.current) {
		err = fmt.Errorf("ProcessValues: the processor forwarded key %q while processing key %q; use Process to change keys", kb, p.current)
	}
	p.err = err
	return err == nil
}

func (p *fixedKeyProcessor[K, V, V2]) Close() error { return p.inner.Close() }

// fixedKeyContext is the context a ProcessValues processor sees: the
// node's own, with forwarding checked.
type fixedKeyContext[K, V any] struct {
	exactly.ProcessorContext[K, V]
	check func(K) bool
}

func (c *fixedKeyContext[K, V]) Forward(rec exactly.Record[K, V]) {
	if c.check(rec.Key) {
		c.ProcessorContext.Forward(rec)
	}
}

func (c *fixedKeyContext[K, V]) ForwardTo(child string, rec exactly.Record[K, V]) {
	if c.check(rec.Key) {
		c.ProcessorContext.ForwardTo(child, rec)
	}
}

// DeadLetterTo adds a dead-letter sink writing to topic under the stream's
// last node: the records that node dead-letters (a ready processor's
// expired or conflicting events, a custom processor's DeadLetter calls, or
// records that fail in it when the builder sends errors to dead letters)
// go there with their original bytes and the error headers.
func (s KStream[K, V]) DeadLetterTo(topic string) {
	exactly.AddDeadLetterSink(s.sb.b, s.sb.name("KSTREAM-DEADLETTER"), topic, s.node)
}

// Dedup forwards each event only the first time its id is seen, with the
// ready processor of package dedup (its store, TTL, sweep and metrics) in
// the middle of a chain; name names the node, its store (default
// "<name>-store") and its metrics. Invalid options are reported by Build.
func Dedup[K, V any](s KStream[K, V], name string, opts dedup.Options[K, V]) KStream[K, V] {
	dedup.Add(s.sb.b, name, opts, s.node)
	return KStream[K, V]{sb: s.sb, node: name, keys: s.keys, values: s.values, rekeyed: s.rekeyed}
}

// Reorder holds each event back until it is ready and releases them per
// key in event-time order, with the ready processor of package reorder in
// the middle of a chain. opts.Keys and opts.Values default to the
// stream's serdes. Expired events are dead-lettered: add a dead-letter
// sink with DeadLetterTo on the returned stream. Invalid options are
// reported by Build.
func Reorder[K, V any](s KStream[K, V], name string, opts reorder.Options[K, V]) KStream[K, V] {
	if opts.Keys == nil {
		opts.Keys = s.keys
	}
	if opts.Values == nil {
		opts.Values = s.values
	}
	reorder.Add(s.sb.b, name, opts, s.node)
	return KStream[K, V]{sb: s.sb, node: name, keys: s.keys, values: s.values, rekeyed: s.rekeyed}
}
