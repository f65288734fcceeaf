// Package task is the deterministic core of the runtime: one task processes
// the records of one partition of a sub-topology through its nodes, keeps
// stream time, fires punctuators, buffers store writes and output records,
// and hands everything that must become durable together to whoever commits
// it. It does no I/O, starts no goroutine and reads no clock: the Kafka
// runner, the test driver and the benchmarks all drive the same Task.
//
// # The driver's duties
//
// Whoever drives a Task owns its I/O, and the guarantees of the runtime
// rest on doing it in this order. The Task checks little of it.
//
//  1. New instantiates the nodes of one partition of a sub-topology over
//     the task's backends. Config.StreamTime is the stream time recorded
//     with the committed input offsets (UnknownTime if there are none).
//  2. Bring every logged store (Stores) up to its changelog before any
//     record is processed: read its Checkpoint; with none (or one past the
//     changelog's end) Wipe the store and start from offset 0; read the
//     changelog read_committed from there to its end and hand the records
//     to Restore with the offset after the last.
//  3. Initialize, which calls every processor's Init; Init may read the
//     restored stores.
//  4. Process each record of the task's input partitions, in offset order
//     from the committed offsets, and call AdvanceWallClock as the wall
//     clock passes, all from one goroutine. A *RecordError from Process or
//     a *PunctuatorError from AdvanceWallClock leaves the task failed: go
//     to step 7.
//  5. PrepareCommit returns the outputs, changelog records and next input
//     offsets since the last commit (outputs may be taken earlier with
//     TakeOutputs, to send them inside the open transaction). Make all of
//     it durable together: one Kafka transaction under exactly-once;
//     acknowledged outputs and changelog records, then the offset commit,
//     under at-least-once.
//  6. Only once that is durable, CompleteCommit with each store's
//     checkpoint, the changelog offset after the last record written for
//     it: the buffered store writes reach the backends then, in one batch
//     with the checkpoints. Go on at step 4.
//  7. When a commit fails or its outcome is unknown, or the task failed,
//     Abort: the task forgets every store write, output, offset, stream
//     time advance and punctuator change since the last commit. Deliver
//     input again from the committed offsets (step 4). Report an output
//     the broker refused for good with Refuse before that, so that its
//     input record is dead-lettered or fails the task instead of being
//     retried forever.
//  8. Close, which calls every processor's Close, after the last commit or
//     Abort: it applies nothing. Then close the backends.
//
// A crash at any step leaves each backend at or behind its checkpoint, never
// ahead of its changelog: step 2 of the next New catches it up.
//
// With Config.Tracer set, each processed record gets a span (package
// tracing), and every output and dead letter of the record carries the
// span's traceparent. Spans read the clock, but nothing the task decides
// depends on them; without a Tracer the task does nothing of it.
package task

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/internal/tracing"
	"github.com/exactly-go/exactly/internal/wire"
	"go.opentelemetry.io/otel/trace"
)

// UnknownTime is the stream time of a task that has seen no record.
const UnknownTime = math.MinInt64

// DefaultDeadLetterMaxBytes is the bound on a dead letter's key and value
// the Kafka runner uses: it leaves room for headers under the producer's
// default batch limit (1 MB), so a dead letter is never refused as too
// large. The test driver uses the same bound so that it dead-letters alike.
const DefaultDeadLetterMaxBytes = 900_000

// Config is what a task needs from its environment.
type Config struct {
	ApplicationID string
	ID            topo.TaskID
	// Memory holds the task's in-memory stores; nil creates one.
	Memory store.Backend
	// Persistent holds the task's persistent stores; required when the
	// sub-topology has one.
	Persistent store.Backend
	// PartitionCount reports a topic's partition count, for sinks with a
	// custom partitioner.
	PartitionCount func(topic string) (int32, error)
	// StreamTime is the stream time recorded with the last committed offsets
	// (UnknownTime if none), so that a restarted task resumes where the
	// committed one stood.
	StreamTime int64
	// WallClock is the wall-clock time at creation, in epoch ms.
	WallClock int64
	// DeadLetterMaxBytes bounds the key and value a dead letter carries;
	// a larger record is dead-lettered without its value (0: no bound).
	DeadLetterMaxBytes int
	// Tracer, when set, traces each record (tracing.StartRecord) and
	// writes its span's traceparent on the record's outputs and dead
	// letters; nil traces nothing.
	Tracer trace.Tracer
	// Globals holds the global stores (topo.StoreSpec.GlobalTopic), which
	// the task only reads and never commits; required when a processor of
	// the sub-topology reads one. Whoever drives the task keeps it current.
	// PersistentGlobals holds the persistent ones, when there are any; nil
	// means Globals holds them too.
	Globals, PersistentGlobals store.Backend
}

// TopicPartition names an input partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// StoreChanges are the changelog records of one store in one commit.
type StoreChanges struct {
	Store   string
	Changes []store.Change
}

// Commit is everything a task produced since its last commit that must
// become durable atomically: output records, changelog records and the next
// offsets of the input partitions, with the stream time they lead to.
type Commit struct {
	Outputs    []topo.Output
	Changelogs []StoreChanges
	Offsets    map[TopicPartition]int64
	StreamTime int64
}

// Empty reports whether the commit carries nothing new.
func (c *Commit) Empty() bool {
	return len(c.Outputs) == 0 && len(c.Changelogs) == 0 && len(c.Offsets) == 0
}

// RecordError is a record the task could not process and was configured to
// fail on. The task stays failed until Abort.
type RecordError struct {
	Topic     string
	Partition int32
	Offset    int64
	Node      string
	Reason    string
	Err       error
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("record %s/%d@%d failed in %q (%s): %v", e.Topic, e.Partition, e.Offset, e.Node, e.Reason, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }

// PunctuatorError is a punctuator that returned an error or panicked. The
// task stays failed until Abort.
type PunctuatorError struct {
	Task topo.TaskID
	Node string
	Type topo.PunctuationType
	Time int64 // the punctuation's time, epoch ms
	Err  error
}

func (e *PunctuatorError) Error() string {
	return fmt.Sprintf("task %s: %s punctuator of %q at %d: %v", e.Task, e.Type, e.Node, e.Time, e.Err)
}

func (e *PunctuatorError) Unwrap() error { return e.Err }

// Task is one task. It is used by one goroutine at a time.
type Task struct {
	cfg  Config
	topo *topo.Topology
	sub  *topo.Subtopology

	order     []string // nodes, parents first
	instances map[string]topo.Instance
	sources   map[string]topo.SourceInstance // by topic
	sourceOf  map[string]string              // topic -> source node
	deadLets  map[string][]string            // node -> dead-letter topics among its children

	memory, persistent *store.Txn
	kvs                map[string]*store.KV
	counts             []pendingCount // CountOnCommit's amounts since the last commit
	countsMark         int            // len(counts) when the current record began

	streamTime int64
	recordTime int64
	wallClock  int64
	current    *topo.Raw
	span       trace.Span // of current, while tracing
	failure    *nodeFailure
	failed     error

	outputs []topo.Output
	// outputsHint is how many outputs the last released batch held: the
	// next batch starts with room for as many, instead of growing to it.
	outputsHint int
	offsets     map[TopicPartition]int64
	// refused holds input records with an output the broker refused for
	// good; they are not processed again (OnProductionError).
	refused     map[TopicPartition]map[int64]error
	punctuating bool
	schedules   []*schedule
	// wallClockNodes are the nodes that ever scheduled a wall-clock
	// punctuator, in order of first scheduling; kept across Abort.
	wallClockNodes []string

	committed snapshot
}

type nodeFailure struct {
	node string
	err  error
}

type schedule struct {
	node      string
	interval  int64
	typ       topo.PunctuationType
	fn        func(int64) error
	next      int64
	cancelled bool
}

func (s *schedule) Cancel() { s.cancelled = true }

type snapshot struct {
	streamTime int64
	offsets    map[TopicPartition]int64
	schedules  []schedule
}

// New instantiates the nodes of sub-topology id.Subtopology for one
// partition and opens its stores. Call Checkpoint/Restore/Wipe to bring the
// stores up to date, then Initialize before processing.
func New(t *topo.Topology, cfg Config) (*Task, error) {
	subs := t.Subtopologies()
	if cfg.ID.Subtopology < 0 || cfg.ID.Subtopology >= len(subs) {
		return nil, fmt.Errorf("task %s: no such sub-topology", cfg.ID)
	}
	if cfg.Memory == nil {
		cfg.Memory = store.NewMemory()
	}
	if cfg.PartitionCount == nil {
		cfg.PartitionCount = func(topic string) (int32, error) {
			return 0, fmt.Errorf("partition count of %q is unknown", topic)
		}
	}
	tk := &Task{
		cfg:        cfg,
		topo:       t,
		sub:        subs[cfg.ID.Subtopology],
		instances:  map[string]topo.Instance{},
		sources:    map[string]topo.SourceInstance{},
		sourceOf:   map[string]string{},
		deadLets:   map[string][]string{},
		kvs:        map[string]*store.KV{},
		streamTime: cfg.StreamTime,
		wallClock:  cfg.WallClock,
		offsets:    map[TopicPartition]int64{},
		memory:     store.NewTxn(cfg.Memory),
	}
	if cfg.Persistent != nil {
		tk.persistent = store.NewTxn(cfg.Persistent)
	}
	now := func() int64 { return tk.streamTime }
	for _, name := range tk.sub.Stores {
		spec, _ := t.Store(name)
		txn := tk.memory
		if spec.Persistent {
			if tk.persistent == nil {
				return nil, fmt.Errorf("task %s: store %q is persistent but the task has no persistent backend", cfg.ID, name)
			}
			txn = tk.persistent
		}
		tk.kvs[name] = txn.Open(name, spec.Options, now)
	}
	globals := map[store.Backend]*store.Txn{} // read only: never committed
	for _, name := range t.GlobalStores() {
		spec, _ := t.Store(name)
		if !slices.ContainsFunc(spec.Processors, func(p string) bool { return slices.Contains(tk.sub.Nodes, p) }) {
			continue
		}
		backend := cfg.Globals
		if spec.Persistent && cfg.PersistentGlobals != nil {
			backend = cfg.PersistentGlobals
		}
		if backend == nil {
			return nil, fmt.Errorf("task %s: global store %q is read but the task has no global stores", cfg.ID, name)
		}
		if globals[backend] == nil {
			globals[backend] = store.NewTxn(backend)
		}
		kv := globals[backend].Open(name, spec.Options, now)
		kv.DisableValueCache() // the driver updates it behind the task
		tk.kvs[name] = kv
	}
	tk.order = tk.sub.Nodes
	for i := len(tk.order) - 1; i >= 0; i-- {
		name := tk.order[i]
		node, _ := t.Node(name)
		var children []topo.Child
		for _, c := range t.Children(name) {
			cn, _ := t.Node(c)
			children = append(children, topo.Child{Name: c, Kind: cn.Kind(), Instance: tk.instances[c]})
			if cn.Kind() == topo.KindDeadLetterSink {
				tk.deadLets[name] = append(tk.deadLets[name], cn.Topics()[0])
			}
		}
		inst, err := node.Instantiate(tk, children)
		if err != nil {
			return nil, fmt.Errorf("task %s: %w", cfg.ID, err)
		}
		tk.instances[name] = inst
		if node.Kind() == topo.KindSource {
			for _, topic := range node.Topics() {
				tk.sources[topic] = inst.(topo.SourceInstance)
				tk.sourceOf[topic] = name
			}
		}
	}
	return tk, nil
}

// ID returns the task's id.
func (t *Task) ID() topo.TaskID { return t.cfg.ID }

// SourceTopics returns the topics the task reads.
func (t *Task) SourceTopics() []string { return t.sub.SourceTopics }

// Initialize calls every processor's Init, parents first. Stores must be
// restored before: Init may read them.
func (t *Task) Initialize() error {
	for _, name := range t.order {
		if err := t.guard(name, t.instances[name].Init); err != nil {
			return fmt.Errorf("task %s: %w", t.cfg.ID, err)
		}
	}
	t.takeSnapshot()
	return nil
}

// Close calls every processor's Close. Buffered writes are neither applied
// nor logged: commit or abort first.
func (t *Task) Close() error {
	var errs []error
	for _, name := range t.order {
		if err := t.guard(name, t.instances[name].Close); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// guard runs f, turning a panic into an error naming node.
func (t *Task) guard(node string, f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("node %q panicked: %v\n%s", node, p, debug.Stack())
		}
	}()
	return f()
}

// Process runs one input record through the topology. A record that fails
// is dead-lettered or fails the task, as the topology is configured; in both
// cases its partial effects are undone first. A *RecordError means the task
// is failed and must be aborted.
func (t *Task) Process(raw *topo.Raw) error {
	if t.failed != nil {
		return t.failed
	}
	src, ok := t.sources[raw.Topic]
	if !ok {
		return fmt.Errorf("task %s does not read topic %q", t.cfg.ID, raw.Topic)
	}
	t.current = raw
	defer func() {
		t.current = nil
		if t.span != nil {
			t.span.End()
			t.span = nil
		}
	}()
	tp := TopicPartition{raw.Topic, raw.Partition}
	if cause := t.refused[tp][raw.Offset]; cause != nil {
		if t.cfg.Tracer != nil {
			t.startSpan(raw, nil)
		}
		if err := t.handleFailure(t.topo.OnProductionError, t.sourceOf[raw.Topic], wire.ReasonProduction, cause); err != nil {
			return err
		}
		t.offsets[tp] = raw.Offset + 1
		return nil
	}

	var ts int64
	err := t.guard(t.sourceOf[raw.Topic], func() (err error) { ts, err = src.Decode(raw); return err })
	if t.cfg.Tracer != nil {
		decoded := src
		if err != nil {
			decoded = nil // nothing decoded to ask
		}
		t.startSpan(raw, decoded)
	}
	if err != nil {
		reason := topo.DecodeErrorReason(err)
		if err := t.handleFailure(t.topo.OnDeserializationError, t.sourceOf[raw.Topic], reason, err); err != nil {
			return err
		}
		t.offsets[tp] = raw.Offset + 1
		return nil
	}

	mark, prevStreamTime := len(t.outputs), t.streamTime
	t.beginRecord()
	t.streamTime = max(t.streamTime, ts)
	t.recordTime = ts
	t.failure = nil
	if err := t.guard(t.sourceOf[raw.Topic], func() error { src.Deliver(); return nil }); err != nil && t.failure == nil {
		t.failure = &nodeFailure{node: t.sourceOf[raw.Topic], err: err}
	}
	if f := t.failure; f != nil {
		t.failure = nil
		t.endRecord(false)
		t.outputs = t.outputs[:mark]
		t.streamTime = prevStreamTime
		if err := t.handleFailure(t.topo.OnProcessingError, f.node, wire.ReasonProcessing, f.err); err != nil {
			return err
		}
	} else {
		t.endRecord(true)
	}
	t.offsets[tp] = raw.Offset + 1
	if t.streamTime > prevStreamTime {
		return t.punctuate(topo.StreamTime, t.streamTime)
	}
	return nil
}

func (t *Task) beginRecord() {
	t.countsMark = len(t.counts)
	t.memory.BeginRecord()
	if t.persistent != nil {
		t.persistent.BeginRecord()
	}
}

func (t *Task) endRecord(keep bool) {
	if !keep {
		t.counts = t.counts[:t.countsMark]
	}
	t.memory.EndRecord(keep)
	if t.persistent != nil {
		t.persistent.EndRecord(keep)
	}
}

// startSpan starts the span of raw; src, when not nil, has decoded raw
// and may say more of its trace.
func (t *Task) startSpan(raw *topo.Raw, src topo.SourceInstance) {
	r := tracing.RecordSpan{ApplicationID: t.cfg.ApplicationID, Task: t.cfg.ID, Raw: raw}
	if src != nil {
		_ = t.guard(t.sourceOf[raw.Topic], func() error {
			r.Hint.TraceID, r.Hint.Attributes = src.Trace()
			return nil
		})
	}
	t.span = tracing.StartRecord(t.cfg.Tracer, r)
}

// handleFailure dead-letters the current record or fails the task.
func (t *Task) handleFailure(action topo.ErrorAction, node, reason string, cause error) error {
	raw := t.current
	fail := func(err error) error {
		t.failed = &RecordError{Topic: raw.Topic, Partition: raw.Partition, Offset: raw.Offset, Node: node, Reason: reason, Err: err}
		if t.span != nil {
			tracing.RecordFailed(t.span, reason, false, t.failed)
		}
		return t.failed
	}
	if action != topo.DeadLetter {
		return fail(cause)
	}
	topics := t.deadLets[node]
	if len(topics) == 0 {
		topics = t.deadLets[t.sourceOf[raw.Topic]]
	}
	if len(topics) == 0 {
		return fail(fmt.Errorf("%w (and no dead-letter sink is connected to %q or its source)", cause, node))
	}
	if t.span != nil {
		tracing.RecordFailed(t.span, reason, true, cause)
	}
	t.emitDeadLetters(topics, topo.DeadLetterRecord{Reason: reason, Message: cause.Error(), Source: raw})
	return nil
}

func (t *Task) emitDeadLetters(topics []string, rec topo.DeadLetterRecord) {
	src := rec.Source
	value := src.Value
	if limit := t.cfg.DeadLetterMaxBytes; limit > 0 && len(src.Key)+len(src.Value) > limit {
		// A record larger than a producer may send would be refused and
		// block the partition; it is dead-lettered without its value.
		rec.Message += fmt.Sprintf(" (value of %d bytes dropped from the dead letter: over %d bytes)", len(src.Value), limit)
		value = nil
	}
	headers := make([]topo.Header, 0, len(src.Headers)+5)
	headers = append(headers, src.Headers...)
	headers = append(headers,
		topo.Header{Key: wire.HeaderErrorReason, Value: []byte(rec.Reason)},
		topo.Header{Key: wire.HeaderErrorMessage, Value: []byte(rec.Message)},
		topo.Header{Key: wire.HeaderSourceTopic, Value: []byte(src.Topic)},
		topo.Header{Key: wire.HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(src.Partition), 10)},
		topo.Header{Key: wire.HeaderSourceOffset, Value: strconv.AppendInt(nil, src.Offset, 10)},
	)
	if t.span != nil && src == t.current {
		headers = tracing.Stamp(headers, src.Headers, t.span.SpanContext())
	}
	for _, topic := range topics {
		t.outputs = append(t.outputs, topo.Output{
			Topic: topic, Partition: -1, Key: src.Key, Value: value,
			Headers: headers, Timestamp: src.Timestamp,
		})
	}
}

// AdvanceWallClock moves the task's wall clock to now (epoch ms) and fires
// the wall-clock punctuators that are due.
func (t *Task) AdvanceWallClock(now int64) error {
	if t.failed != nil {
		return t.failed
	}
	if now <= t.wallClock {
		return nil
	}
	t.wallClock = now
	return t.punctuate(topo.WallClockTime, now)
}

// punctuate fires every due punctuator of type typ once, at now.
func (t *Task) punctuate(typ topo.PunctuationType, now int64) error {
	t.punctuating = true
	defer func() { t.punctuating = false }()
	for i := 0; i < len(t.schedules); i++ {
		s := t.schedules[i]
		if s.cancelled || s.typ != typ || s.next > now {
			continue
		}
		s.next = nextTick(now, s.interval)
		t.recordTime = now
		t.failure = nil
		err := t.guard(s.node, func() error { return s.fn(now) })
		if err == nil && t.failure != nil {
			err = t.failure.err
		}
		t.failure = nil
		if err != nil {
			t.failed = &PunctuatorError{Task: t.cfg.ID, Node: s.node, Type: typ, Time: now, Err: err}
			return t.failed
		}
	}
	return nil
}

// nextTick is the first multiple of interval after now.
func nextTick(now, interval int64) int64 {
	if now < 0 {
		return interval
	}
	return (now/interval + 1) * interval
}

// PrepareCommit returns what must be made durable in one transaction. The
// task keeps it until CompleteCommit or Abort.
func (t *Task) PrepareCommit() *Commit {
	c := &Commit{Outputs: t.outputs, StreamTime: t.streamTime, Offsets: map[TopicPartition]int64{}}
	for tp, next := range t.offsets {
		if t.committed.offsets[tp] != next {
			c.Offsets[tp] = next
		}
	}
	for _, name := range t.sub.Stores {
		spec, _ := t.topo.Store(name)
		if !spec.Logged {
			continue
		}
		if changes := t.txnOf(name).Changes(name); len(changes) > 0 {
			c.Changelogs = append(c.Changelogs, StoreChanges{Store: name, Changes: changes})
		}
	}
	return c
}

// TakeOutputs hands over the output records produced so far, so they can be
// sent before the commit (inside the open transaction under exactly-once).
// They still belong to the current commit: if it aborts, the caller must
// make sure they are discarded too (an aborted transaction does).
func (t *Task) TakeOutputs() []topo.Output {
	out := t.outputs
	t.releaseOutputs()
	return out
}

// releaseOutputs lets go of the outputs, remembering how many there were.
func (t *Task) releaseOutputs() {
	if len(t.outputs) > 0 {
		t.outputsHint = len(t.outputs)
	}
	t.outputs = nil
}

// CompleteCommit is called once the commit from PrepareCommit is durable
// (the Kafka transaction committed, or the outputs were acknowledged). It
// applies the buffered store writes to the backends, each store with its
// checkpoint (the changelog offset after its last record), atomically.
func (t *Task) CompleteCommit(checkpoints map[string]int64) error {
	for _, txn := range []*store.Txn{t.memory, t.persistent} {
		if txn == nil {
			continue
		}
		mine := map[string]int64{}
		for name, off := range checkpoints {
			if t.txnOf(name) == txn {
				mine[name] = off
			}
		}
		if err := txn.Commit(mine); err != nil {
			return fmt.Errorf("task %s: %w", t.cfg.ID, err)
		}
	}
	t.releaseOutputs()
	for _, c := range t.counts {
		c.to.Add(c.n)
	}
	t.counts = t.counts[:0]
	t.takeSnapshot()
	for tp, offsets := range t.refused {
		for offset := range offsets {
			if offset < t.offsets[tp] {
				delete(offsets, offset) // committed past it: never delivered again
			}
		}
	}
	return nil
}

// Abort discards everything since the last commit: store writes, outputs,
// consumed offsets, stream-time advance and punctuator schedule changes. The
// caller re-delivers input from the committed offsets.
func (t *Task) Abort() {
	t.memory.Discard()
	if t.persistent != nil {
		t.persistent.Discard()
	}
	t.outputs = nil
	t.counts = t.counts[:0]
	t.failed, t.failure = nil, nil
	t.streamTime = t.committed.streamTime
	t.offsets = cloneOffsets(t.committed.offsets)
	t.schedules = t.schedules[:len(t.committed.schedules)]
	for i := range t.schedules {
		*t.schedules[i] = t.committed.schedules[i]
	}
}

func (t *Task) takeSnapshot() {
	t.committed.streamTime = t.streamTime
	t.committed.offsets = cloneOffsets(t.offsets)
	t.committed.schedules = t.committed.schedules[:0]
	for _, s := range t.schedules {
		t.committed.schedules = append(t.committed.schedules, *s)
	}
}

func cloneOffsets(m map[TopicPartition]int64) map[TopicPartition]int64 {
	out := make(map[TopicPartition]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// WallClockPunctuators returns the nodes that have scheduled a wall-clock
// punctuator since the task was created, cancelled or not, in the order
// they first did. Their effects depend on when the wall clock ticked, so
// the task's output is not a function of its input alone.
func (t *Task) WallClockPunctuators() []string { return slices.Clone(t.wallClockNodes) }

// StreamTime returns the task's stream time (UnknownTime before any record).
func (t *Task) StreamTime() int64 { return t.streamTime }

// Stores returns the names of the task's stores.
func (t *Task) Stores() []string { return t.sub.Stores }

// KV returns the task's store called name.
func (t *Task) KV(name string) (*store.KV, bool) {
	kv, ok := t.kvs[name]
	return kv, ok
}

func (t *Task) txnOf(name string) *store.Txn {
	spec, _ := t.topo.Store(name)
	if spec.Persistent {
		return t.persistent
	}
	return t.memory
}

// Checkpoint returns the committed changelog offset of a store.
func (t *Task) Checkpoint(name string) (int64, bool, error) { return t.txnOf(name).Checkpoint(name) }

// Restore applies changelog records to a store's backend with the
// checkpoint next.
func (t *Task) Restore(name string, changes []store.Change, next int64) error {
	return t.txnOf(name).Restore(name, changes, next)
}

// Wipe empties a store so it can be restored from offset 0.
func (t *Task) Wipe(name string) error { return t.txnOf(name).Wipe(name) }

// ---- topo.Runtime ----

// ApplicationID implements topo.Runtime.
func (t *Task) ApplicationID() string { return t.cfg.ApplicationID }

// TaskID implements topo.Runtime.
func (t *Task) TaskID() topo.TaskID { return t.cfg.ID }

// RecordTime implements topo.Runtime.
func (t *Task) RecordTime() int64 { return t.recordTime }

// Source implements topo.Runtime.
func (t *Task) Source() *topo.Raw { return t.current }

// Fail implements topo.Runtime.
func (t *Task) Fail(node string, err error) {
	if t.failure == nil {
		t.failure = &nodeFailure{node: node, err: err}
	}
}

// Failed implements topo.Runtime.
func (t *Task) Failed() bool { return t.failure != nil }

// Emit implements topo.Runtime.
func (t *Task) Emit(out topo.Output) {
	if t.current != nil && !t.punctuating {
		out.SourceTopic, out.SourcePartition, out.SourceOffset = t.current.Topic, t.current.Partition, t.current.Offset
		if t.span != nil {
			out.Headers = tracing.Stamp(out.Headers, t.current.Headers, t.span.SpanContext())
		}
	}
	if t.outputs == nil && t.outputsHint > 0 {
		t.outputs = make([]topo.Output, 0, t.outputsHint)
	}
	t.outputs = append(t.outputs, out)
}

// noSpan is the span of a task that traces nothing: it records nothing.
var noSpan = trace.SpanFromContext(context.Background())

// Span implements topo.Runtime.
func (t *Task) Span() trace.Span {
	if t.span == nil {
		return noSpan
	}
	return t.span
}

// Refuse records that an output of the input record at tp/offset was
// refused for good by the broker (cause says why). The caller aborts the
// commit; when the record is delivered again it is not processed: it is
// dead-lettered or fails the task, as OnProductionError says.
func (t *Task) Refuse(tp TopicPartition, offset int64, cause error) {
	if t.refused == nil {
		t.refused = map[TopicPartition]map[int64]error{}
	}
	if t.refused[tp] == nil {
		t.refused[tp] = map[int64]error{}
	}
	t.refused[tp][offset] = cause
}

// DeadLetter implements topo.Runtime.
func (t *Task) DeadLetter(node string, rec topo.DeadLetterRecord) error {
	topics := t.deadLets[node]
	if len(topics) == 0 {
		return fmt.Errorf("node %q has no dead-letter sink among its children", node)
	}
	if rec.Source == nil {
		if t.current == nil {
			return fmt.Errorf("node %q: dead letter outside of a record needs its source record", node)
		}
		rec.Source = t.current
	}
	if rec.Reason == "" {
		rec.Reason = wire.ReasonProcessing
	}
	if t.span != nil && rec.Source == t.current {
		tracing.RecordFailed(t.span, rec.Reason, true, errors.New(rec.Message))
	}
	t.emitDeadLetters(topics, rec)
	return nil
}

// Store implements topo.Runtime.
func (t *Task) Store(node, name string) (*store.KV, *topo.StoreSpec, error) {
	spec, ok := t.topo.Store(name)
	if !ok {
		return nil, nil, fmt.Errorf("processor %q asked for unknown store %q", node, name)
	}
	if !slices.Contains(spec.Processors, node) {
		return nil, nil, fmt.Errorf("store %q is not connected to processor %q: connect it when building the topology", name, node)
	}
	return t.kvs[name], spec, nil
}

// Schedule implements topo.Runtime.
func (t *Task) Schedule(node string, interval time.Duration, typ topo.PunctuationType, fn func(int64) error) (topo.Cancellable, error) {
	ms := interval.Milliseconds()
	if ms < 1 {
		return nil, fmt.Errorf("processor %q: punctuation interval %v is below 1ms", node, interval)
	}
	s := &schedule{node: node, interval: ms, typ: typ, fn: fn}
	if typ == topo.StreamTime {
		s.next = nextTick(t.streamTime, ms)
	} else {
		s.next = nextTick(t.wallClock, ms)
		if !slices.Contains(t.wallClockNodes, node) {
			t.wallClockNodes = append(t.wallClockNodes, node)
		}
	}
	t.schedules = append(t.schedules, s)
	return s, nil
}

// CountOnCommit implements topo.Runtime.
func (t *Task) CountOnCommit(c topo.Adder, n float64) {
	t.counts = append(t.counts, pendingCount{to: c, n: n})
}

// pendingCount is an amount CountOnCommit holds until the commit.
type pendingCount struct {
	to topo.Adder
	n  float64
}

// PartitionCount implements topo.Runtime.
func (t *Task) PartitionCount(topic string) (int32, error) { return t.cfg.PartitionCount(topic) }
