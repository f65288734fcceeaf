package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/cmd/exactly/internal/kafkaflags"
	"github.com/exactly-go/exactly/outbox"
	"github.com/exactly-go/exactly/outbox/relay"
)

func init() { commands = append(commands, newRelayCommand) }

func newRelayCommand() *cobra.Command {
	var (
		cfg           relay.Config
		mode          string
		brokers       []string
		migrate       bool
		metricsListen string
	)
	var security *kafkaflags.Flags
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Publish the PostgreSQL outbox table to Kafka (CDC or polling)",
		Long: `Runs the outbox relay until interrupted. Each committed row of the outbox
table becomes one Kafka record: topic from aggregate_type through
--route.topic.replacement, key aggregate_id, value the payload bytes
unchanged, headers "id" and "eventType" plus the row's headers. Delivery is
at least once: consumers deduplicate by the "id" header.

The --route.* and --table.field* flags are the options of Debezium's Outbox
Event Router under the same names: which column routes, how the topic is
made from it, which columns are the event id, key, payload and timestamp,
which further columns become headers, and whether an empty payload is
published as a tombstone. A column they name that the table lacks stops the
relay at start.

--mode cdc (default) reads the table through logical replication: the server
needs wal_level=logical and the user the REPLICATION privilege. The
publication and slot are created if missing; a stopped relay keeps its slot,
and the server keeps WAL for it until the relay returns. --mode poll reads
the table with SELECT ... FOR UPDATE SKIP LOCKED where logical replication is
not allowed.`,
		Example: `  exactly relay --dsn postgres://app@127.0.0.1/shop --brokers 127.0.0.1:9092
  exactly relay --dsn postgres://app@127.0.0.1/shop --table outboxevent \
      --route.by.field aggregatetype --table.field.event.key aggregateid \
      --route.topic.replacement 'outbox.event.${routedByValue}' \
      --table.fields.additional.placement type:header:eventType
  EXACTLY_DSN=postgres://app@127.0.0.1/shop exactly relay --mode poll --migrate`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if cfg.DSN == "" {
				return errors.New("--dsn is required (or EXACTLY_DSN, or dsn in --config): the PostgreSQL database holding the outbox table")
			}
			if len(brokers) == 0 {
				return errors.New("--brokers is required: Kafka seed brokers, host:port[,host:port]")
			}
			sec, err := security.Load()
			if err != nil {
				return err
			}
			cfg.Mode = relay.Mode(mode)
			if cfg.Router, err = relayRouter(cmd.Flags()); err != nil {
				return err
			}
			cfg.Kafka = append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, sec.ClientOptions()...)
			cfg.Logger = slog.Default()
			if migrate {
				if err := migrateOutbox(ctx, cfg.DSN); err != nil {
					return err
				}
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			cfg.Registerer = reg
			if metricsListen != "" {
				stop, err := serveMetrics(metricsListen, reg)
				if err != nil {
					return err
				}
				defer stop()
			}
			r, err := relay.New(cfg)
			if err != nil {
				return err
			}
			slog.Info("relay started", "mode", cfg.Mode, "table", cfg.Table, "brokers", brokers, "security", sec.String())
			if err := r.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				return sec.Explain(err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	security = kafkaflags.Register(f)
	f.StringVar(&cfg.DSN, "dsn", "", "PostgreSQL connection string of the database holding the outbox (required)")
	f.StringSliceVar(&brokers, "brokers", []string{"127.0.0.1:9092"}, "Kafka seed brokers")
	f.StringVar(&mode, "mode", string(relay.ModeCDC), "how to read the outbox: cdc (logical replication) or poll")
	f.StringVar(&cfg.Table, "table", "outbox", "outbox table, optionally schema-qualified")
	registerRouterFlags(f)
	f.StringVar(&cfg.TransactionalID, "transactional-id", "", "publish through Kafka transactions with this id (read_committed consumers never see half a database transaction)")
	f.BoolVar(&cfg.KeepRows, "keep-rows", false, "leave relayed rows in the table (cdc only)")
	f.StringVar(&cfg.DeadLetterTopic, "dead-letter-topic", "", "publish rows that cannot be routed, or that the broker refuses for good (too large, invalid timestamp), here with their reason, and go on (default: such a row stops the relay)")
	f.StringVar(&cfg.Slot, "slot", "exactly_outbox", "replication slot (cdc)")
	f.StringVar(&cfg.Publication, "publication", "exactly_outbox", "publication (cdc)")
	f.DurationVar(&cfg.StatusInterval, "status-interval", time.Second, "how often to confirm the relayed position to the slot (cdc)")
	f.DurationVar(&cfg.PollInterval, "poll-interval", 100*time.Millisecond, "pause when a poll found fewer rows than --batch-size (poll)")
	f.IntVar(&cfg.BatchSize, "batch-size", 1000, "rows per poll (poll) and per backfill step (cdc)")
	f.BoolVar(&migrate, "migrate", false, "create the outbox table first if it does not exist")
	f.StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus metrics on this address at /metrics, e.g. 127.0.0.1:9464 (default: off)")
	return cmd
}

// registerRouterFlags registers the flags of relay.Router, named after
// Debezium's options.
func registerRouterFlags(f *pflag.FlagSet) {
	f.String("route.by.field", "aggregate_type", "column whose value routes a row to its topic")
	f.String("route.topic.regex", relay.DefaultRouteTopicRegex, "regular expression (Go syntax; (?<name>...) groups) the whole routed-by value must match for --route.topic.replacement to apply; a value it does not match is the topic itself")
	f.String("route.topic.replacement", "", "topic of a matched value: ${name} or ${1} is a group of --route.topic.regex, $$ a dollar sign; ${aggregate_type} the whole value while routing by aggregate_type (default \"${aggregate_type}.events\")")
	f.String("topic-replacement", "", "older name of --route.topic.replacement")
	f.String("table.field.event.id", "id", "column published in the header \"id\", by which consumers deduplicate")
	f.String("table.field.event.key", "aggregate_id", "column whose value is the record key (NULL: no key)")
	f.String("table.field.event.payload", "payload", "column whose value is the record value, byte for byte")
	f.String("table.field.event.timestamp", "", "column whose time is the record timestamp: timestamptz, timestamp (UTC) or integer milliseconds (default: the time the relay publishes)")
	f.StringSlice("table.fields.additional.placement", nil, "further columns published as headers: column:header or column:header:alias, comma-separated")
	f.Bool("route.tombstone.on.empty.payload", false, "publish a row whose payload is NULL or empty as a tombstone (nil value); without it a NULL payload is unroutable")
}

// relayRouter reads the router flags.
func relayRouter(f *pflag.FlagSet) (relay.Router, error) {
	var r relay.Router
	var err error
	str := func(name string) string {
		v, e := f.GetString(name)
		err = errors.Join(err, e)
		return v
	}
	r.RouteByField = str("route.by.field")
	r.RouteTopicRegex = str("route.topic.regex")
	r.RouteTopicReplacement = str("route.topic.replacement")
	r.FieldEventID = str("table.field.event.id")
	r.FieldEventKey = str("table.field.event.key")
	r.FieldEventPayload = str("table.field.event.payload")
	r.FieldEventTimestamp = str("table.field.event.timestamp")
	if old := str("topic-replacement"); old != "" {
		if r.RouteTopicReplacement != "" && r.RouteTopicReplacement != old {
			return r, fmt.Errorf("--topic-replacement %q and --route.topic.replacement %q disagree: give only --route.topic.replacement", old, r.RouteTopicReplacement)
		}
		r.RouteTopicReplacement = old
	}
	placements, e := f.GetStringSlice("table.fields.additional.placement")
	if err = errors.Join(err, e); err != nil {
		return r, err
	}
	r.AdditionalFields, err = relay.ParseAdditionalFields(strings.Join(placements, ","))
	if err != nil {
		return r, fmt.Errorf("--table.fields.additional.placement: %w", err)
	}
	r.TombstoneOnEmptyPayload, err = f.GetBool("route.tombstone.on.empty.payload")
	return r, err
}

func migrateOutbox(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("--migrate: connect: %w", err)
	}
	defer conn.Close(context.Background())
	return outbox.Migrate(ctx, conn)
}

// serveMetrics serves reg at /metrics on addr until stop is called.
func serveMetrics(addr string, reg *prometheus.Registry) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
