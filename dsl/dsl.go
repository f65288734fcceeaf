// Package dsl is the high-level layer over the Processor API, in Kafka
// Streams' vocabulary and shaped by Go generics. Everything compiles to
// ordinary processors, stores and sinks of an exactly.Builder, so the
// runtime's guarantees (exactly-once, restore, crash safety) hold for it
// unchanged.
//
// # Streams
//
// Streams are read from topics (Stream, StreamFrom) and transformed
// without state (Filter, MapValues, Map, SelectKey, FlatMap, Peek, Split,
// Merge), then written (To) or grouped and aggregated into tables (Count,
// Reduce, Aggregate). A grouping after a key change goes through a
// repartition topic.
//
// # Windows
//
// Aggregations per window in event time, each with an explicit grace
// period for late records, give tables keyed by Windowed: tumbling and
// hopping windows (WindowedCount, WindowedAggregate), session windows that
// merge as activity bridges them (SessionCount, SessionAggregate) and
// sliding windows defined by the records themselves (SlidingCount,
// SlidingAggregate). The windows carry the emit strategy: OnWindowUpdate
// (the default) emits every update, OnWindowClose each window's final
// value once. WindowedSerde and ReadableWindowedSerde write windowed
// keys, the second as text any consumer reads.
//
// KTable.Suppress holds a table's updates back in a logged buffer:
// UntilWindowCloses emits each window's final value once,
// UntilTimeLimit at most one update per key per period; a bounded buffer
// either emits early or fails when full.
//
// # Mixing in the Processor API
//
// Process and ProcessValues hang a processor of the application's own in
// the middle of a chain, with the stores it names; Dedup and Reorder put
// the ready processors there, and DeadLetterTo gives a node its
// dead-letter topic. No intermediate topic is needed.
//
// # Tables
//
// A KTable is the latest value per key (Table reads a compacted topic).
// Its updates flow as Change records with the old and the new value, so a
// tombstone deletes its key everywhere downstream, Filter and
// TableMapValues retract entries that leave them, and a table re-grouped
// with TableGroupBy is aggregated with an adder and a subtractor
// (AggregateTable, CountTable, ReduceTable). Tables join streams (Join,
// LeftJoin) and each other: by key (JoinTables: inner, left, outer) or
// through a foreign key extracted from the left value (JoinOnForeignKey,
// over a subscription and a response topic, so the tables need not be
// co-partitioned). Materialize makes any table queryable.
//
// A versioned table (VersionedTable) also keeps each key's history for a
// retention period: a stream joined with it joins the value valid at each
// record's timestamp (a temporal join), and GetVersionedStore and
// QueryAsOf read a key's value as of any time within the history.
// QueryWindows and QuerySessions read a key's windows and sessions over a
// time range.
//
// A GlobalKTable (GlobalTable) is held whole by every instance, read to
// the end of its topic before processing starts and updated while
// running; a stream joins it through a key it extracts from each record
// (JoinGlobal, LeftJoinGlobal), with no co-partitioning.
//
// # Conventions
//
// Operations that change the type parameters are functions (Go methods
// cannot add type parameters); those that keep them are methods. A
// stateful operation takes, in this order, what it reads (a grouped
// stream, tables), what shapes it (windows, a join kind), the name of its
// store or of its internal topics, its functions (init, add, merge, a key
// extractor, a joiner), the serde of its result, and last a Materialized
// saying how its stores are kept (Persistent: on disk). Every operation
// returns a stream or a table, never an error: invalid arguments are
// recorded with Builder.AddError, and Build reports them all at once.
package dsl

import (
	"fmt"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/metrics"
	"github.com/exactly-go/exactly/serde"
	"github.com/prometheus/client_golang/prometheus"
)

// StreamsBuilder builds a topology from streams and tables.
type StreamsBuilder struct {
	b       *exactly.Builder
	seq     int
	opts    Options
	dropped *prometheus.CounterVec
}

// Options configure a StreamsBuilder; the zero value is the default.
type Options struct {
	// ApplicationID names the repartition topics,
	// <ApplicationID>-<name>-repartition; it must equal the application's
	// Config.ApplicationID. Required when a grouping follows a key change.
	ApplicationID string
	// Registerer receives the DSL's metrics: dropped_records_total, the
	// records windowed aggregations and joins dropped, by reason ("late":
	// after window end + grace). Nil registers nothing. Building again
	// against the same registry reuses the series;
	// prometheus.WrapRegistererWith adds labels of the application's own.
	Registerer prometheus.Registerer
}

// NewStreamsBuilder returns an empty builder; the zero Options are the
// defaults.
func NewStreamsBuilder(opts Options) *StreamsBuilder {
	sb := &StreamsBuilder{b: exactly.NewBuilder(), opts: opts}
	var err error
	sb.dropped, err = metrics.Register(opts.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dropped_records_total", Help: "Records dropped by windowed aggregations and joins, by reason.",
	}, []string{"reason"}))
	if err != nil {
		sb.b.AddError(fmt.Errorf("dsl: register metrics: %w", err))
	}
	return sb
}

// Builder returns the underlying Processor API builder, to mix in custom
// processors or dead-letter sinks.
func (sb *StreamsBuilder) Builder() *exactly.Builder { return sb.b }

// Build validates and returns the topology. It reports every problem at
// once: those of the operations (invalid windows, a repartition without
// Options.ApplicationID) with those of the topology's shape.
func (sb *StreamsBuilder) Build() (*exactly.Topology, error) {
	return sb.b.Build()
}

func (sb *StreamsBuilder) name(op string) string {
	sb.seq++
	return fmt.Sprintf("%s-%010d", op, sb.seq)
}

// KStream is a stream of records with keys K and values V.
type KStream[K, V any] struct {
	sb     *StreamsBuilder
	node   string
	keys   serde.Serde[K]
	values serde.Serde[V]
	// rekeyed says the key changed since the records were read, so their
	// partition no longer follows their key.
	rekeyed bool
}

// KeyValue is one record of FlatMap's output.
type KeyValue[K, V any] struct {
	Key   K
	Value V
}

// Stream reads topic as a stream. Its records carry event time from the
// Kafka record timestamp; see StreamFrom for another timestamp or several
// topics.
func Stream[K, V any](sb *StreamsBuilder, topic string, keys serde.Serde[K], values serde.Serde[V]) KStream[K, V] {
	return StreamFrom(sb, exactly.Source[K, V]{Topics: []string{topic}, Keys: keys, Values: values})
}

// StreamFrom reads a source declared in full: its topics (co-partitioned),
// serdes and event-time extractor, as exactly.AddSource takes them.
func StreamFrom[K, V any](sb *StreamsBuilder, src exactly.Source[K, V]) KStream[K, V] {
	name := sb.name("KSTREAM-SOURCE")
	exactly.AddSource(sb.b, name, src)
	return KStream[K, V]{sb: sb, node: name, keys: src.Keys, values: src.Values}
}

// Node is the name of the stream's last node in the topology, for
// connecting Processor API nodes to it.
func (s KStream[K, V]) Node() string { return s.node }

// stateless adds a processor that calls f for each record.
func stateless[K, V, K2, V2 any](s KStream[K, V], op string, keys serde.Serde[K2], values serde.Serde[V2],
	f func(ctx exactly.ProcessorContext[K2, V2], rec exactly.Record[K, V]) error) KStream[K2, V2] {
	name := s.sb.name(op)
	exactly.AddProcessor(s.sb.b, name, exactly.ProcessorFunc[K, V, K2, V2](f).Supplier(), s.node)
	return KStream[K2, V2]{sb: s.sb, node: name, keys: keys, values: values, rekeyed: s.rekeyed}
}

// rekey marks a stream whose keys an operation may have changed.
func rekey[K, V any](s KStream[K, V]) KStream[K, V] {
	s.rekeyed = true
	return s
}

// Filter keeps the records for which keep returns true.
func (s KStream[K, V]) Filter(keep func(K, V) bool) KStream[K, V] {
	return stateless(s, "KSTREAM-FILTER", s.keys, s.values, func(ctx exactly.ProcessorContext[K, V], rec exactly.Record[K, V]) error {
		if keep(rec.Key, rec.Value) {
			ctx.Forward(rec)
		}
		return nil
	})
}

// Peek calls f for each record and passes it on unchanged.
func (s KStream[K, V]) Peek(f func(K, V)) KStream[K, V] {
	return stateless(s, "KSTREAM-PEEK", s.keys, s.values, func(ctx exactly.ProcessorContext[K, V], rec exactly.Record[K, V]) error {
		f(rec.Key, rec.Value)
		ctx.Forward(rec)
		return nil
	})
}

// MapValues replaces each value with f's result; keys are unchanged.
func MapValues[K, V, V2 any](s KStream[K, V], f func(K, V) V2, values serde.Serde[V2]) KStream[K, V2] {
	return stateless(s, "KSTREAM-MAPVALUES", s.keys, values, func(ctx exactly.ProcessorContext[K, V2], rec exactly.Record[K, V]) error {
		ctx.Forward(exactly.Record[K, V2]{Key: rec.Key, Value: f(rec.Key, rec.Value), Timestamp: rec.Timestamp, Headers: rec.Headers})
		return nil
	})
}

// Map replaces each record's key and value. A grouping after a key change
// needs the records moved to the partitions of their new keys: write the
// stream to a topic partitioned by the new key (To) and read it back.
func Map[K, V, K2, V2 any](s KStream[K, V], f func(K, V) (K2, V2), keys serde.Serde[K2], values serde.Serde[V2]) KStream[K2, V2] {
	return rekey(stateless(s, "KSTREAM-MAP", keys, values, func(ctx exactly.ProcessorContext[K2, V2], rec exactly.Record[K, V]) error {
		k, v := f(rec.Key, rec.Value)
		ctx.Forward(exactly.Record[K2, V2]{Key: k, Value: v, Timestamp: rec.Timestamp, Headers: rec.Headers})
		return nil
	}))
}

// SelectKey replaces each record's key.
func SelectKey[K, V, K2 any](s KStream[K, V], f func(K, V) K2, keys serde.Serde[K2]) KStream[K2, V] {
	return rekey(stateless(s, "KSTREAM-KEY-SELECT", keys, s.values, func(ctx exactly.ProcessorContext[K2, V], rec exactly.Record[K, V]) error {
		ctx.Forward(exactly.Record[K2, V]{Key: f(rec.Key, rec.Value), Value: rec.Value, Timestamp: rec.Timestamp, Headers: rec.Headers})
		return nil
	}))
}

// FlatMap replaces each record with zero or more records.
func FlatMap[K, V, K2, V2 any](s KStream[K, V], f func(K, V) []KeyValue[K2, V2], keys serde.Serde[K2], values serde.Serde[V2]) KStream[K2, V2] {
	return rekey(stateless(s, "KSTREAM-FLATMAP", keys, values, func(ctx exactly.ProcessorContext[K2, V2], rec exactly.Record[K, V]) error {
		for _, kv := range f(rec.Key, rec.Value) {
			ctx.Forward(exactly.Record[K2, V2]{Key: kv.Key, Value: kv.Value, Timestamp: rec.Timestamp, Headers: rec.Headers})
		}
		return nil
	}))
}

// Split sends each record to the first branch whose predicate holds; a
// record no predicate accepts is dropped (add a last predicate that
// returns true to keep them).
func (s KStream[K, V]) Split(predicates ...func(K, V) bool) []KStream[K, V] {
	name := s.sb.name("KSTREAM-BRANCH")
	var children []string
	for i := range predicates {
		children = append(children, fmt.Sprintf("%s-%d", name, i))
	}
	exactly.AddProcessor(s.sb.b, name, exactly.ProcessorFunc[K, V, K, V](func(ctx exactly.ProcessorContext[K, V], rec exactly.Record[K, V]) error {
		for i, p := range predicates {
			if p(rec.Key, rec.Value) {
				ctx.ForwardTo(children[i], rec)
				return nil
			}
		}
		return nil
	}).Supplier(), s.node)
	out := make([]KStream[K, V], len(predicates))
	for i, child := range children {
		exactly.AddProcessor(s.sb.b, child, exactly.ProcessorFunc[K, V, K, V](func(ctx exactly.ProcessorContext[K, V], rec exactly.Record[K, V]) error {
			ctx.Forward(rec)
			return nil
		}).Supplier(), name)
		out[i] = KStream[K, V]{sb: s.sb, node: child, keys: s.keys, values: s.values, rekeyed: s.rekeyed}
	}
	return out
}

// Merge combines two streams of the same types into one.
func (s KStream[K, V]) Merge(other KStream[K, V]) KStream[K, V] {
	name := s.sb.name("KSTREAM-MERGE")
	exactly.AddProcessor(s.sb.b, name, exactly.ProcessorFunc[K, V, K, V](func(ctx exactly.ProcessorContext[K, V], rec exactly.Record[K, V]) error {
		ctx.Forward(rec)
		return nil
	}).Supplier(), s.node, other.node)
	return KStream[K, V]{sb: s.sb, node: name, keys: s.keys, values: s.values, rekeyed: s.rekeyed || other.rekeyed}
}

// Repartition writes the stream to the internal topic
// <ApplicationID>-<name>-repartition, partitioned by the current key, and
// reads it back, so that each key's records meet in one task. The write
// and the read are part of the exactly-once transactions of their tasks.
// GroupByKey does this by itself after a key change.
func (s KStream[K, V]) Repartition(name string) KStream[K, V] {
	if s.sb.opts.ApplicationID == "" {
		s.sb.b.AddError(fmt.Errorf("repartition %q: set Options.ApplicationID to the application's id; repartition topics are named after it", name))
		return s
	}
	topic := RepartitionTopic(s.sb.opts.ApplicationID, name)
	exactly.AddSink(s.sb.b, name+"-repartition-sink", exactly.Sink[K, V]{Topic: topic, Keys: s.keys, Values: s.values}, s.node)
	src := name + "-repartition-source"
	exactly.AddSource(s.sb.b, src, exactly.Source[K, V]{Topics: []string{topic}, Keys: s.keys, Values: s.values})
	return KStream[K, V]{sb: s.sb, node: src, keys: s.keys, values: s.values}
}

// RepartitionTopic is the internal topic of a repartition step.
func RepartitionTopic(applicationID, name string) string {
	return applicationID + "-" + name + "-repartition"
}

// To writes the stream to topic with the stream's serdes; the partition
// is Kafka's default for the key.
func (s KStream[K, V]) To(topic string) {
	s.ToWith(topic, Produced[K, V]{})
}

// Produced chooses how ToWith writes records; nil fields take the
// stream's serdes and Kafka's default partitioner.
type Produced[K, V any] struct {
	// Keys and Values serialize the records, for instance
	// ReadableWindowedSerde for windowed keys that consumers in other
	// languages read.
	Keys   serde.Serde[K]
	Values serde.Serde[V]
	// Partitioner picks each record's partition (see exactly.Sink).
	Partitioner func(key K, value V, numPartitions int32) int32
}

// ToWith writes the stream to topic as p says (Kafka Streams'
// to(topic, Produced)).
func (s KStream[K, V]) ToWith(topic string, p Produced[K, V]) {
	if p.Keys == nil {
		p.Keys = s.keys
	}
	if p.Values == nil {
		p.Values = s.values
	}
	exactly.AddSink(s.sb.b, s.sb.name("KSTREAM-SINK"), exactly.Sink[K, V]{Topic: topic, Keys: p.Keys, Values: p.Values, Partitioner: p.Partitioner}, s.node)
}
