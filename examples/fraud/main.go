package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// config is the service's configuration, one field per flag.
type config struct {
	Brokers        []string
	ApplicationID  string
	InstanceID     string
	StateDir       string
	HTTP           string
	Partitions     int
	SessionTimeout time.Duration
	Rules          Options
	// Produce, when positive, makes the command produce that many sample
	// transactions and exit instead of running the detector.
	Produce int
}

// parseFlags reads the command line into a config.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	c := config{Rules: Options{}.withDefaults()}
	fs := flag.NewFlagSet("fraud", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "127.0.0.1:9092", "Kafka seed brokers, host:port[,host:port]")
	fs.StringVar(&c.ApplicationID, "application-id", "fraud", "consumer group and prefix of the internal topics; instances with the same id share the partitions")
	fs.StringVar(&c.InstanceID, "instance-id", "", "static group membership id: a stopped instance's partitions wait for it for the session timeout, and a restart with the same id takes them back without a rebalance")
	fs.StringVar(&c.StateDir, "state-dir", filepath.Join(os.TempDir(), "fraud-state"), "directory of the persistent stores; one running instance per directory")
	fs.StringVar(&c.HTTP, "http", "127.0.0.1:8090", `listen address of /metrics, /healthz and /readyz; "" turns HTTP off`)
	fs.IntVar(&c.Partitions, "partitions", 4, "partitions of the transactions topic when it has to be created")
	fs.DurationVar(&c.SessionTimeout, "session-timeout", 10*time.Second, "how long the group waits for a silent instance before moving its partitions")
	fs.Int64Var(&c.Rules.VelocityThreshold, "velocity-threshold", c.Rules.VelocityThreshold, "transactions of one card within one velocity window that raise an alert")
	fs.DurationVar(&c.Rules.VelocityWindow, "velocity-window", c.Rules.VelocityWindow, "size of the tumbling velocity windows, in event time")
	fs.DurationVar(&c.Rules.Grace, "grace", c.Rules.Grace, "how late after a window's end a transaction still counts")
	fs.DurationVar(&c.Rules.TravelWindow, "travel-window", c.Rules.TravelWindow, "two countries within this time raise an impossible-travel alert")
	fs.IntVar(&c.Produce, "produce", 0, "produce this many sample transactions to the transactions topic and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q: every setting is a flag (see -help)", fs.Args())
	}
	c.Brokers = strings.Split(*brokers, ",")
	c.Rules.ApplicationID = c.ApplicationID
	c.Rules.Persistent = true
	if c.ApplicationID == "" || *brokers == "" {
		return c, errors.New("-brokers and -application-id must not be empty")
	}
	return c, nil
}

func main() {
	c, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err != nil {
		log.Error("bad flags", "err", err)
		os.Exit(2)
	}
	// The first SIGINT or SIGTERM stops gracefully; a second one kills.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	if err := run(ctx, c, log, nil); err != nil {
		log.Error("fraud detector failed", "err", err)
		os.Exit(1)
	}
}

// run runs the detector until ctx ends, then stops gracefully: the
// application commits what it processed, closes its stores and leaves the
// group (a static member keeps its partitions for the session timeout).
// listening, if not nil, is told the HTTP address once it is bound.
func run(ctx context.Context, c config, log *slog.Logger, listening func(net.Addr)) error {
	log = log.With("application", c.ApplicationID)
	if c.InstanceID != "" {
		log = log.With("instance", c.InstanceID)
	}
	if err := ensureTopic(ctx, c, log); err != nil {
		return err
	}
	if c.Produce > 0 {
		return produceSamples(ctx, c, log)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c.Rules.Metrics = dsl.NewMetrics()
	reg.MustRegister(c.Rules.Metrics.Collectors()...)
	topology, err := Topology(c.Rules)
	if err != nil {
		return err
	}
	app, err := exactly.New(topology, exactly.Config{
		Brokers:        c.Brokers,
		ApplicationID:  c.ApplicationID,
		InstanceID:     c.InstanceID,
		StateDir:       c.StateDir,
		SessionTimeout: c.SessionTimeout,
		CreateTopics:   true, // the alerts and dead-letter topics
		Registerer:     reg,
		Logger:         log,
	})
	if err != nil {
		return err
	}

	httpDone := make(chan error, 1)
	var srv *http.Server
	if c.HTTP != "" {
		ln, err := net.Listen("tcp", c.HTTP)
		if err != nil {
			return fmt.Errorf("-http %s: %w: choose a free address, or -http \"\" to turn HTTP off", c.HTTP, err)
		}
		srv = &http.Server{Handler: handler(app, reg), ReadHeaderTimeout: 5 * time.Second}
		go func() { httpDone <- srv.Serve(ln) }()
		log.Info("serving HTTP", "addr", ln.Addr().String())
		if listening != nil {
			listening(ln.Addr())
		}
	}
	go func() {
		select {
		case <-app.Ready():
			log.Info("ready: joined the group and restored the stores")
		case <-ctx.Done():
		}
	}()

	log.Info("detecting fraud", "brokers", strings.Join(c.Brokers, ","), "input", TransactionsTopic, "alerts", AlertsTopic, "dlq", DeadLetterTopic)
	runErr := app.Run(ctx)
	if srv != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			log.Warn("HTTP shutdown", "err", err)
		}
		if err := <-httpDone; !errors.Is(err, http.ErrServerClosed) {
			log.Warn("HTTP server", "err", err)
		}
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return runErr
	}
	log.Info("stopped")
	return nil
}

// handler serves /metrics, /healthz (200 while the instance works) and
// /readyz (200 once it has joined the group and restored its stores, while
// it is healthy).
func handler(app *exactly.App, reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := app.Healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-app.Ready():
		default:
			http.Error(w, "joining the group or restoring stores", http.StatusServiceUnavailable)
			return
		}
		if err := app.Healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// ensureTopic creates the transactions topic when it is missing; the
// runtime creates the alerts and dead-letter topics itself.
func ensureTopic(ctx context.Context, c config, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, int32(c.Partitions), -1, nil, TransactionsTopic)
	if err == nil {
		err = resp.Err
	}
	switch {
	case errors.Is(err, kerr.TopicAlreadyExists):
		return nil
	case err != nil:
		return fmt.Errorf("create topic %s on %s: %w: check -brokers and that the cluster is up", TransactionsTopic, strings.Join(c.Brokers, ","), err)
	}
	log.Info("created topic", "topic", TransactionsTopic, "partitions", c.Partitions)
	return nil
}

// produceSamples produces c.Produce generated transactions, starting now.
func produceSamples(ctx context.Context, c config, log *slog.Logger) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.DefaultProduceTopic(TransactionsTopic))
	if err != nil {
		return err
	}
	defer cl.Close()
	samples := Generate(uint64(time.Now().UnixNano()), c.Produce, time.Now())
	recs := make([]*kgo.Record, len(samples))
	for i, s := range samples {
		recs[i] = &kgo.Record{Key: s.Key, Value: s.Value, Timestamp: s.Timestamp}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce to %s: %w", TransactionsTopic, err)
	}
	log.Info("produced sample transactions", "topic", TransactionsTopic, "records", len(recs))
	return nil
}
