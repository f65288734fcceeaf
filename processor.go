package exactly

import (
	"time"

	engine "github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
	"go.opentelemetry.io/otel/trace"
)

// Processor is a node that receives records of type Record[KIn, VIn] and may
// forward records of type Record[KOut, VOut]. One instance serves one task:
// its methods are never called concurrently. Keep state in state stores, not
// in fields: stores roll back with an aborted transaction, fields do not.
type Processor[KIn, VIn, KOut, VOut any] interface {
	// Init is called once before the first record, with the context the
	// processor uses to forward, get stores and schedule punctuators.
	Init(ctx ProcessorContext[KOut, VOut]) error
	// Process handles one record. An error (or a panic) is a processing
	// error: the record's effects are undone and the record fails the task
	// or goes to a dead-letter sink, as configured.
	Process(rec Record[KIn, VIn]) error
	// Close releases what Init acquired.
	Close() error
}

// Counter is what ProcessorContext.CountOnCommit advances, such as a
// prometheus.Counter.
type Counter interface{ Add(float64) }

// ProcessorContext is a processor's view of its task.
type ProcessorContext[KOut, VOut any] interface {
	// Forward sends rec to every child (dead-letter sinks excepted).
	Forward(rec Record[KOut, VOut])
	// ForwardTo sends rec to the named child only.
	ForwardTo(child string, rec Record[KOut, VOut])
	// DeadLetter sends a record's original bytes to the dead-letter sinks
	// among this processor's children.
	DeadLetter(dl DeadLetter) error
	// Schedule registers a punctuator; cancel it with the returned value.
	Schedule(interval time.Duration, typ PunctuationType, fn Punctuator) (Cancellable, error)
	// StreamTime is the task's stream time: the largest timestamp seen.
	StreamTime() time.Time
	// Source returns the input record being processed; false during a
	// punctuation.
	Source() (SourceRecord, bool)
	// TaskID names the task.
	TaskID() TaskID
	// ApplicationID is the application the task belongs to.
	ApplicationID() string
	// NodeName is the processor's name in the topology.
	NodeName() string
	// CountOnCommit adds n to c once the commit that holds the current
	// record (or punctuation) succeeds. If the record fails, the
	// transaction aborts or the instance crashes first, the amount is
	// dropped: c counts committed work only, never an attempt that is
	// redone. (A crash loses the process's counters anyway; the amounts
	// of the commit under way when it came are not counted again.) A
	// prometheus.Counter is a Counter.
	CountOnCommit(c Counter, n float64)
	// Span is the tracing span of the input record being processed
	// (Config.TracerProvider); it records nothing when tracing is off or
	// outside of a record. Add attributes or events to it, log its
	// SpanContext's ids, or start a child span with
	// trace.ContextWithSpan(ctx, Span()) around a call to another service.
	// The span ends when the record's processing does.
	Span() trace.Span

	rawStore(name string) (*engine.KV, *topo.StoreSpec, error)
}

// ProcessorFunc adapts a function to a stateless Processor.
type ProcessorFunc[KIn, VIn, KOut, VOut any] func(ctx ProcessorContext[KOut, VOut], rec Record[KIn, VIn]) error

// Supplier returns a supplier of processors that call f.
func (f ProcessorFunc[KIn, VIn, KOut, VOut]) Supplier() func() Processor[KIn, VIn, KOut, VOut] {
	return func() Processor[KIn, VIn, KOut, VOut] { return &funcProcessor[KIn, VIn, KOut, VOut]{f: f} }
}

type funcProcessor[KIn, VIn, KOut, VOut any] struct {
	f   ProcessorFunc[KIn, VIn, KOut, VOut]
	ctx ProcessorContext[KOut, VOut]
}

func (p *funcProcessor[KIn, VIn, KOut, VOut]) Init(ctx ProcessorContext[KOut, VOut]) error {
	p.ctx = ctx
	return nil
}
func (p *funcProcessor[KIn, VIn, KOut, VOut]) Process(rec Record[KIn, VIn]) error {
	return p.f(p.ctx, rec)
}
func (p *funcProcessor[KIn, VIn, KOut, VOut]) Close() error { return nil }
