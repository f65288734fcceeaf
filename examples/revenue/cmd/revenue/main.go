// Command revenue runs an instance of the hourly revenue application
// (package revenue), or with -produce writes a sample input to the topics
// and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/revenue"
	"github.com/twmb/franz-go/pkg/kgo"
)

// config is the command's configuration, one field per flag.
type config struct {
	Brokers        []string
	InstanceID     string
	StateDir       string
	SessionTimeout time.Duration
	// RebalanceTimeout bounds how long a rebalance waits for members that
	// joined the group before and do not join again (an instance killed
	// while the group rebalanced).
	RebalanceTimeout time.Duration
	CommitInterval   time.Duration
	Topology         revenue.Options
	// Produce writes a sample of this many orders (with its products,
	// customers and closing ticks) and exits.
	Produce int
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("revenue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	brokers := fs.String("brokers", "127.0.0.1:9092", "Kafka seed brokers, host:port[,host:port]")
	fs.StringVar(&c.Topology.ApplicationID, "application-id", "revenue", "consumer group and prefix of the internal topics")
	fs.StringVar(&c.InstanceID, "instance-id", "", "static group membership id")
	fs.StringVar(&c.StateDir, "state-dir", filepath.Join(os.TempDir(), "revenue-state"), "directory of the persistent stores; one running instance per directory")
	fs.DurationVar(&c.SessionTimeout, "session-timeout", 10*time.Second, "how long the group waits for a silent instance before moving its partitions")
	fs.DurationVar(&c.RebalanceTimeout, "rebalance-timeout", 0, "how long a rebalance waits for every instance of the group to join it again; 0: the runtime's default")
	fs.DurationVar(&c.CommitInterval, "commit-interval", 0, "how often to commit; 0: the runtime's default")
	fs.DurationVar(&c.Topology.Window, "window", time.Hour, "size of the revenue windows")
	fs.DurationVar(&c.Topology.Grace, "grace", 10*time.Minute, "how late an order still counts")
	fs.IntVar(&c.Produce, "produce", 0, "write a sample of this many orders, with its products and customers, and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q: every setting is a flag (see -help)", fs.Args())
	}
	c.Brokers = strings.Split(*brokers, ",")
	c.Topology.Persistent = true
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, log); err != nil {
		log.Error("revenue failed", "err", err)
		os.Exit(1)
	}
}

// run runs one instance until ctx ends, then stops gracefully.
func run(ctx context.Context, c config, log *slog.Logger) error {
	if c.Produce > 0 {
		return produceSample(ctx, c)
	}
	topology, err := revenue.Topology(c.Topology)
	if err != nil {
		return err
	}
	app, err := exactly.New(topology, exactly.Config{
		Brokers:          c.Brokers,
		ApplicationID:    c.Topology.WithDefaults().ApplicationID,
		InstanceID:       c.InstanceID,
		StateDir:         c.StateDir,
		SessionTimeout:   c.SessionTimeout,
		RebalanceTimeout: c.RebalanceTimeout,
		CommitInterval:   c.CommitInterval,
		CreateTopics:     true, // the output topic
		Logger:           log,
	})
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	select {
	case <-app.Ready():
		log.Info("ready: global table bootstrapped, group joined, stores restored")
	case err := <-done:
		return err
	}
	return <-done
}

// produceSample writes a sample input: products and customers, the
// orders, then the ticks that close the windows.
func produceSample(ctx context.Context, c config) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	s := revenue.NewSample(1, c.Produce)
	var recs []*kgo.Record
	for _, r := range append(append(s.Tables(), s.Orders...), s.Ticks...) {
		recs = append(recs, &kgo.Record{Topic: r.Topic, Key: []byte(r.Key), Value: r.Bytes(), Timestamp: r.Timestamp})
	}
	return cl.ProduceSync(ctx, recs...).FirstErr()
}
