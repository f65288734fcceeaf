package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
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
--topic-replacement, key aggregate_id, value the payload bytes unchanged,
headers "id" and "eventType" plus the row's headers. Delivery is at least
once: consumers deduplicate by the "id" header.

--mode cdc (default) reads the table through logical replication: the server
needs wal_level=logical and the user the REPLICATION privilege. The
publication and slot are created if missing; a stopped relay keeps its slot,
and the server keeps WAL for it until the relay returns. --mode poll reads
the table with SELECT ... FOR UPDATE SKIP LOCKED where logical replication is
not allowed.`,
		Example: `  exactly relay --dsn postgres://app@127.0.0.1/shop --brokers 127.0.0.1:9092
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
	f.StringVar(&cfg.TopicReplacement, "topic-replacement", relay.DefaultTopicReplacement, "topic for a row; ${aggregate_type} is replaced by the row's aggregate type")
	f.StringVar(&cfg.TransactionalID, "transactional-id", "", "publish through Kafka transactions with this id (read_committed consumers never see half a database transaction)")
	f.BoolVar(&cfg.KeepRows, "keep-rows", false, "leave relayed rows in the table (cdc only)")
	f.StringVar(&cfg.DeadLetterTopic, "dead-letter-topic", "", "publish rows that cannot be routed here, with their reason, and go on (default: such a row stops the relay)")
	f.StringVar(&cfg.Slot, "slot", "exactly_outbox", "replication slot (cdc)")
	f.StringVar(&cfg.Publication, "publication", "exactly_outbox", "publication (cdc)")
	f.DurationVar(&cfg.StatusInterval, "status-interval", time.Second, "how often to confirm the relayed position to the slot (cdc)")
	f.DurationVar(&cfg.PollInterval, "poll-interval", 100*time.Millisecond, "pause when a poll found fewer rows than --batch-size (poll)")
	f.IntVar(&cfg.BatchSize, "batch-size", 1000, "rows per poll (poll) and per backfill step (cdc)")
	f.BoolVar(&migrate, "migrate", false, "create the outbox table first if it does not exist")
	f.StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus metrics on this address at /metrics, e.g. 127.0.0.1:9464 (default: off)")
	return cmd
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
