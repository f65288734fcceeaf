// Package kafka is the I/O shell around the task core: it consumes with
// franz-go in a consumer group, feeds records to tasks, and makes each
// commit's outputs, changelog records and input offsets durable together,
// in one Kafka transaction under exactly_once_v2, or produce-then-commit
// under at_least_once. Store buffers reach their backends only afterwards.
//
// The rules beyond that, each with a test in the root package's
// protocol_test.go:
//
//  1. A transaction always carries the offsets of every task in it, so the
//     group coordinator checks the member's generation (KIP-447) even when
//     only a punctuator produced (commit.go).
//  2. A task starts from the committed offsets of its own partitions,
//     fetched stable, and restores each changelog read_committed up to the
//     high watermark listed after that, ending on the fetch position
//     (restore.go).
//  3. A commit whose outcome is unknown restarts the tasks from the group's
//     committed offsets and the changelogs; records below a task's
//     committed offset are never processed (commit.go, assignment.go).
//  4. A task directory is open once per process, wiped only when corrupt,
//     and kept open while readers use it (stores.go).
//  5. An output the broker refuses for good is answered by its input
//     record (dead letter or failure), never retried forever (commit.go).
//  6. Fatal errors follow Config.OnFatalError; every broker and disk wait
//     has a deadline; a worker holding work uncommitted past StallTimeout
//     is restarted and reported (lifecycle.go, runner.go).
//  7. A standby replica applies its task's changelogs as a restore does,
//     each batch with its checkpoint (changelog.go, standby.go), and a
//     task that becomes active where its standby lives takes the
//     standby's stores over; the group's leader never places a standby on
//     its active's process and gives an orphaned task to a standby holder
//     (placement.go).
//
// # Standby replicas and warm-up
//
// Kafka Streams' high-availability assignor moves a task onto an instance
// without its state only once a warm-up replica there has caught up: it
// keeps the task on a caught-up instance, places the warm-up, and probes
// with rebalances until the warm-up is ready (KIP-441). This runtime has
// no warm-up replicas. Its placement covers the case warm-ups exist for
// that matters for availability, failure: the standbys of a failed
// instance's tasks are caught up (each fetch is applied at once), and the
// leader hands each orphaned task to a standby's instance rather than
// where the cooperative-sticky balancer would put it, so the takeover
// restores only the records written since the standby's last fetch. The
// balancer's counts are kept where the standbys allow, and what is left
// uneven is evened out, cooperatively, at the next rebalance.
//
// The case it does not cover is a move for balance: an instance that joins
// (or one that had no standby of the task) receives tasks the balancer
// takes from live instances, and restores each one's whole changelog
// while the task pauses; a large store pays its full restore time then.
// Such moves happen when instances are added, a choice the operator
// makes; after a failure, only when no live instance holds the task's
// standby or the one that does would run more than one task over its even
// share.
// The instance a task moved away from is the first choice for its standby
// (its copy is the newest), so a move back, or a failover after it,
// restores only a delta.
package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
)

// Guarantee is a processing guarantee.
type Guarantee string

// The processing guarantees.
const (
	// ExactlyOnceV2: outputs, changelog records and input offsets of a
	// commit are written in one transaction (KIP-447); input is read
	// read_committed. A crash, rebalance or zombie never duplicates or loses
	// a record's effects.
	ExactlyOnceV2 Guarantee = "exactly_once_v2"
	// AtLeastOnce: outputs and changelog records are acknowledged before
	// input offsets are committed. A crash can repeat effects, never lose
	// them.
	AtLeastOnce Guarantee = "at_least_once"
)

// SASL holds SASL credentials. The password is never logged.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism string
	User      string
	Password  string
}

// String describes the credentials without the password.
func (s SASL) String() string {
	return fmt.Sprintf("SASL{Mechanism: %s, User: %s, Password: [redacted]}", s.Mechanism, s.User)
}

// Config is exactly.Config as the runtime takes it; the field comments
// there say each default and how the fields interact.
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// ApplicationID is the consumer group, the prefix of changelog topics
	// and of transactional ids. Instances with the same id share the work.
	ApplicationID string
	// Guarantee defaults to ExactlyOnceV2.
	Guarantee Guarantee
	// CommitInterval defaults to 100ms under ExactlyOnceV2 and 30s under
	// AtLeastOnce, as in Kafka Streams.
	CommitInterval time.Duration
	// StateDir holds persistent stores, under StateDir/ApplicationID; one
	// instance at a time may use it. Default: a directory under the system
	// temporary directory.
	StateDir string
	// Workers is the number of consumer-group members (each with its own
	// transactional producer) this instance runs; default 1.
	Workers int
	// InstanceID enables static membership (group.instance.id); worker i
	// uses InstanceID-i. It also makes transactional ids stable, so that a
	// restarted instance fences its predecessor's open transactions at once.
	InstanceID string
	// ApplicationServer is the host:port at which this instance answers
	// interactive queries (Kafka Streams' application.server). It is
	// advertised to the group at every join, and after each rebalance every
	// instance knows every instance's address and tasks without asking the
	// brokers: KeyMetadata and *NotLocalError name the instance holding a
	// key. Default "": this instance is not advertised, and keys it holds
	// cannot be routed to it.
	ApplicationServer string
	// StandbyReplicas is the number of standby copies the group keeps of
	// each task with a logged store, each on another instance than the
	// task's active copy (Kafka Streams' num.standby.replicas); default 0.
	StandbyReplicas int
	// ClientID is sent to the brokers; default ApplicationID.
	ClientID string
	SASL     *SASL
	TLS      *tls.Config
	// SessionTimeout and RebalanceTimeout of the group; defaults 45s, 60s.
	SessionTimeout   time.Duration
	RebalanceTimeout time.Duration
	// TransactionTimeout bounds how long a crashed instance's open
	// transaction blocks read_committed readers; default 10s.
	TransactionTimeout time.Duration
	// CreateTopics creates missing output and dead-letter topics with
	// OutputPartitions partitions (default: the source's count).
	CreateTopics     bool
	OutputPartitions int32
	// ReplicationFactor of created topics; default -1 (the broker default).
	ReplicationFactor int16
	// LeaveGroupOnClose makes a static member leave the group on Close, so
	// its partitions move at once instead of after the session timeout.
	LeaveGroupOnClose bool
	// MaxPollRecords bounds the records processed between two checks of the
	// commit interval; default 10000.
	MaxPollRecords int
	// Logger receives the runtime's log and franz-go's (one level lower);
	// nil logs to slog.Default(). Pass slog.New(slog.DiscardHandler) to
	// silence it.
	Logger *slog.Logger
	// Registerer receives the runtime's metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// ClientOptions are appended to every franz-go client's options.
	ClientOptions []kgo.Opt
	// OnFatalError chooses what the instance does when a worker fails in a
	// way rejoining the group cannot cure (see FatalErrorAction); default
	// ShutdownInstance. Failures that rejoining cures (a lost connection,
	// fencing, a rebalance) never reach it: the worker rejoins, with a
	// backoff that grows to 30s, and logs each time.
	OnFatalError FatalErrorAction
	// StallTimeout is how long a worker may hold processed work without
	// committing it before the instance reports itself unhealthy (Healthy
	// returns an error, exactly_stalled_workers counts it) and the worker is
	// restarted with a new group membership; default 60s. It is a safety
	// net: every broker and disk call has a deadline of its own.
	StallTimeout time.Duration
	// MaxWorkerReplacements bounds ReplaceWorker; default 3.
	MaxWorkerReplacements int
	// StateListener, if set, is told every change of the instance's state,
	// in order. It runs on the runtime's goroutines and must not block.
	StateListener func(old, new State)
	// StoreBlockCacheSize is the size in bytes of the block cache all the
	// instance's persistent stores share; default 64 MiB.
	StoreBlockCacheSize int64
	// StoreMemTableSize is the memtable size in bytes of each task's
	// persistent stores; default 4 MiB.
	StoreMemTableSize int64
	// StoreSyncWrites fsyncs every batch written to a persistent store;
	// default false.
	StoreSyncWrites bool
	// AllowUncompactedChangelogs makes a changelog topic found without
	// cleanup.policy=compact a warning rather than an error; default false.
	AllowUncompactedChangelogs bool
	// TracerProvider turns on tracing: spans of records, commits and
	// restores, and traceparent headers on outputs; nil traces nothing.
	TracerProvider trace.TracerProvider
}

// DefaultStoreBlockCacheSize is the default of StoreBlockCacheSize.
const DefaultStoreBlockCacheSize = 64 << 20

// DefaultStoreMemTableSize is the default of StoreMemTableSize, Pebble's.
const DefaultStoreMemTableSize = 4 << 20

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if len(out.Brokers) == 0 {
		return out, errors.New("config: no brokers: set Brokers to host:port of at least one broker")
	}
	if out.ApplicationID == "" {
		return out, errors.New("config: ApplicationID is required: it names the consumer group and changelog topics")
	}
	switch out.Guarantee {
	case "":
		out.Guarantee = ExactlyOnceV2
	case ExactlyOnceV2, AtLeastOnce:
	default:
		return out, fmt.Errorf("config: unknown guarantee %q: use %q or %q", out.Guarantee, ExactlyOnceV2, AtLeastOnce)
	}
	if out.CommitInterval <= 0 {
		out.CommitInterval = 100 * time.Millisecond
		if out.Guarantee == AtLeastOnce {
			out.CommitInterval = 30 * time.Second
		}
	}
	if out.Workers <= 0 {
		out.Workers = 1
	}
	if out.StandbyReplicas < 0 {
		return out, fmt.Errorf("config: StandbyReplicas %d is negative: use 0 for none, or the number of standby copies of each task", out.StandbyReplicas)
	}
	if out.ApplicationServer != "" {
		if _, port, err := net.SplitHostPort(out.ApplicationServer); err != nil || port == "" {
			return out, fmt.Errorf("config: ApplicationServer %q is not host:port: give the address other instances reach this one at, e.g. 10.0.0.5:8080", out.ApplicationServer)
		}
	}
	if out.ClientID == "" {
		out.ClientID = out.ApplicationID
	}
	if out.SessionTimeout <= 0 {
		out.SessionTimeout = 45 * time.Second
	}
	if out.RebalanceTimeout <= 0 {
		out.RebalanceTimeout = 60 * time.Second
	}
	if out.TransactionTimeout <= 0 {
		out.TransactionTimeout = 10 * time.Second
	}
	if out.ReplicationFactor == 0 {
		out.ReplicationFactor = -1
	}
	if out.StallTimeout <= 0 {
		out.StallTimeout = time.Minute
	}
	if out.MaxWorkerReplacements <= 0 {
		out.MaxWorkerReplacements = 3
	}
	switch out.OnFatalError {
	case ShutdownInstance, ReplaceWorker, ShutdownApplication:
	default:
		return out, fmt.Errorf("config: unknown OnFatalError %d", out.OnFatalError)
	}
	if out.MaxPollRecords <= 0 {
		out.MaxPollRecords = 10000
	}
	if out.StoreBlockCacheSize < 0 || out.StoreMemTableSize < 0 {
		return out, errors.New("config: StoreBlockCacheSize and StoreMemTableSize must not be negative: give a size in bytes, or 0 for the default")
	}
	if out.StoreBlockCacheSize == 0 {
		out.StoreBlockCacheSize = DefaultStoreBlockCacheSize
	}
	if out.StoreMemTableSize == 0 {
		out.StoreMemTableSize = DefaultStoreMemTableSize
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.SASL != nil {
		switch out.SASL.Mechanism {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		default:
			return out, fmt.Errorf("config: SASL mechanism %q is not supported: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", out.SASL.Mechanism)
		}
	}
	return out, nil
}
