package exactly

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	engine "github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// Builder assembles a topology from sources, processors, sinks and stores,
// referring to each other by name. Nothing is checked until Build, which
// reports every problem at once, each naming the node or store at fault.
type Builder struct {
	nodes       []topo.Node
	stores      []*topo.StoreSpec
	connections map[string][]string
	onDeser     ErrorAction
	onProc      ErrorAction
	onProd      ErrorAction
	errs        []error
}

// NewBuilder returns an empty builder. By default deserialization and
// processing errors fail the task (FailOnError).
func NewBuilder() *Builder {
	return &Builder{connections: map[string][]string{}}
}

// OnDeserializationError chooses what happens to records whose key or value
// cannot be deserialized or whose timestamp cannot be extracted.
func (b *Builder) OnDeserializationError(a ErrorAction) { b.onDeser = a }

// OnProcessingError chooses what happens to records whose processing returns
// an error, panics, or forwards something a sink cannot serialize.
func (b *Builder) OnProcessingError(a ErrorAction) { b.onProc = a }

// OnProductionError chooses what happens to an input record one of whose
// outputs the broker refuses for good (larger than the topic's
// max.message.bytes, an invalid record): with DeadLetterOnError the input
// record goes to its source's dead-letter sink instead of being processed,
// and the task goes on; with FailOnError (the default) the task fails with
// an error naming the record. Either way no other partition waits for it.
// An output of a punctuator or of a dead letter that is refused always
// fails the task.
func (b *Builder) OnProductionError(a ErrorAction) { b.onProd = a }

// Connect gives a processor access to stores declared with AddStore.
func (b *Builder) Connect(processor string, stores ...string) {
	b.connections[processor] = append(b.connections[processor], stores...)
}

// AddError records a problem found while adding to the builder, for Build
// to report together with every other; nil is ignored. Packages that add
// nodes on the user's behalf (ready processors, the DSL) call it for
// invalid options instead of returning an error of their own, so that one
// Build names every mistake at once. Name the node or store at fault in
// err.
func (b *Builder) AddError(err error) {
	if err != nil {
		b.errs = append(b.errs, err)
	}
}

// Build validates the topology: unique names, known parents and stores,
// matching record types on every edge, no cycle, sinks with a parent and a
// topic, and a dead-letter sink for every source when errors go to one.
// Problems recorded while adding (with AddError, or missing serdes) are
// all reported together; the shape is checked once there are none.
func (b *Builder) Build() (*Topology, error) {
	if len(b.errs) > 0 {
		return nil, errors.Join(b.errs...)
	}
	t, err := topo.Build(b.nodes, b.stores, b.connections, b.onDeser, b.onProc, b.onProd)
	if err != nil {
		return nil, err
	}
	return &Topology{t: t}, nil
}

// Topology is a validated topology, ready to run on Kafka or in the test
// driver. It is immutable and may be run by many tasks at once.
type Topology struct{ t *topo.Topology }

// Describe prints the topology's sub-topologies, nodes, connections and
// stores, in the manner of Kafka Streams' TopologyDescription. Changelog
// topics are named for applicationID.
func (t *Topology) Describe(applicationID string) string { return t.t.Describe(applicationID) }

func init() {
	topo.Of = func(t any) *topo.Topology { return t.(*Topology).t }
}

// Source declares a source node.
type Source[K, V any] struct {
	// Topics the source reads. Sources of one sub-topology must be
	// co-partitioned.
	Topics []string
	Keys   serde.Serde[K]
	Values serde.Serde[V]
	// Timestamp extracts a record's event time; nil uses the Kafka record
	// timestamp. An error, or a time before the epoch, is a deserialization
	// error with reason ReasonInvalidTimestamp.
	Timestamp func(rec Record[K, V]) (time.Time, error)
	// Trace, when tracing is on (Config.TracerProvider), is called with
	// each decoded record before the record's span starts, and says what
	// the record's content tells of its trace: see [RecordTrace]. Default
	// none: the span follows the record's traceparent header alone. A
	// panic in it is ignored.
	Trace func(rec Record[K, V]) RecordTrace
}

// AddSource adds a source node reading src.Topics.
func AddSource[K, V any](b *Builder, name string, src Source[K, V]) {
	if src.Keys == nil || src.Values == nil {
		b.AddError(fmt.Errorf("source %q needs key and value serdes", name))
		return
	}
	b.nodes = append(b.nodes, &sourceNode[K, V]{name: name, spec: src})
}

// AddProcessor adds a processor node; supplier is called once per task.
func AddProcessor[KIn, VIn, KOut, VOut any](b *Builder, name string, supplier func() Processor[KIn, VIn, KOut, VOut], parents ...string) {
	b.nodes = append(b.nodes, &processorNode[KIn, VIn, KOut, VOut]{name: name, parents: parents, supplier: supplier})
}

// Sink declares a sink node.
type Sink[K, V any] struct {
	Topic  string
	Keys   serde.Serde[K]
	Values serde.Serde[V]
	// Partitioner picks the partition of each record; nil hashes the
	// serialized key as Kafka's default partitioner does.
	Partitioner func(key K, value V, numPartitions int32) int32
}

// AddSink adds a sink node writing to sink.Topic.
func AddSink[K, V any](b *Builder, name string, sink Sink[K, V], parents ...string) {
	if sink.Keys == nil || sink.Values == nil {
		b.AddError(fmt.Errorf("sink %q needs key and value serdes", name))
		return
	}
	b.nodes = append(b.nodes, &sinkNode[K, V]{name: name, parents: parents, spec: sink})
}

// AddDeadLetterSink adds a sink for records that failed: the original key
// and value bytes with headers naming the error and the source position.
// Its parents are the sources and processors whose failures it receives.
func AddDeadLetterSink(b *Builder, name, topic string, parents ...string) {
	b.nodes = append(b.nodes, &deadLetterNode{name: name, topic: topic, parents: parents})
}

// Store declares a key-value state store.
type Store[K, V any] struct {
	Name   string
	Keys   serde.Serde[K]
	Values serde.Serde[V]
	// Persistent keeps the store on disk (Pebble) under the task's state
	// directory, so a restart restores only what its checkpoint lacks.
	// Otherwise it lives in memory and is rebuilt from the changelog.
	Persistent bool
	// DisableChangelog stops logging the store to its changelog topic; such
	// a store is not restored after a crash or a move to another instance.
	DisableChangelog bool
	// TTL makes entries expire TTL of stream time after they were written.
	TTL time.Duration
	// Expiring allows per-entry expiry with PutExpiring without a default
	// TTL.
	Expiring bool
}

// AddStore declares a key-value store and connects it to processors.
func AddStore[K, V any](b *Builder, s Store[K, V], processors ...string) {
	if s.Keys == nil || s.Values == nil {
		b.AddError(fmt.Errorf("store %q needs key and value serdes", s.Name))
		return
	}
	b.stores = append(b.stores, &topo.StoreSpec{
		Name:       s.Name,
		Persistent: s.Persistent,
		Logged:     !s.DisableChangelog,
		Options:    engine.Options{TTL: s.TTL, Expiring: s.Expiring},
		Keys:       s.Keys,
		Values:     s.Values,
		KeyType:    reflect.TypeFor[K](),
		ValueType:  reflect.TypeFor[V](),
		Processors: processors,
	})
}

// AddGlobalStore declares a global store fed by topic and connects it to
// processors, which read it: every instance of the application holds all
// partitions of topic in it, each record's key and value bytes as they are
// (a record with a null value deletes its key), so s.Keys and s.Values
// must be the topic's serdes. The runtime reads topic to its end,
// read_committed, before any task processes a record, and keeps applying
// new records while running; topic, usually compacted, is the store's
// changelog, so it has none of its own (s.TTL and s.DisableChangelog do
// not apply). The store lives in memory and is read from the start of
// topic at every start; with s.Persistent it lives on disk (Pebble, under
// StateDir/ApplicationID/global) with a checkpoint per partition of topic,
// so a restart reads only the records topic gained since (a store whose
// checkpoints are missing, corrupt or past the topic's end is rebuilt from
// the start). A processor reading it sees the updates applied so far,
// which, unlike a task's own stores, are not part of its transactions.
// Writes fail with ErrReadOnlyStore. The topic must not also be read by a
// source.
func AddGlobalStore[K, V any](b *Builder, s Store[K, V], topic string, processors ...string) {
	if s.Keys == nil || s.Values == nil {
		b.AddError(fmt.Errorf("global store %q needs key and value serdes", s.Name))
		return
	}
	if topic == "" {
		b.AddError(fmt.Errorf("global store %q needs a topic", s.Name))
		return
	}
	b.stores = append(b.stores, &topo.StoreSpec{
		Name:        s.Name,
		Keys:        s.Keys,
		Values:      s.Values,
		KeyType:     reflect.TypeFor[K](),
		ValueType:   reflect.TypeFor[V](),
		Persistent:  s.Persistent,
		Processors:  processors,
		GlobalTopic: topic,
	})
}

// ErrReadOnlyStore is returned by the writes of a store processors may
// only read: a global store (AddGlobalStore).
var ErrReadOnlyStore = errors.New("exactly: the store is read-only")

// readOnlyStore refuses writes.
type readOnlyStore[K, V any] struct{ store.KeyValueStore[K, V] }

func (s readOnlyStore[K, V]) Put(K, V) error {
	return fmt.Errorf("store %q: %w", s.Name(), ErrReadOnlyStore)
}
func (s readOnlyStore[K, V]) PutExpiring(K, V, time.Time) error {
	return fmt.Errorf("store %q: %w", s.Name(), ErrReadOnlyStore)
}
func (s readOnlyStore[K, V]) Delete(K) error {
	return fmt.Errorf("store %q: %w", s.Name(), ErrReadOnlyStore)
}
func (s readOnlyStore[K, V]) SweepExpired() (int, error) {
	return 0, fmt.Errorf("store %q: %w", s.Name(), ErrReadOnlyStore)
}

// GetKeyValueStore returns the typed store called name, which must be
// connected to the processor whose context ctx is and declared with key type
// K and value type V.
func GetKeyValueStore[K, V any, KOut, VOut any](ctx ProcessorContext[KOut, VOut], name string) (store.KeyValueStore[K, V], error) {
	raw, spec, err := ctx.rawStore(name)
	if err != nil {
		return nil, err
	}
	keys, ok := spec.Keys.(serde.Serde[K])
	if !ok {
		return nil, fmt.Errorf("store %q holds keys of type %s, not %s", name, spec.KeyType, reflect.TypeFor[K]())
	}
	values, ok := spec.Values.(serde.Serde[V])
	if !ok {
		return nil, fmt.Errorf("store %q holds values of type %s, not %s", name, spec.ValueType, reflect.TypeFor[V]())
	}
	typed := engine.Typed(raw, keys, values)
	if spec.GlobalTopic != "" {
		return readOnlyStore[K, V]{typed}, nil
	}
	return typed, nil
}
