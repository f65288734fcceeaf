package exactly

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactly-go/exactly/internal/kafka"
)

// Config configures one instance of an application on Kafka. Brokers and
// ApplicationID are required; every other field has a default, given in its
// comment, that is chosen when the field is left zero. [New] checks the
// configuration and returns a *[ConfigError] naming what to change.
type Config struct {
	// Brokers are the seed brokers, as host:port. Required. The instance
	// learns the rest of the cluster from them. An instance started before
	// its brokers answer waits for them in Run, retrying with a backoff that
	// grows to 10s and logging a warning each attempt.
	Brokers []string

	// ApplicationID names the application. Required. It is the consumer
	// group id, the prefix of changelog topics
	// (ApplicationID-store-changelog) and of transactional ids, the default
	// ClientID, and the directory under StateDir that holds the stores.
	// Instances with the same ApplicationID share the work; changing it
	// starts the application afresh, with new changelogs and no committed
	// offsets.
	ApplicationID string

	// Guarantee is the processing guarantee; default [ExactlyOnceV2]. It
	// chooses the default CommitInterval.
	Guarantee Guarantee

	// CommitInterval is how often each worker commits what its tasks
	// processed; default 100ms under ExactlyOnceV2 and 30s under
	// AtLeastOnce, as in Kafka Streams. Under ExactlyOnceV2 it bounds how
	// long read_committed readers wait for outputs; a shorter interval
	// means more, smaller transactions. Under AtLeastOnce it bounds how much
	// input a crash repeats.
	CommitInterval time.Duration

	// StateDir is the directory under which persistent stores live, in
	// StateDir/ApplicationID; default exactly-state under the system
	// temporary directory. Run locks StateDir/ApplicationID: a second
	// instance of the same application on the same directory fails with
	// [ErrStateDirLocked], so give each instance its own. Keeping it across
	// restarts lets a persistent store restore only what its checkpoint
	// lacks instead of its whole changelog, and a persistent global store
	// read only what its topic gained.
	StateDir string

	// Workers is the number of consumer-group members this instance runs,
	// each with its own client, transactional producer (under
	// ExactlyOnceV2) and tasks; default 1. Raise it to process partitions
	// in parallel within one instance.
	Workers int

	// InstanceID turns on static membership (group.instance.id); default
	// none. Worker i joins as InstanceID-i, so a restarted instance gets its
	// partitions back without a rebalance if it returns within
	// SessionTimeout. It also makes the transactional ids stable, so that a
	// restarted instance fences its predecessor's open transactions at once
	// instead of after TransactionTimeout. Each instance needs its own.
	// See LeaveGroupOnClose.
	InstanceID string

	// ApplicationServer is the host:port at which this instance answers
	// interactive queries (Kafka Streams' application.server); default
	// none. It is advertised to the group at every join, so that after each
	// rebalance every instance knows every instance's address and tasks
	// without asking the brokers: [KeyMetadata] and *[NotLocalError] name the
	// instance holding a key. Without it this instance is not advertised,
	// and keys it holds cannot be routed to it. New refuses a value that is
	// not host:port with a *ConfigError.
	ApplicationServer string

	// StandbyReplicas is how many standby copies of each stateful task the
	// group keeps (Kafka Streams' num.standby.replicas); default 0. A
	// standby is a replica of a task's logged stores on another instance:
	// it reads the task's changelogs read_committed as they are written and
	// applies them with their checkpoint, as a restore does, but runs no
	// processor. When the task's instance fails or leaves, the group gives
	// the task to an instance holding a standby, which restores only the
	// records written since its standby's checkpoint instead of the whole
	// changelog: failover takes the time of that delta.
	//
	// The group's leader places the copies: never on the instance running
	// the task, never two on one instance, spread evenly over the
	// instances, and kept where they were across rebalances. With fewer
	// other instances than StandbyReplicas, a task has as many standbys as
	// there are other instances. The leader's value counts when instances
	// disagree.
	//
	// Each standby costs what its active copy costs in storage and in
	// reading the changelog: persistent stores live in the task's
	// directory under StateDir, which a restart keeps (a restarted
	// instance's standby resumes from its checkpoint); in-memory stores are
	// kept in memory, as much as the active holds, and are handed to the
	// active task when the standby's instance takes it over. Keep StateDir
	// across restarts for standbys of persistent stores to pay off. Tasks
	// without a logged store get no standby: they have nothing to restore.
	// New refuses a negative value with a *ConfigError.
	StandbyReplicas int

	// ClientID is the client id sent to the brokers, for their logs and
	// quotas; default ApplicationID.
	ClientID string

	// SASL, when set, authenticates every connection; default none. Combine
	// it with TLS for SASL_SSL.
	SASL *SASL

	// TLS, when set, makes every connection use TLS with this
	// configuration; default plaintext.
	TLS *tls.Config

	// SessionTimeout is how long the group waits for a silent member before
	// moving its partitions to others; default 45s. Workers heartbeat every
	// SessionTimeout/3 or every 3s, whichever is shorter. It must lie within the brokers'
	// group.min.session.timeout.ms and group.max.session.timeout.ms, or Run
	// returns a *ConfigError.
	SessionTimeout time.Duration

	// RebalanceTimeout is how long the group waits for every member to
	// rejoin during a rebalance; default 60s. It also bounds how long a task
	// moving between two workers of one instance waits for the worker it
	// left to close its store.
	RebalanceTimeout time.Duration

	// TransactionTimeout is how long the broker keeps a transaction of a
	// crashed instance open, holding back read_committed readers of its
	// topics, before aborting it; default 10s. Only ExactlyOnceV2 uses
	// transactions. It must not exceed the brokers'
	// transaction.max.timeout.ms.
	TransactionTimeout time.Duration

	// CreateTopics makes Run create missing output and dead-letter topics,
	// with OutputPartitions partitions; default false, and a missing one
	// stops Run with an error naming it. Changelog and repartition topics
	// are created whatever its value; topics the topology only reads never
	// are.
	CreateTopics bool

	// OutputPartitions is the partition count of the topics CreateTopics
	// creates; default the partition count of the sources of the
	// sub-topology that writes the topic.
	OutputPartitions int32

	// ReplicationFactor is the replication factor of every topic the
	// instance creates (changelogs, repartition topics, and outputs with
	// CreateTopics); default -1, the brokers' default.replication.factor.
	ReplicationFactor int16

	// LeaveGroupOnClose makes a static member (InstanceID set) leave the
	// group when it stops, so that its partitions move at once; default
	// false, and they wait SessionTimeout for the instance to come back,
	// which suits a rolling restart. Members without an InstanceID always
	// leave.
	LeaveGroupOnClose bool

	// MaxPollRecords bounds the records a worker processes between two
	// checks of the commit interval, so commits stay on time under a
	// backlog; default 10000.
	MaxPollRecords int

	// Logger receives the runtime's log: joins, restores, rebalances,
	// retries and the errors that stop an instance. The franz-go clients'
	// log reaches it one level lower than franz-go gives it (its warnings at
	// info, its request narration at debug), tagged client=franz-go.
	// Default: slog.Default(); pass slog.New(slog.DiscardHandler) to
	// silence it.
	Logger *slog.Logger

	// Registerer receives the runtime's metrics (named exactly_*); default
	// nil, which registers nowhere. Give each App its own registry (or a
	// prometheus.WrapRegistererWith of one): New returns a ConfigError if
	// the metrics are already registered there.
	Registerer prometheus.Registerer

	// ClientOptions are added to the options of every franz-go client the
	// instance creates, for what Config does not cover (a dialer, buffer
	// sizes, a request timeout); default none. An option that changes group
	// membership, isolation, offset commits or transactions breaks the
	// processing guarantee: leave those to the runtime.
	ClientOptions []kgo.Opt

	// OnFatalError chooses what the instance does when a worker fails in a
	// way that rejoining the group cannot cure: a record that fails under
	// FailOnError, a punctuator that fails, an output the broker refuses
	// that no input record answers for, a full disk. Default
	// [ShutdownInstance]. Failures that rejoining cures (a lost connection,
	// fencing, a rebalance) never reach it: the worker rejoins, with a
	// backoff that grows to 30s, and logs each time.
	OnFatalError FatalErrorAction

	// StallTimeout is how long a worker may hold processed records without
	// committing them before the instance reports itself unhealthy
	// ([App.Healthy] returns an error, exactly_stalled_workers counts the
	// worker) and restarts the worker with a new group membership; default
	// 60s. It is a safety net: every broker and disk call has a deadline of
	// its own.
	StallTimeout time.Duration

	// MaxWorkerReplacements bounds how many times [ReplaceWorker] starts a
	// failed worker again before the instance stops; default 3. Other
	// OnFatalError actions ignore it.
	MaxWorkerReplacements int

	// StateListener, if set, is told every change of the instance's
	// [State], in order; default none. It runs on the runtime's goroutines
	// and must not block.
	StateListener func(old, new State)

	// StoreBlockCacheSize is the size in bytes of the block cache that all
	// the persistent stores of the instance share: Pebble's cache of
	// uncompressed blocks read from disk, which serves reads missing the
	// memtable. Default 64 MiB. Its memory is taken as blocks are read;
	// raise it when the stores' working set exceeds it and reads go to
	// disk.
	StoreBlockCacheSize int64

	// StoreMemTableSize is the size in bytes of the memtable of each task's
	// persistent stores (one Pebble database per task), where writes gather
	// before Pebble flushes them to disk. Default 4 MiB, Pebble's. A larger
	// one absorbs more writes between flushes and restores faster, at that
	// much memory per task (twice while one is flushed).
	StoreMemTableSize int64

	// StoreSyncWrites makes every batch written to a persistent store (one
	// per task per commit, and one per restored chunk) durable with an
	// fsync before the commit goes on. Default false: a machine crash can
	// lose a store's last batches, which only leaves it behind its
	// checkpoint, and the next start restores them from the changelog, the
	// source of truth. Turn it on when a restart after a power loss must
	// restore little, at an fsync per commit per task.
	StoreSyncWrites bool

	// AllowUncompactedChangelogs makes Run log a warning, rather than
	// fail with a *ConfigError, when a changelog topic it finds existing
	// has a cleanup.policy without compact. Default false: a changelog that
	// the brokers delete by retention loses the keys not written lately,
	// and a store restored from it silently misses them. Changelogs the
	// runtime creates are always compacted.
	AllowUncompactedChangelogs bool

	// TracerProvider turns on OpenTelemetry tracing; default nil, which
	// traces nothing and costs nothing per record. With it, each processed
	// record gets a span, a child of the W3C traceparent header the record
	// carries, and every output and dead letter of the record carries that
	// span's traceparent, so a trace crosses the pipeline (see
	// [RecordTrace]). Each commit gets a span ("commit", with the tasks,
	// input records, outputs and changelog records it holds and its
	// result), and so does each task's restore ("restore", with the
	// records read). Spans of an aborted commit's records stay: they
	// record an attempt, and the records' next attempt has spans of its
	// own. Sampling and export are the provider's.
	TracerProvider trace.TracerProvider
}

// SASL holds the credentials of SASL authentication. The password is never
// logged.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; New refuses any
	// other with a *ConfigError.
	Mechanism string
	// User is the user name to authenticate as.
	User string
	// Password is the user's password.
	Password string
}

// String describes the credentials without the password, so that printing
// a SASL (with %v, %+v or %#v) never shows it.
func (s SASL) String() string {
	return fmt.Sprintf("SASL{Mechanism: %s, User: %s, Password: [redacted]}", s.Mechanism, s.User)
}

// GoString is String, for %#v.
func (s SASL) GoString() string { return s.String() }

// LogValue is the credentials as log/slog shows them: without the
// password.
func (s SASL) LogValue() slog.Value {
	return slog.GroupValue(slog.String("mechanism", s.Mechanism), slog.String("user", s.User), slog.String("password", "[redacted]"))
}

// runtimeConfig is c as the Kafka runtime takes it. It carries every field
// over (TestConfigCarriesEveryField checks that none is missed); defaults
// and validation are the runtime's. A field added to the runtime's
// configuration needs its documented counterpart in Config and a line here.
func (c Config) runtimeConfig() kafka.Config {
	rc := kafka.Config{
		Brokers:               c.Brokers,
		ApplicationID:         c.ApplicationID,
		Guarantee:             c.Guarantee,
		CommitInterval:        c.CommitInterval,
		StateDir:              c.StateDir,
		Workers:               c.Workers,
		InstanceID:            c.InstanceID,
		ApplicationServer:     c.ApplicationServer,
		StandbyReplicas:       c.StandbyReplicas,
		ClientID:              c.ClientID,
		TLS:                   c.TLS,
		SessionTimeout:        c.SessionTimeout,
		RebalanceTimeout:      c.RebalanceTimeout,
		TransactionTimeout:    c.TransactionTimeout,
		CreateTopics:          c.CreateTopics,
		OutputPartitions:      c.OutputPartitions,
		ReplicationFactor:     c.ReplicationFactor,
		LeaveGroupOnClose:     c.LeaveGroupOnClose,
		MaxPollRecords:        c.MaxPollRecords,
		Logger:                c.Logger,
		Registerer:            c.Registerer,
		ClientOptions:         c.ClientOptions,
		OnFatalError:          c.OnFatalError,
		StallTimeout:          c.StallTimeout,
		MaxWorkerReplacements: c.MaxWorkerReplacements,
		StateListener:         c.StateListener,

		StoreBlockCacheSize:        c.StoreBlockCacheSize,
		StoreMemTableSize:          c.StoreMemTableSize,
		StoreSyncWrites:            c.StoreSyncWrites,
		AllowUncompactedChangelogs: c.AllowUncompactedChangelogs,
		TracerProvider:             c.TracerProvider,
	}
	if c.SASL != nil {
		rc.SASL = &kafka.SASL{Mechanism: c.SASL.Mechanism, User: c.SASL.User, Password: c.SASL.Password}
	}
	return rc
}

// Guarantee is a processing guarantee: [ExactlyOnceV2] or [AtLeastOnce]
// (Kafka Streams' processing.guarantee, with the same names as strings).
type Guarantee = kafka.Guarantee

// The processing guarantees.
const (
	// ExactlyOnceV2 ("exactly_once_v2") commits each interval's outputs,
	// changelog records and input offsets in one Kafka transaction, fenced
	// through the consumer group (KIP-447), and reads input
	// read_committed. A crash, rebalance or zombie instance never
	// duplicates or loses a record's effects on Kafka.
	ExactlyOnceV2 = kafka.ExactlyOnceV2
	// AtLeastOnce ("at_least_once") produces outputs and changelog records,
	// waits for their acknowledgement, then commits input offsets. A crash
	// can repeat effects, never lose them.
	AtLeastOnce = kafka.AtLeastOnce
)

// FatalErrorAction is what an instance does when a worker fails in a way
// that rejoining the group cannot cure (Config.OnFatalError; Kafka Streams'
// uncaught-exception handler): [ShutdownInstance], [ReplaceWorker] or
// [ShutdownApplication].
type FatalErrorAction = kafka.FatalErrorAction

// The fatal-error actions.
const (
	// ShutdownInstance stops this instance: Run returns the error. The
	// other instances take its tasks over (and meet the same record, if a
	// record caused it).
	ShutdownInstance = kafka.ShutdownInstance
	// ReplaceWorker starts the failed worker again with a new group
	// membership, after a backoff that doubles from one second, at most
	// Config.MaxWorkerReplacements times; then the instance stops as with
	// ShutdownInstance. It suits failures that may pass (a punctuator
	// calling a service that is down); a record that fails every time fails
	// again.
	ReplaceWorker = kafka.ReplaceWorker
	// ShutdownApplication stops every instance of the application: this one
	// asks through the consumer group, the group's leader hands every member
	// the shutdown, and each Run returns an *[ApplicationShutdownError].
	ShutdownApplication = kafka.ShutdownApplication
)
