// Package exactly builds and runs stream-processing topologies on Kafka with
// exactly-once semantics: typed sources, processors and sinks, named state
// stores whose local copies never hold uncommitted data, stream-time and
// wall-clock punctuators, and dead-letter handling for records that cannot be
// processed.
//
// A topology is built with a [Builder]: [AddSource] reads topics,
// [AddProcessor] adds a [Processor] that handles each [Record] and forwards
// records to its children, [AddStore] declares a key-value store the
// processors it is connected to reach with [GetKeyValueStore], [AddSink]
// writes a topic and [AddDeadLetterSink] takes the records that failed.
// [Builder.Build] checks the whole graph at once (names, parents, stores,
// the record types on every edge, cycles) and returns a [Topology]. [New]
// runs it on Kafka as an [App]; the package
// [github.com/exactly-go/exactly/testdriver] runs it in a test, without a
// broker. The package [github.com/exactly-go/exactly/dsl] builds topologies
// from streams and tables, and the packages under processors are ready
// processors: deduplication, reordering, idempotent side effects.
//
// # Guarantees
//
// Under [ExactlyOnceV2], the default, each commit makes a task's output
// records, its store changes (written to each store's changelog topic) and
// its input offsets durable in one Kafka transaction. A reader of the
// output topics with read_committed isolation sees the effects of every
// input record exactly once, whatever crashes, rebalances and zombie
// instances happen: an instance that lost its partitions is fenced by the
// consumer group (KIP-447) and cannot commit.
//
// A store's local copy, in memory or on disk, only ever holds committed
// data. A task's writes go to a buffer that the task reads back at once and
// that reaches the store only after the transaction commits, together with
// the changelog offset the store is now current to (its checkpoint). An
// aborted transaction drops the buffer and the task processes the same
// input again; a restarted task catches its stores up from their
// checkpoints by reading their changelogs. Keep a processor's state in
// stores, not in its fields: fields do not roll back.
//
// Under [AtLeastOnce] outputs and changelog records are acknowledged
// before the input offsets are committed: a crash can repeat effects, never
// lose them.
//
// Within a task, which processes one partition of its source topics,
// records are processed one at a time in offset order: a processor's
// methods are never called concurrently. A record that fails (it cannot be
// deserialized, its processing returns an error or panics, the broker
// refuses an output for good) either stops the task with a *[RecordError]
// ([FailOnError], the default) or goes, as its original bytes with headers
// naming the cause and its position, to a dead-letter sink
// ([DeadLetterOnError]); its partial effects are undone either way.
//
// Calls outside Kafka (a payment service, a database) are not part of the
// transaction and may be repeated after an abort: make them idempotent, for
// instance with [github.com/exactly-go/exactly/processors/sideeffect], or
// write to PostgreSQL through [github.com/exactly-go/exactly/inbox] and
// [github.com/exactly-go/exactly/outbox].
//
// # Lifecycle
//
// [New] checks a [Config] and prepares an instance without contacting the
// cluster. [App.Run] locks the state directory, creates the changelog and
// repartition topics it needs, joins the consumer group, restores the stores
// of the tasks it is assigned, and processes until its context is cancelled
// or [App.Close] is called; then it commits what is pending and closes the
// stores. [App.Ready] is closed once the first assignment is restored.
// [App.State] follows Kafka Streams' states ([StateCreated],
// [StateRebalancing], [StateRunning], then [StateStopped] or [StateError])
// and Config.StateListener is told each change; [App.Healthy] suits a
// liveness probe. Run's error says why it stopped: [ErrStateDirLocked], a
// *[ConfigError], or a fatal failure handled as Config.OnFatalError says.
//
// Inside an instance, a processor's supplier is called once per task: the
// processor is initialised (Init) after the task's stores are restored,
// handles the task's records (Process) and its punctuators, and is closed
// (Close) when the task moves to another instance or the instance stops.
// After a crash or a move, a new processor for the same partition starts
// from the committed contents of the stores.
//
// # Testing
//
// The package [github.com/exactly-go/exactly/testdriver] runs a topology
// in the test's goroutine on the same task core as [App], with an
// in-memory model of the broker: records piped into input topics are
// processed at once, outputs, changelog records and input offsets become
// visible together when the driver commits, and a simulated crash loses
// everything since the last commit before the driver restarts the tasks
// from their changelogs. Tests of processors belong there; the runtime's
// own tests prove it keeps the same promises on a Kafka-protocol broker.
//
// # Scaling out
//
// Start more instances with the same Config.ApplicationID: the consumer
// group spreads the tasks over them and moves them when instances come and
// go. There is one task per partition of a sub-topology's source topics
// (sources of one sub-topology must be co-partitioned, and share tasks), so
// the partition count bounds the parallelism; Config.Workers runs several
// group members in one instance. Give each instance its own
// Config.StateDir, and with static membership (Config.InstanceID) its own
// id, so that a restarted instance gets its tasks back without a
// rebalance. With Config.StandbyReplicas, instances keep standby copies of
// each other's stores, and a failed instance's tasks move to the instances
// holding their copies, which restore only what the copies lack
// ([App.StandbyTasks] lists this instance's). [Query] reads a key from a store of this instance; for a key
// whose partition another instance holds it returns a *[NotLocalError] with
// that instance's Config.ApplicationServer, and [KeyMetadata] says which
// instance holds a key without reading it. The package
// [github.com/exactly-go/exactly/httpquery] serves the stores over HTTP
// from any instance, routing each key to the one that holds it.
// [Topology.Describe] shows the sub-topologies, and so which topics must be
// co-partitioned.
//
// # Operating an application
//
// Config.TLS and Config.SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) secure
// every connection; [SASL] never prints its password. Config.Registerer
// receives the runtime's metrics, named exactly_* and listed with their
// labels, types and units in the repository's METRICS.md, and
// [ProcessorContext.CountOnCommit] gives a processor counters that advance
// only with the commit of its work; deploy/prometheus and deploy/grafana
// hold alert rules and a dashboard over them. Config.Logger gets the
// runtime's log: each rebalance with the partitions it moved and the
// whole assignment after it, each aborted transaction with its cause, a
// stop step by step. Config.TracerProvider turns on OpenTelemetry spans
// of records, commits and restores, carried across topics by the W3C
// traceparent header ([RecordTrace], [Source].Trace). [App.Restores]
// reports restore progress. Builder.OnProductionError chooses what
// becomes of an input record whose output the broker refuses for good.
// Config.StoreBlockCacheSize, StoreMemTableSize and StoreSyncWrites tune
// the Pebble stores. The command exactly (cmd/exactly) runs the reference
// applications with all of this behind flags, and its reset command
// resets an application as Kafka Streams' application reset tool does.
package exactly
