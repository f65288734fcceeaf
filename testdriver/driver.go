// Package testdriver runs a topology without a broker, deterministically, in
// the caller's goroutine: pipe records into input topics, advance the wall
// clock, read committed output topics and stores, commit, and simulate a
// crash and a restart. It drives the same task core as the Kafka runner and
// models the broker the core relies on: records become visible only when
// their commit happens, together with their changelog records and input
// offsets, and a crash loses everything since the last commit.
//
// By default every piped record is processed and committed at once, and
// so is whatever that commit makes visible to the topology's own sources
// (repartition and other intermediate topics). With Config.ManualCommit a
// Commit makes one hop's records visible and processes them, and the next
// Commit commits their results; Drain commits until every hop is idle.
//
// A global store (exactly.AddGlobalStore) is read from its topic at every
// start, before any task processes a record (a persistent one too: what an
// instance holds after reading from its checkpoints is the same), and a
// record appended to its
// topic updates it at once, in order with the other records, outside any
// transaction, as an instance's global consumer does.
//
// Crash, CrashMidCommit and Restart model a killed process; RunWithCrashes
// runs a sequence of steps under a seeded schedule of them, so that a test
// can check that the committed output and stores equal those of an
// uninterrupted run. While the application is crashed, every call that
// needs it running returns ErrCrashed until Restart; the committed topics
// stay readable, as a broker's do.
package testdriver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/exactly-go/exactly"
	engine "github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/internal/tracing"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a Driver.
type Config struct {
	// ApplicationID names changelog topics; default "test".
	ApplicationID string
	// Partitions sets topics' partition counts. An unlisted topic has one,
	// except an internal topic (one the topology writes and reads: a
	// repartition topic, a foreign-key join's subscription and response
	// topics), which has as many as the Kafka runner would create: those of
	// the topics read beside it, or else those of what its writer reads.
	Partitions map[string]int32
	// ManualCommit turns off the default commit after every piped record
	// and every wall-clock advance; call Commit yourself.
	ManualCommit bool
	// WallClock is the initial wall-clock time; default the Unix epoch.
	WallClock time.Time
	// StateDir holds persistent stores; default a temporary directory that
	// Close removes.
	StateDir string
	// Subtopologies limits the driver to the sub-topologies with these IDs
	// (as Describe numbers them); nil runs them all. Records in topics that
	// only the others read stay there unprocessed, so each sub-topology can
	// be fed its own input, as a replay of a run on Kafka does with the
	// committed repartition topics.
	Subtopologies []int
	// PersistentInMemory keeps persistent stores in memory instead of
	// opening Pebble under StateDir. The memory outlives Crash as a disk
	// would, so a restart still restores each store from its checkpoint
	// and CrashMidCommit still leaves a store behind its changelog: only
	// the time Pebble takes to open at every restart is saved. Leave it
	// off where Pebble itself is under test.
	PersistentInMemory bool
	// DeadLetterMaxBytes bounds the key and value a dead letter carries; a
	// larger record is dead-lettered without its value, as the Kafka runner
	// does. 0 means the runner's bound (task.DefaultDeadLetterMaxBytes,
	// 900000 bytes); a negative value means no bound.
	DeadLetterMaxBytes int
	// TracerProvider traces as the Kafka runner does (exactly.Config's
	// TracerProvider): a span per processed record, its traceparent on
	// the record's outputs and dead letters, and a span per commit that
	// holds anything; default nil, which traces nothing. Give it an SDK
	// provider with an in-memory exporter (sdk/trace/tracetest) to test a
	// topology's traces without a broker.
	TracerProvider trace.TracerProvider
}

// Driver runs one topology. It is not safe for concurrent use.
type Driver struct {
	cfg    Config
	topo   *topo.Topology
	topics map[string]*topicLog
	// internal are the partition counts of unlisted internal topics.
	internal map[string]int32
	// partitioners place keyed records, per topic.
	partitioners map[string]kgo.TopicPartitioner
	tasks        map[topo.TaskID]*liveTask
	commits      map[topo.TaskID]*committed
	seq          int64
	wall         int64
	running      bool
	// failure is the error that crashed the application, if a task failed.
	failure error
	// scheduled is set while RunWithCrashes decides when commits happen.
	scheduled bool
	// disks hold each task's persistent stores under PersistentInMemory,
	// across crashes.
	disks map[topo.TaskID]*engine.Memory
	// globals hold the global stores, rebuilt from their topics at every
	// start; globalPos are the positions reached in those topics.
	globals   *engine.Memory
	globalTxn *engine.Txn
	globalKVs map[string]*engine.KV // by topic
	globalPos map[task.TopicPartition]int64
	stateDir  string
	tempDir   bool
	// tracer is nil unless Config.TracerProvider is set; uncommitted
	// counts the records processed since the last commit, for its span.
	tracer      trace.Tracer
	uncommitted int
}

// ErrCrashed is returned, wrapped, by every call that needs the
// application running (piping, committing, advancing the wall clock,
// reading stores) while it is crashed: after Crash or CrashMidCommit, or
// after an error failed a task, until Restart. The wrapping error names
// the task's error when there was one.
var ErrCrashed = errors.New("testdriver: the application is crashed; call Restart")

// checkRunning returns nil while the application runs, and an error
// wrapping ErrCrashed otherwise.
func (d *Driver) checkRunning() error {
	switch {
	case d.running:
		return nil
	case d.failure != nil:
		return fmt.Errorf("%w (it crashed on: %v)", ErrCrashed, d.failure)
	default:
		return ErrCrashed
	}
}

// autoCommit reports whether the driver commits after every record.
func (d *Driver) autoCommit() bool { return !d.cfg.ManualCommit && !d.scheduled }

type topicLog struct {
	partitions [][]*entry
	all        []*entry // in append order, for readers
}

type entry struct {
	raw topo.Raw
	seq int64
}

type liveTask struct {
	task *task.Task
	// pebble holds the task's persistent stores, unless they are in
	// memory (Config.PersistentInMemory).
	pebble *engine.Pebble
	// positions are indexes into each input partition's log of the next
	// record to process (equal to offsets unless PipeRaw left gaps).
	positions map[task.TopicPartition]int64
}

// committed is what the modelled broker keeps of a task across crashes:
// its committed input offsets and the stream time committed with them.
type committed struct {
	offsets    map[task.TopicPartition]int64
	streamTime int64
}

// New starts a driver for t; its tasks are created and initialized at once.
func New(t *exactly.Topology, cfg Config) (*Driver, error) {
	if cfg.ApplicationID == "" {
		cfg.ApplicationID = "test"
	}
	d := &Driver{
		cfg:          cfg,
		topo:         topo.Of(t),
		topics:       map[string]*topicLog{},
		partitioners: map[string]kgo.TopicPartitioner{},
		commits:      map[topo.TaskID]*committed{},
		disks:        map[topo.TaskID]*engine.Memory{},
		wall:         cfg.WallClock.UnixMilli(),
		tracer:       tracing.Tracer(cfg.TracerProvider),
	}
	if cfg.WallClock.IsZero() {
		d.wall = 0
	}
	d.internal = d.topo.InternalTopicPartitions(func(topic string) int32 {
		if n := cfg.Partitions[topic]; n > 0 {
			return n
		}
		return 1
	})
	d.stateDir = cfg.StateDir
	if d.stateDir == "" && !cfg.PersistentInMemory {
		dir, err := os.MkdirTemp("", "exactly-testdriver-")
		if err != nil {
			return nil, err
		}
		d.stateDir, d.tempDir = dir, true
	}
	if err := d.start(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Driver) partitionCount(topic string) int32 {
	if n, ok := d.cfg.Partitions[topic]; ok && n > 0 {
		return n
	}
	if n := d.internal[topic]; n > 0 {
		return n
	}
	return 1
}

func (d *Driver) topic(name string) *topicLog {
	tl, ok := d.topics[name]
	if !ok {
		tl = &topicLog{partitions: make([][]*entry, d.partitionCount(name))}
		d.topics[name] = tl
	}
	return tl
}

// appendRecord appends raw at the partition's next offset and returns it.
func (d *Driver) appendRecord(topic string, partition int32, raw topo.Raw) int64 {
	raw.Offset = 0
	if log := d.topic(topic).partitions[partition]; len(log) > 0 {
		raw.Offset = log[len(log)-1].raw.Offset + 1
	}
	d.appendAt(topic, partition, raw)
	return raw.Offset
}

// partitionFor picks a partition as Kafka's default partitioner does for
// keyed records; records without a key go to partition 0.
func (d *Driver) partitionFor(topic string, key []byte) int32 {
	n := d.partitionCount(topic)
	if n == 1 || key == nil {
		return 0
	}
	// One partitioner per topic: making one seeds a random source, which
	// costs more than processing a record.
	tp, ok := d.partitioners[topic]
	if !ok {
		tp = kgo.StickyKeyPartitioner(nil).ForTopic(topic)
		d.partitioners[topic] = tp
	}
	return int32(tp.Partition(&kgo.Record{Key: key}, int(n)))
}

// startGlobals reads every global store's topic to its end into a fresh
// backend, as an instance does before its tasks process anything.
func (d *Driver) startGlobals() error {
	d.globals = engine.NewMemory()
	d.globalTxn = engine.NewTxn(d.globals)
	d.globalKVs = map[string]*engine.KV{}
	d.globalPos = map[task.TopicPartition]int64{}
	for _, name := range d.topo.GlobalStores() {
		spec, _ := d.topo.Store(name)
		d.globalKVs[spec.GlobalTopic] = d.globalTxn.Open(name, spec.Options, func() int64 { return 0 })
		for p := range d.partitionCount(spec.GlobalTopic) {
			tp := task.TopicPartition{Topic: spec.GlobalTopic, Partition: p}
			d.globalPos[tp] = 0
			for _, e := range d.topic(tp.Topic).partitions[p] {
				if err := d.applyGlobal(&e.raw); err != nil {
					return err
				}
				d.globalPos[tp]++
			}
		}
	}
	return nil
}

// applyGlobal applies one record of a global store's topic.
func (d *Driver) applyGlobal(raw *topo.Raw) error {
	kv := d.globalKVs[raw.Topic]
	var err error
	if raw.Value == nil {
		err = kv.Delete(raw.Key)
	} else {
		err = kv.Put(raw.Key, raw.Value)
	}
	if err != nil {
		return err
	}
	return d.globalTxn.Commit(nil)
}

// start creates, restores and initializes every task.
func (d *Driver) start() error {
	if err := d.startGlobals(); err != nil {
		return err
	}
	d.tasks = map[topo.TaskID]*liveTask{}
	subs := d.topo.Subtopologies()
	for _, id := range d.cfg.Subtopologies {
		if id < 0 || id >= len(subs) {
			return fmt.Errorf("testdriver: Config.Subtopologies names sub-topology %d; the topology has %d (0 to %d)", id, len(subs), len(subs)-1)
		}
	}
	for _, sub := range subs {
		if d.cfg.Subtopologies != nil && !slices.Contains(d.cfg.Subtopologies, sub.ID) {
			continue
		}
		n := d.partitionCount(sub.SourceTopics[0])
		for _, topic := range sub.SourceTopics[1:] {
			if m := d.partitionCount(topic); m != n {
				return fmt.Errorf("sub-topology %d reads %s (%d partitions) and %s (%d partitions): sources of one sub-topology must be co-partitioned",
					sub.ID, sub.SourceTopics[0], n, topic, m)
			}
		}
		for _, name := range sub.Stores {
			tl := d.topic(topo.ChangelogTopic(d.cfg.ApplicationID, name))
			for int32(len(tl.partitions)) < n {
				tl.partitions = append(tl.partitions, nil)
			}
		}
		for p := int32(0); p < n; p++ {
			id := topo.TaskID{Subtopology: sub.ID, Partition: p}
			lt, err := d.startTask(id)
			if err != nil {
				return err
			}
			d.tasks[id] = lt
		}
	}
	d.running = true
	return d.pump()
}

func (d *Driver) startTask(id topo.TaskID) (*liveTask, error) {
	c := d.commits[id]
	if c == nil {
		c = &committed{offsets: map[task.TopicPartition]int64{}, streamTime: task.UnknownTime}
		d.commits[id] = c
	}
	lt := &liveTask{positions: map[task.TopicPartition]int64{}}
	deadLetterMax := d.cfg.DeadLetterMaxBytes
	switch {
	case deadLetterMax == 0:
		deadLetterMax = task.DefaultDeadLetterMaxBytes
	case deadLetterMax < 0:
		deadLetterMax = 0
	}
	cfg := task.Config{
		ApplicationID:      d.cfg.ApplicationID,
		ID:                 id,
		StreamTime:         c.streamTime,
		WallClock:          d.wall,
		DeadLetterMaxBytes: deadLetterMax,
		Tracer:             d.tracer,
		Globals:            d.globals,
		PartitionCount: func(topic string) (int32, error) {
			return d.partitionCount(topic), nil
		},
	}
	for _, name := range d.topo.Subtopologies()[id.Subtopology].Stores {
		if spec, _ := d.topo.Store(name); spec.Persistent && cfg.Persistent == nil {
			if d.cfg.PersistentInMemory {
				disk := d.disks[id]
				if disk == nil {
					disk = engine.NewMemory()
					d.disks[id] = disk
				}
				cfg.Persistent = disk
				continue
			}
			p, err := engine.OpenPebble(filepath.Join(d.stateDir, id.String()))
			if err != nil {
				return nil, err
			}
			lt.pebble, cfg.Persistent = p, p
		}
	}
	tk, err := task.New(d.topo, cfg)
	if err != nil {
		return nil, lt.close(err)
	}
	lt.task = tk
	for _, name := range tk.Stores() {
		if err := d.restore(lt, id, name); err != nil {
			return nil, lt.close(err)
		}
	}
	if err := tk.Initialize(); err != nil {
		return nil, lt.close(err)
	}
	for _, topic := range tk.SourceTopics() {
		tp := task.TopicPartition{Topic: topic, Partition: id.Partition}
		lt.positions[tp] = d.indexOf(tp, c.offsets[tp])
	}
	return lt, nil
}

func (lt *liveTask) close(err error) error {
	if lt.pebble != nil {
		lt.pebble.Close()
	}
	return err
}

// restore brings a store up to the end of its changelog partition, from its
// checkpoint when it has one.
func (d *Driver) restore(lt *liveTask, id topo.TaskID, name string) error {
	spec, _ := d.topo.Store(name)
	if !spec.Logged {
		return nil
	}
	from, ok, err := lt.task.Checkpoint(name)
	if err != nil {
		return err
	}
	if !ok {
		if err := lt.task.Wipe(name); err != nil {
			return err
		}
		from = 0
	}
	log := d.topic(topo.ChangelogTopic(d.cfg.ApplicationID, name)).partitions[id.Partition]
	if from >= int64(len(log)) {
		return nil
	}
	changes := make([]engine.Change, 0, int64(len(log))-from)
	for _, e := range log[from:] {
		changes = append(changes, engine.Change{Key: e.raw.Key, Value: e.raw.Value})
	}
	return lt.task.Restore(name, changes, int64(len(log)))
}

// pump processes every visible record not yet processed, oldest append
// first, committing after each one unless commits are manual.
func (d *Driver) pump() error {
	_, err := d.pumpCount()
	return err
}

// pumpCount is pump, returning how many records it processed.
func (d *Driver) pumpCount() (processed int, err error) {
	for d.running {
		var next *entry
		var owner *liveTask
		for _, lt := range d.tasks {
			for tp, pos := range lt.positions {
				log := d.topic(tp.Topic).partitions[tp.Partition]
				if pos < int64(len(log)) && (next == nil || log[pos].seq < next.seq) {
					next, owner = log[pos], lt
				}
			}
		}
		var global *task.TopicPartition
		for tp, pos := range d.globalPos {
			log := d.topic(tp.Topic).partitions[tp.Partition]
			if pos < int64(len(log)) && (next == nil || log[pos].seq < next.seq) {
				next, global = log[pos], &tp
			}
		}
		if next == nil {
			return processed, nil
		}
		if global != nil {
			// A global store's update applies at once, outside any task's
			// transaction, as an instance's global consumer applies it.
			d.globalPos[*global]++
			processed++
			if err := d.applyGlobal(&next.raw); err != nil {
				d.fail(err)
				return processed, err
			}
			continue
		}
		raw := next.raw
		owner.positions[task.TopicPartition{Topic: raw.Topic, Partition: raw.Partition}]++
		processed++
		d.uncommitted++
		if err := owner.task.Process(&raw); err != nil {
			d.fail(err)
			return processed, err
		}
		if d.autoCommit() {
			if err := d.commit(); err != nil {
				return processed, err
			}
		}
	}
	return processed, nil
}

// maxDrainCommits bounds Drain, so that a topology whose records flow in
// a loop through its own topics fails instead of draining forever.
const maxDrainCommits = 1000

// Drain commits, then processes and commits what each commit made visible
// to the topology's own sources (repartition and other intermediate
// topics), until no task has a record left to process: after one call the
// results of every piped record are committed, however many intermediate
// topics they passed through. Without ManualCommit each pipe drains by
// itself; with it, Commit moves records one hop and Drain moves them to
// the end. It fires no wall-clock punctuator.
func (d *Driver) Drain() error {
	if err := d.checkRunning(); err != nil {
		return err
	}
	for range maxDrainCommits {
		if err := d.commit(); err != nil {
			return err
		}
		n, err := d.pumpCount()
		if err != nil || n == 0 {
			return err
		}
	}
	return fmt.Errorf("testdriver: Drain: records still flow after %d commits: does the topology write to a topic it reads, in a loop?", maxDrainCommits)
}

// Commit commits every task: outputs, changelog records and input offsets
// become visible together, and stores apply their buffered writes.
func (d *Driver) Commit() error {
	if err := d.checkRunning(); err != nil {
		return err
	}
	if err := d.commit(); err != nil {
		return err
	}
	return d.pump()
}

func (d *Driver) commit() error { return d.commitThen(true) }

// CrashMidCommit commits the current transaction (outputs, changelog
// records and offsets become visible) and crashes before any store applies
// its buffered writes: the moment that leaves a persistent store behind its
// changelog, for restore to catch up.
func (d *Driver) CrashMidCommit() error {
	if err := d.checkRunning(); err != nil {
		return err
	}
	if err := d.commitThen(false); err != nil {
		return err
	}
	d.Crash()
	return nil
}

func (d *Driver) commitThen(apply bool) (err error) {
	if span := d.traceCommit(); span != nil {
		defer func() { tracing.EndCommit(span, "", err) }()
	}
	d.uncommitted = 0
	for _, id := range slices.SortedFunc(maps.Keys(d.tasks), compareTaskIDs) {
		lt := d.tasks[id]
		c := lt.task.PrepareCommit()
		for _, out := range c.Outputs {
			p := out.Partition
			if p < 0 {
				p = d.partitionFor(out.Topic, out.Key)
			}
			d.appendRecord(out.Topic, p, topo.Raw{Key: out.Key, Value: out.Value, Headers: out.Headers, Timestamp: out.Timestamp})
		}
		checkpoints := map[string]int64{}
		for _, sc := range c.Changelogs {
			topic := topo.ChangelogTopic(d.cfg.ApplicationID, sc.Store)
			var last int64
			for _, ch := range sc.Changes {
				last = d.appendRecord(topic, id.Partition, topo.Raw{Key: ch.Key, Value: ch.Value, Timestamp: c.StreamTime})
			}
			checkpoints[sc.Store] = last + 1
		}
		cm := d.commits[id]
		for tp, next := range c.Offsets {
			cm.offsets[tp] = next
		}
		cm.streamTime = c.StreamTime
		if !apply {
			continue
		}
		if err := lt.task.CompleteCommit(checkpoints); err != nil {
			d.fail(err)
			return err
		}
	}
	return nil
}

// traceCommit starts the span of the commit about to happen, unless
// tracing is off or the commit holds nothing.
func (d *Driver) traceCommit() trace.Span {
	if d.tracer == nil {
		return nil
	}
	c := tracing.Commit{ApplicationID: d.cfg.ApplicationID, Records: d.uncommitted}
	for _, lt := range d.tasks {
		pc := lt.task.PrepareCommit()
		if pc.Empty() {
			continue
		}
		c.Tasks++
		c.Outputs += len(pc.Outputs)
		for _, sc := range pc.Changelogs {
			c.ChangelogRecords += len(sc.Changes)
		}
	}
	if c.Tasks == 0 {
		return nil
	}
	return tracing.StartCommit(context.Background(), d.tracer, c)
}

func compareTaskIDs(a, b topo.TaskID) int {
	if c := cmp.Compare(a.Subtopology, b.Subtopology); c != 0 {
		return c
	}
	return cmp.Compare(a.Partition, b.Partition)
}

// AdvanceWallClock moves the wall clock forward by by and fires the
// wall-clock punctuators that come due.
func (d *Driver) AdvanceWallClock(by time.Duration) error {
	if err := d.checkRunning(); err != nil {
		return err
	}
	d.wall += by.Milliseconds()
	for _, id := range slices.SortedFunc(maps.Keys(d.tasks), compareTaskIDs) {
		if err := d.tasks[id].task.AdvanceWallClock(d.wall); err != nil {
			d.fail(err)
			return err
		}
	}
	if d.autoCommit() {
		if err := d.commit(); err != nil {
			return err
		}
	}
	return d.pump()
}

// Crash stops the application the way a killed process stops: nothing since
// the last commit survives (no outputs, no store writes, no offsets), and
// processors are not closed. Until Restart, calls that need the
// application running return ErrCrashed. Crashing a crashed application
// does nothing.
func (d *Driver) Crash() {
	if !d.running {
		return
	}
	for _, lt := range d.tasks {
		lt.close(nil)
	}
	d.tasks = nil
	d.running = false
	d.failure = nil
	d.uncommitted = 0
}

// fail crashes the application because a task failed with err.
func (d *Driver) fail(err error) {
	d.Crash()
	d.failure = err
}

// Restart starts the application again after Crash: stores are rebuilt from
// their checkpoints and changelogs, stream time and input positions come
// from the last commit, and uncommitted input is processed again.
func (d *Driver) Restart() error {
	d.Crash()
	d.failure = nil
	return d.start()
}

// Close commits, closes every task and removes the temporary state
// directory.
func (d *Driver) Close() error {
	var errs []error
	if d.running {
		errs = append(errs, d.commit())
		for _, lt := range d.tasks {
			errs = append(errs, lt.task.Close(), lt.close(nil))
		}
		d.tasks = nil
		d.running = false
	}
	if d.tempDir {
		errs = append(errs, os.RemoveAll(d.stateDir))
	}
	return errors.Join(errs...)
}

// PipeBytes appends a raw record to topic, as any producer could, and
// processes it. Use it for input no serde would produce. While the
// application is crashed it appends nothing and returns ErrCrashed.
func (d *Driver) PipeBytes(topic string, key, value []byte, timestamp time.Time, headers ...exactly.Header) error {
	if err := d.checkRunning(); err != nil {
		return err
	}
	d.appendRecord(topic, d.partitionFor(topic, key), topo.Raw{Key: key, Value: value, Headers: headers, Timestamp: timestamp.UnixMilli()})
	return d.pump()
}
