package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/cmd/exactly/internal/httpapi"
	"github.com/exactly-go/exactly/cmd/exactly/internal/kafkaflags"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/httpquery"
)

func init() { commands = append(commands, newRunCommand) }

func newRunCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a reference application against a Kafka-protocol cluster",
		Long: `Runs one instance of a reference application until interrupted (SIGINT or
SIGTERM), then commits what is pending, closes its stores and leaves the
group, logging each step. The stop is bounded even when the brokers do not
answer: the final commit gets up to 10s and leaving the group up to
--session-timeout; a second signal ends the process at once. Start more
instances with the same --application-id to share the partitions.`,
		Example: "  exactly run orders --brokers 127.0.0.1:9092",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newRunOrdersCommand())
	return cmd
}

// runOrdersConfig is the configuration of `exactly run orders`, one field
// per flag.
type runOrdersConfig struct {
	Brokers        []string
	ApplicationID  string
	StateDir       string
	Guarantee      string
	CommitInterval time.Duration
	InstanceID     string
	HTTP           string
	// ApplicationServer is the address advertised for queries; "" means
	// the --http address when it names one host.
	ApplicationServer string
	Partitions        int32
	CreateTopics      bool
	InputTopic        string
	OutputTopic       string
	DLQTopic          string
	SessionTimeout    time.Duration
	Persistent        bool
	// Security is the connection's TLS and SASL, loaded from the
	// kafkaflags flags.
	Security        kafkaflags.Security
	StandbyReplicas int
	// Tracing traces records, commits and restores to the exporters it
	// names; none by default.
	Tracing tracingConfig
}

func defaultRunOrdersConfig() runOrdersConfig {
	return runOrdersConfig{
		ApplicationID:  "orders",
		StateDir:       filepath.Join(os.TempDir(), "exactly-state"),
		Guarantee:      string(exactly.ExactlyOnceV2),
		HTTP:           "127.0.0.1:8080",
		Partitions:     4,
		CreateTopics:   true,
		InputTopic:     orders.DefaultInputTopic,
		OutputTopic:    orders.DefaultOutputTopic,
		DLQTopic:       orders.DefaultDeadLetterTopic,
		SessionTimeout: 10 * time.Second,
		Persistent:     true,
		Tracing:        tracingConfig{SampleRatio: 1},
	}
}

func newRunOrdersCommand() *cobra.Command {
	c := defaultRunOrdersConfig()
	var security *kafkaflags.Flags
	cmd := &cobra.Command{
		Use:   "orders",
		Short: "Run the order projection (dedup, reorder, project) with an HTTP query endpoint",
		Long: `Runs one instance of the order projection until interrupted: it reads order
events (OrderCreated, OrderUpdated, OrderShipped) from --input-topic, skips
duplicates by eventId, holds events until their order's OrderCreated has been
applied, and writes each order's projection to --output-topic (compacted).
Records it cannot use go to --dlq-topic with a reason header: malformed,
unknown-event-type, missing-field, invalid-timestamp, buffer-ttl-expired.

Under exactly_once_v2 (the default) each commit's projections, dead letters,
changelog records and input offsets are one Kafka transaction: a crash or a
rebalance never duplicates or loses an event's effect.

HTTP (--http, loopback by default; "" turns it off):
  GET /orders/{id}  the order's projection, from any instance: 200 with
                    JSON, 404 when unknown, 503 with Retry-After while its
                    partition restores or moves in a rebalance
  GET /stores/{store}/keys/{key}
                    the same lookup for any store (order-projection-store)
  GET /stores/{store}/keys?from=&to=&limit=
                    committed entries of this instance's partitions: a
                    range (from inclusive, to exclusive) or, without from
                    and to, all keys; at most limit (default 100)
  GET /instances    every instance's advertised address and tasks
  GET /             live status page (throughput, lag, duplicates, buffer,
                    dead letters, transactions, pipeline latency and
                    event-time lag over time; restore progress bars)
  GET /status.json  the numbers behind the status page
  GET /metrics      Prometheus metrics
  GET /healthz      200 while the instance works; 503 with the reason while
                    a worker is stalled (processed records uncommitted for
                    longer than the stall timeout) or after a fatal error
  GET /readyz       200 once the instance has joined the group and restored
                    its stores and while it is healthy, 503 otherwise

Query routing: each instance advertises --application-server (default: the
--http address, when it names one host rather than 0.0.0.0) to the group.
After every rebalance every instance knows which instance holds each order,
without asking the brokers; an order held elsewhere is fetched from its
holder (one forwarded request, answer unchanged). Set --application-server
to the address the other instances reach this one at when --http listens on
all interfaces (e.g. --http :8080 --application-server 10.0.0.5:8080).

Standby replicas: with --standby-replicas N every instance keeps, beside
the tasks it runs, standby copies of N other instances' stores, up to date
with their changelogs (never a copy of a task it runs, never two of one
task). When an instance fails or stops, its tasks go to the instances
holding their standbys, which restore only what was written since their
last fetch instead of the whole changelog: failover takes seconds whatever
the store's size. Each copy costs the store's disk (or memory, without
--persistent) and reading its changelog; keep --state-dir across restarts so
that a restarted instance's copies resume where they stood. The status page
lists the standby tasks with their lag (exactly_standby_lag_records);
GET /orders/{id}?standby=true may answer from this instance's standby copy,
with its lag in the Exactly-Standby-Lag header.

Tracing (--otlp-endpoint, --trace-stdout): OpenTelemetry spans of records
("process order-events", a child of the record's W3C traceparent header, or
of the trace its envelope's traceId names when that is 32 hex digits), of
commits and of restores go to an OTLP/HTTP collector (--otlp-endpoint, e.g.
http://127.0.0.1:4318; the OTEL_EXPORTER_OTLP_* variables set headers and
certificates) and/or to standard output, one JSON object per line (logs go
to standard error). Projections and dead letters carry the traceparent of
their record's span. --trace-sample-ratio records that share of the traces
started here; a record whose traceparent is sampled is always recorded.`,
		Example: `  # against the embedded broker of "exactly broker"
  exactly run orders --brokers 127.0.0.1:9092

  # a second instance sharing the work, with its own state and port
  exactly run orders --brokers 127.0.0.1:9092 --instance-id orders-2 \
      --state-dir /tmp/orders-2 --http 127.0.0.1:8081

  # either instance answers for every order
  curl -s 127.0.0.1:8080/orders/o-1
  curl -s 127.0.0.1:8081/orders/o-1

  # each instance keeps a standby copy of the other's stores
  exactly run orders --brokers 127.0.0.1:9092 --standby-replicas 1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if c.Security, err = security.Load(); err != nil {
				return err
			}
			return c.Security.Explain(runOrders(cmd.Context(), c, nil))
		},
	}
	f := cmd.Flags()
	security = kafkaflags.Register(f)
	f.StringSliceVar(&c.Brokers, "brokers", nil, "Kafka seed brokers, host:port[,host:port] (required)")
	f.StringVar(&c.ApplicationID, "application-id", c.ApplicationID, "consumer group, prefix of changelog topics and transactional ids; instances with the same id share the work")
	f.StringVar(&c.StateDir, "state-dir", c.StateDir, "directory of the persistent stores (under <state-dir>/<application-id>); one instance per directory")
	f.StringVar(&c.Guarantee, "guarantee", c.Guarantee, "processing guarantee: exactly_once_v2 or at_least_once")
	f.DurationVar(&c.CommitInterval, "commit-interval", 0, "how often to commit; 0 means the guarantee's default (100ms under exactly_once_v2, 30s under at_least_once)")
	f.StringVar(&c.InstanceID, "instance-id", "", "static group membership id (group.instance.id); a restarted instance with the same id takes its partitions back at once")
	f.StringVar(&c.HTTP, "http", c.HTTP, `HTTP listen address for queries, metrics, health and the status page; "" turns it off`)
	f.StringVar(&c.ApplicationServer, "application-server", "", `host:port other instances reach this one's HTTP at, advertised to the group for query routing; default the --http address when it names one host`)
	f.Int32Var(&c.Partitions, "partitions", c.Partitions, "partitions of topics created because they were missing")
	f.BoolVar(&c.CreateTopics, "create-topics", c.CreateTopics, "create the input, output (compacted) and dead-letter topics if missing")
	f.StringVar(&c.InputTopic, "input-topic", c.InputTopic, "topic of order events")
	f.StringVar(&c.OutputTopic, "output-topic", c.OutputTopic, "compacted topic of order projections")
	f.StringVar(&c.DLQTopic, "dlq-topic", c.DLQTopic, "dead-letter topic")
	f.DurationVar(&c.SessionTimeout, "session-timeout", c.SessionTimeout, "consumer group session timeout: how long before a silent instance's partitions move; must lie within the broker's group.min/max.session.timeout.ms (6s to 30m by default)")
	f.BoolVar(&c.Persistent, "persistent", c.Persistent, "keep stores on disk (Pebble) rather than in memory")
	f.IntVar(&c.StandbyReplicas, "standby-replicas", 0, "standby copies of each task's stores kept on other instances, so that failover restores only the delta (num.standby.replicas)")
	f.BoolVar(&c.Tracing.Stdout, "trace-stdout", false, "trace every record, commit and restore (OpenTelemetry) and write the spans to standard output as JSON lines")
	f.StringVar(&c.Tracing.OTLPEndpoint, "otlp-endpoint", "", "trace records, commits and restores (OpenTelemetry) and export the spans over OTLP/HTTP to this URL, e.g. http://127.0.0.1:4318 (OTEL_EXPORTER_OTLP_* variables set headers and certificates)")
	f.Float64Var(&c.Tracing.SampleRatio, "trace-sample-ratio", 1, "share of traces started here that are recorded, 0 to 1 (records whose traceparent is sampled are always recorded)")
	return cmd
}

// runOrders runs the order projection until ctx ends. When c.HTTP is set
// it serves HTTP there, and calls listening (if not nil) with the bound
// address before the application starts.
func runOrders(ctx context.Context, c runOrdersConfig, listening func(net.Addr)) error {
	if err := c.validate(); err != nil {
		return err
	}
	log := slog.Default().With("application", c.ApplicationID)
	if c.InstanceID != "" {
		log = log.With("instance", c.InstanceID)
	}

	var ln net.Listener
	if c.HTTP != "" {
		var err error
		if ln, err = net.Listen("tcp", c.HTTP); err != nil {
			return fmt.Errorf("--http %s: %w: choose a free address, or --http \"\" to turn HTTP off", c.HTTP, err)
		}
		defer ln.Close()
		if !isLoopback(ln.Addr()) {
			log.Warn("HTTP is reachable from other machines and has no authentication", "addr", ln.Addr().String())
		}
		if listening != nil {
			listening(ln.Addr())
		}
	}

	reg := newRegistry()
	topology, err := orders.Topology(orders.Options{
		InputTopic:      c.InputTopic,
		OutputTopic:     c.OutputTopic,
		DeadLetterTopic: c.DLQTopic,
		Persistent:      c.Persistent,
		Registerer:      reg,
		Logger:          log,
	})
	if err != nil {
		return err
	}

	if c.CreateTopics {
		if err := createOrderTopics(ctx, c, log); err != nil {
			return err
		}
	}

	advertised := c.ApplicationServer
	if advertised == "" && ln != nil {
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
			advertised = ln.Addr().String()
		} else {
			log.Warn("HTTP listens on all interfaces and --application-server is not set: orders held by this instance cannot be routed to it", "addr", ln.Addr().String())
		}
	}

	var tracerProvider trace.TracerProvider
	if c.Tracing.enabled() {
		tp, stop, err := newTracing(c.Tracing, c.ApplicationID, log)
		if err != nil {
			return err
		}
		defer stop()
		tracerProvider = tp
		log.Info("tracing records, commits and restores", "stdout", c.Tracing.Stdout, "otlp_endpoint", c.Tracing.OTLPEndpoint, "sample_ratio", c.Tracing.SampleRatio)
	}

	app, err := exactly.New(topology, exactly.Config{
		Brokers:           c.Brokers,
		ApplicationServer: advertised,
		ApplicationID:     c.ApplicationID,
		Guarantee:         exactly.Guarantee(c.Guarantee),
		CommitInterval:    c.CommitInterval,
		StateDir:          c.StateDir,
		InstanceID:        c.InstanceID,
		SessionTimeout:    c.SessionTimeout,
		StandbyReplicas:   c.StandbyReplicas,
		CreateTopics:      c.CreateTopics,
		TLS:               c.Security.TLS,
		SASL:              c.Security.SASL,
		Registerer:        reg,
		Logger:            log,
		TracerProvider:    tracerProvider,
	})
	if err != nil {
		return err
	}

	var srv *httpapi.Server
	if ln != nil {
		srv = newOrdersHTTP(app, reg, c, log)
		log.Info("serving HTTP", "addr", ln.Addr().String(), "status", "http://"+ln.Addr().String()+"/")
	}
	readyCtx, stopReady := context.WithCancel(ctx)
	defer stopReady()
	go func() {
		select {
		case <-app.Ready():
			log.Info("ready: joined the group and restored the stores")
		case <-readyCtx.Done():
		}
	}()

	log.Info("running the order projection", "brokers", strings.Join(c.Brokers, ","), "security", c.Security.String(), "guarantee", c.Guarantee,
		"input", c.InputTopic, "output", c.OutputTopic, "dlq", c.DLQTopic, "state_dir", c.StateDir)
	if err := runServing(ctx, app, srv, ln, "orders", log); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// newOrdersHTTP is the HTTP face of an orders instance: the httpapi
// endpoints plus the projection store's queries, routed to the instance
// holding each order.
func newOrdersHTTP(app *exactly.App, reg *prometheus.Registry, c runOrdersConfig, log *slog.Logger) *httpapi.Server {
	srv := httpapi.New(httpapi.Options{
		Application: c.ApplicationID,
		Instance:    c.InstanceID,
		Registry:    reg,
		Ready:       app.Ready(),
		Health:      app.Healthy,
		Logger:      log,
		Routing: func() httpapi.Routing {
			return httpapi.Routing{Self: app.ApplicationServer(), LocalTasks: app.LocalTasks(), StandbyTasks: app.StandbyTasks(), Instances: app.Instances()}
		},
		Restores: app.Restores,
	})
	queries := httpquery.New(app, httpquery.Options{Logger: log})
	httpquery.Add(queries, httpquery.Store[string, orders.Aggregate]{
		Name:     orders.ProjectionStore,
		ParseKey: httpquery.StringKey,
		Render:   func(a orders.Aggregate) any { return a.Projection },
	})
	srv.Handle("GET /orders/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries.ServeKey(w, r, orders.ProjectionStore, r.PathValue("id"))
	}))
	srv.Handle("GET /stores/", queries)
	srv.Handle("GET /instances", queries)
	return srv
}

func (c runOrdersConfig) validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("--brokers is required (or EXACTLY_BROKERS, or brokers in --config): Kafka seed brokers, host:port[,host:port]")
	}
	switch exactly.Guarantee(c.Guarantee) {
	case exactly.ExactlyOnceV2, exactly.AtLeastOnce:
	default:
		return fmt.Errorf("--guarantee %q: use %s or %s", c.Guarantee, exactly.ExactlyOnceV2, exactly.AtLeastOnce)
	}
	if c.ApplicationID == "" {
		return errors.New("--application-id must not be empty: it names the consumer group and changelog topics")
	}
	if c.CreateTopics && c.Partitions <= 0 {
		return fmt.Errorf("--partitions %d: give a positive partition count for created topics", c.Partitions)
	}
	if c.StandbyReplicas < 0 {
		return fmt.Errorf("--standby-replicas %d: give 0 for none, or the number of standby copies of each task", c.StandbyReplicas)
	}
	if c.CommitInterval < 0 || c.SessionTimeout < 0 {
		return errors.New("--commit-interval and --session-timeout must not be negative")
	}
	if c.InputTopic == "" || c.OutputTopic == "" || c.DLQTopic == "" {
		return errors.New("--input-topic, --output-topic and --dlq-topic must not be empty")
	}
	return nil
}

// createOrderTopics creates the input, output (compacted) and dead-letter
// topics that do not exist yet, with c.Partitions partitions each.
func createOrderTopics(ctx context.Context, c runOrdersConfig, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, c.Security.ClientOptions()...)...)
	if err != nil {
		return fmt.Errorf("--brokers %s: %w", strings.Join(c.Brokers, ","), err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	existing, err := adm.ListTopics(ctx)
	if err != nil {
		return fmt.Errorf("list topics on %s: %w: check --brokers and that the cluster is up", strings.Join(c.Brokers, ","), err)
	}
	compact := "compact"
	for _, t := range []struct {
		name    string
		configs map[string]*string
	}{
		{c.InputTopic, nil},
		{c.OutputTopic, map[string]*string{"cleanup.policy": &compact}},
		{c.DLQTopic, nil},
	} {
		if existing.Has(t.name) {
			continue
		}
		resp, err := adm.CreateTopic(ctx, c.Partitions, -1, t.configs, t.name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w: create it yourself, or check the user may create topics", t.name, err)
		}
		log.Info("created topic", "topic", t.name, "partitions", c.Partitions)
	}
	return nil
}

func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
