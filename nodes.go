package exactly

import (
	"fmt"
	"reflect"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	engine "github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
)

// handler is the typed entry point of a node: parents call it with each
// record they forward. Failures are reported to the task's Runtime.
type handler[K, V any] func(rec Record[K, V])

// ---- source ----

type sourceNode[K, V any] struct {
	name string
	spec Source[K, V]
}

func (n *sourceNode[K, V]) Name() string      { return n.name }
func (n *sourceNode[K, V]) Kind() topo.Kind   { return topo.KindSource }
func (n *sourceNode[K, V]) Parents() []string { return nil }
func (n *sourceNode[K, V]) Topics() []string  { return n.spec.Topics }
func (n *sourceNode[K, V]) InTypes() (reflect.Type, reflect.Type) {
	return nil, nil
}
func (n *sourceNode[K, V]) OutTypes() (reflect.Type, reflect.Type) {
	return reflect.TypeFor[K](), reflect.TypeFor[V]()
}

func (n *sourceNode[K, V]) Instantiate(rt topo.Runtime, children []topo.Child) (topo.Instance, error) {
	fw, err := newForwarder[K, V](rt, n.name, children)
	if err != nil {
		return nil, err
	}
	return &sourceInstance[K, V]{node: n, rt: rt, fw: fw}, nil
}

type sourceInstance[K, V any] struct {
	node    *sourceNode[K, V]
	rt      topo.Runtime
	fw      *forwarder[K, V]
	decoded Record[K, V]
}

func (s *sourceInstance[K, V]) Handler() any { return nil }
func (s *sourceInstance[K, V]) Init() error  { return nil }
func (s *sourceInstance[K, V]) Close() error { return nil }

func (s *sourceInstance[K, V]) Decode(raw *topo.Raw) (int64, error) {
	var rec Record[K, V]
	var err error
	if rec.Key, err = s.node.spec.Keys.Deserialize(raw.Key); err != nil {
		return 0, &topo.DecodeError{Reason: ReasonDeserialization, Err: fmt.Errorf("key: %w", err)}
	}
	if rec.Value, err = s.node.spec.Values.Deserialize(raw.Value); err != nil {
		return 0, &topo.DecodeError{Reason: ReasonDeserialization, Err: fmt.Errorf("value: %w", err)}
	}
	rec.Headers = raw.Headers
	rec.Timestamp = time.UnixMilli(raw.Timestamp)
	if s.node.spec.Timestamp != nil {
		ts, err := s.node.spec.Timestamp(rec)
		if err != nil {
			return 0, &topo.DecodeError{Reason: ReasonInvalidTimestamp, Err: err}
		}
		rec.Timestamp = ts
	}
	ms := rec.Timestamp.UnixMilli()
	if ms < 0 {
		return 0, &topo.DecodeError{Reason: ReasonInvalidTimestamp, Err: fmt.Errorf("timestamp %d is before the epoch", ms)}
	}
	s.decoded = rec
	return ms, nil
}

func (s *sourceInstance[K, V]) Trace() (trace.TraceID, []attribute.KeyValue) {
	if s.node.spec.Trace == nil {
		return trace.TraceID{}, nil
	}
	rt := s.node.spec.Trace(s.decoded)
	return rt.TraceID, rt.Attributes
}

func (s *sourceInstance[K, V]) Deliver() {
	rec := s.decoded
	s.decoded = Record[K, V]{}
	s.fw.forward(rec)
}

// ---- processor ----

type processorNode[KIn, VIn, KOut, VOut any] struct {
	name     string
	parents  []string
	supplier func() Processor[KIn, VIn, KOut, VOut]
}

func (n *processorNode[KIn, VIn, KOut, VOut]) Name() string      { return n.name }
func (n *processorNode[KIn, VIn, KOut, VOut]) Kind() topo.Kind   { return topo.KindProcessor }
func (n *processorNode[KIn, VIn, KOut, VOut]) Parents() []string { return n.parents }
func (n *processorNode[KIn, VIn, KOut, VOut]) Topics() []string  { return nil }
func (n *processorNode[KIn, VIn, KOut, VOut]) InTypes() (reflect.Type, reflect.Type) {
	return reflect.TypeFor[KIn](), reflect.TypeFor[VIn]()
}
func (n *processorNode[KIn, VIn, KOut, VOut]) OutTypes() (reflect.Type, reflect.Type) {
	return reflect.TypeFor[KOut](), reflect.TypeFor[VOut]()
}

func (n *processorNode[KIn, VIn, KOut, VOut]) Instantiate(rt topo.Runtime, children []topo.Child) (topo.Instance, error) {
	fw, err := newForwarder[KOut, VOut](rt, n.name, children)
	if err != nil {
		return nil, err
	}
	proc := n.supplier()
	if proc == nil {
		return nil, fmt.Errorf("processor %q: supplier returned nil", n.name)
	}
	inst := &processorInstance[KIn, VIn, KOut, VOut]{
		proc: proc,
		ctx:  &processorContext[KOut, VOut]{rt: rt, name: n.name, fw: fw},
	}
	inst.handle = func(rec Record[KIn, VIn]) {
		if rt.Failed() {
			return
		}
		if err := proc.Process(rec); err != nil {
			rt.Fail(n.name, err)
		}
	}
	return inst, nil
}

type processorInstance[KIn, VIn, KOut, VOut any] struct {
	proc   Processor[KIn, VIn, KOut, VOut]
	ctx    *processorContext[KOut, VOut]
	handle handler[KIn, VIn]
}

func (p *processorInstance[KIn, VIn, KOut, VOut]) Handler() any { return p.handle }
func (p *processorInstance[KIn, VIn, KOut, VOut]) Init() error {
	if err := p.proc.Init(p.ctx); err != nil {
		return fmt.Errorf("init processor %q: %w", p.ctx.name, err)
	}
	return nil
}
func (p *processorInstance[KIn, VIn, KOut, VOut]) Close() error { return p.proc.Close() }

// ---- forwarding ----

type forwarder[K, V any] struct {
	rt       topo.Runtime
	node     string
	names    []string
	children []handler[K, V]
}

func newForwarder[K, V any](rt topo.Runtime, node string, children []topo.Child) (*forwarder[K, V], error) {
	fw := &forwarder[K, V]{rt: rt, node: node}
	for _, c := range children {
		if c.Kind == topo.KindDeadLetterSink {
			continue
		}
		h, ok := c.Instance.Handler().(handler[K, V])
		if !ok {
			return nil, fmt.Errorf("node %q cannot forward Record[%v, %v] to child %q, which takes %T", node, reflect.TypeFor[K](), reflect.TypeFor[V](), c.Name, c.Instance.Handler())
		}
		fw.children = append(fw.children, h)
		fw.names = append(fw.names, c.Name)
	}
	return fw, nil
}

func (f *forwarder[K, V]) stamp(rec *Record[K, V]) {
	if rec.Timestamp.IsZero() {
		rec.Timestamp = time.UnixMilli(f.rt.RecordTime())
	}
}

func (f *forwarder[K, V]) forward(rec Record[K, V]) {
	f.stamp(&rec)
	for _, h := range f.children {
		if f.rt.Failed() {
			return
		}
		h(rec)
	}
}

func (f *forwarder[K, V]) forwardTo(child string, rec Record[K, V]) {
	f.stamp(&rec)
	for i, name := range f.names {
		if name == child {
			f.children[i](rec)
			return
		}
	}
	f.rt.Fail(f.node, fmt.Errorf("processor %q has no child %q (children: %v)", f.node, child, f.names))
}

type processorContext[KOut, VOut any] struct {
	rt   topo.Runtime
	name string
	fw   *forwarder[KOut, VOut]
}

func (c *processorContext[KOut, VOut]) Forward(rec Record[KOut, VOut]) {
	if !c.rt.Failed() {
		c.fw.forward(rec)
	}
}

func (c *processorContext[KOut, VOut]) ForwardTo(child string, rec Record[KOut, VOut]) {
	if !c.rt.Failed() {
		c.fw.forwardTo(child, rec)
	}
}

func (c *processorContext[KOut, VOut]) DeadLetter(dl DeadLetter) error {
	rec := topo.DeadLetterRecord{Reason: dl.Reason, Message: dl.Message}
	if dl.Source != nil {
		rec.Source = dl.Source.raw()
	}
	return c.rt.DeadLetter(c.name, rec)
}

func (c *processorContext[KOut, VOut]) Schedule(interval time.Duration, typ PunctuationType, fn Punctuator) (Cancellable, error) {
	return c.rt.Schedule(c.name, interval, typ, func(ts int64) error { return fn(time.UnixMilli(ts)) })
}

func (c *processorContext[KOut, VOut]) StreamTime() time.Time {
	st := c.rt.StreamTime()
	if st < 0 {
		return time.Time{}
	}
	return time.UnixMilli(st)
}

func (c *processorContext[KOut, VOut]) Source() (SourceRecord, bool) {
	raw := c.rt.Source()
	if raw == nil {
		return SourceRecord{}, false
	}
	return sourceRecordOf(raw), true
}

func (c *processorContext[KOut, VOut]) TaskID() TaskID        { return c.rt.TaskID() }
func (c *processorContext[KOut, VOut]) ApplicationID() string { return c.rt.ApplicationID() }
func (c *processorContext[KOut, VOut]) NodeName() string      { return c.name }
func (c *processorContext[KOut, VOut]) Span() trace.Span      { return c.rt.Span() }
func (c *processorContext[KOut, VOut]) CountOnCommit(to Counter, n float64) {
	c.rt.CountOnCommit(to, n)
}
func (c *processorContext[KOut, VOut]) rawStore(name string) (*engine.KV, *topo.StoreSpec, error) {
	return c.rt.Store(c.name, name)
}

// ---- sinks ----

type sinkNode[K, V any] struct {
	name    string
	parents []string
	spec    Sink[K, V]
}

func (n *sinkNode[K, V]) Name() string      { return n.name }
func (n *sinkNode[K, V]) Kind() topo.Kind   { return topo.KindSink }
func (n *sinkNode[K, V]) Parents() []string { return n.parents }
func (n *sinkNode[K, V]) Topics() []string  { return []string{n.spec.Topic} }
func (n *sinkNode[K, V]) InTypes() (reflect.Type, reflect.Type) {
	return reflect.TypeFor[K](), reflect.TypeFor[V]()
}
func (n *sinkNode[K, V]) OutTypes() (reflect.Type, reflect.Type) { return nil, nil }

func (n *sinkNode[K, V]) Instantiate(rt topo.Runtime, _ []topo.Child) (topo.Instance, error) {
	s := &sinkInstance[K, V]{}
	s.handle = func(rec Record[K, V]) {
		if rt.Failed() {
			return
		}
		kb, err := n.spec.Keys.Serialize(rec.Key)
		if err != nil {
			rt.Fail(n.name, fmt.Errorf("sink %q: serialize key: %w", n.name, err))
			return
		}
		vb, err := n.spec.Values.Serialize(rec.Value)
		if err != nil {
			rt.Fail(n.name, fmt.Errorf("sink %q: serialize value: %w", n.name, err))
			return
		}
		partition := int32(-1)
		if n.spec.Partitioner != nil {
			count, err := rt.PartitionCount(n.spec.Topic)
			if err != nil {
				rt.Fail(n.name, fmt.Errorf("sink %q: %w", n.name, err))
				return
			}
			partition = n.spec.Partitioner(rec.Key, rec.Value, count)
			if partition < 0 || partition >= count {
				rt.Fail(n.name, fmt.Errorf("sink %q: partitioner chose partition %d of %d", n.name, partition, count))
				return
			}
		}
		rt.Emit(topo.Output{
			Topic: n.spec.Topic, Partition: partition,
			Key: kb, Value: vb, Headers: rec.Headers, Timestamp: rec.Timestamp.UnixMilli(),
		})
	}
	return s, nil
}

type sinkInstance[K, V any] struct {
	handle handler[K, V]
}

func (s *sinkInstance[K, V]) Handler() any { return s.handle }
func (s *sinkInstance[K, V]) Init() error  { return nil }
func (s *sinkInstance[K, V]) Close() error { return nil }

type deadLetterNode struct {
	name, topic string
	parents     []string
}

func (n *deadLetterNode) Name() string                           { return n.name }
func (n *deadLetterNode) Kind() topo.Kind                        { return topo.KindDeadLetterSink }
func (n *deadLetterNode) Parents() []string                      { return n.parents }
func (n *deadLetterNode) Topics() []string                       { return []string{n.topic} }
func (n *deadLetterNode) InTypes() (reflect.Type, reflect.Type)  { return nil, nil }
func (n *deadLetterNode) OutTypes() (reflect.Type, reflect.Type) { return nil, nil }
func (n *deadLetterNode) Instantiate(topo.Runtime, []topo.Child) (topo.Instance, error) {
	return &deadLetterInstance{topic: n.topic}, nil
}

type deadLetterInstance struct{ topic string }

func (d *deadLetterInstance) Handler() any { return nil }
func (d *deadLetterInstance) Init() error  { return nil }
func (d *deadLetterInstance) Close() error { return nil }
