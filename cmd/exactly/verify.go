package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/cmd/exactly/internal/kafkaflags"
	"github.com/exactly-go/exactly/examples/exposure"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/verify"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newVerifyCommand) }

// verifyConfig is the configuration of `exactly verify`, one field per
// flag.
type verifyConfig struct {
	Brokers                 []string
	Input, Output, DLQ      string
	DedupTTL, BufferTTL     time.Duration
	SweepInterval, Deadline time.Duration
	Replay                  bool
	Topology                string
	ApplicationID           string
	ThresholdCents          int64
	Security                kafkaflags.Security
}

func (c verifyConfig) ordersOptions() orders.Options {
	return orders.Options{
		InputTopic: c.Input, OutputTopic: c.Output, DeadLetterTopic: c.DLQ,
		DedupTTL: c.DedupTTL, BufferTTL: c.BufferTTL, SweepInterval: c.SweepInterval,
	}
}

// replayable are the reference topologies `exactly verify --replay` can
// rebuild, by name, configured as the application ran them.
var replayable = map[string]func(c verifyConfig) (*exactly.Topology, error){
	"orders": func(c verifyConfig) (*exactly.Topology, error) { return orders.Topology(c.ordersOptions()) },
	"exposure": func(c verifyConfig) (*exactly.Topology, error) {
		return exposure.CustomerExposure(c.ApplicationID, c.ThresholdCents)
	},
	"suspicious-orders": func(c verifyConfig) (*exactly.Topology, error) {
		return exposure.SuspiciousOrderCounts(c.ApplicationID, nil)
	},
}

// notReplayable are reference applications whose output is not a function
// of their input, with the reason.
var notReplayable = map[string]string{
	"payments": "it charges through a payment gateway, and its output carries the gateway's transaction ids: a replay would call the gateway again and cannot reproduce them",
}

func newVerifyCommand() *cobra.Command {
	c := verifyConfig{Topology: "orders", ApplicationID: "orders", ThresholdCents: 1_000_000}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range replayable {
			if !yield(n) {
				return
			}
		}
	})
	var security *kafkaflags.Flags
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Audit a reference application's committed topics for loss, duplicates and wrong results",
		Long: `Reads the input, projection and dead-letter topics read_committed, recomputes
from the input alone what the orders application must have committed (every
projection update, the final projections, the dead letters), and compares.
It also checks that no transaction is left open and counts records of aborted
transactions that read_committed readers do not see.

--replay also replays the committed input (what the consumer group
--application-id committed offsets for) through the application's topology
in the test driver, sub-topology by sub-topology, and checks that the
committed output equals what the replay produces: per partition and key,
naming every duplicate, missing, different or unexpected record, changelogs
by their final value per key, and the stream time committed with the
offsets. --topology chooses the topology (` + strings.Join(names, ", ") + `);
for orders the audit above runs too. Stop the application first.

The TTL flags must match the application's. Exit status 0 only if every
check holds; 1 if one fails; 2 if the topology cannot be replayed faithfully
(wall-clock punctuators, several source topics in one sub-topology, deleted
input).`,
		Example: `  exactly verify --brokers 127.0.0.1:9092
  exactly verify --brokers 127.0.0.1:9092 --replay
  exactly verify --brokers 127.0.0.1:9092 --replay --topology exposure --application-id risk --threshold-cents 50000`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(c.Brokers) == 0 {
				return fmt.Errorf("--brokers is required (host:port of a broker)")
			}
			var err error
			if c.Security, err = security.Load(); err != nil {
				return err
			}
			if why, ok := notReplayable[c.Topology]; ok {
				return fmt.Errorf("--topology %s cannot be verified by replay: %s", c.Topology, why)
			}
			build, ok := replayable[c.Topology]
			if !ok {
				return fmt.Errorf("--topology %q: use one of %s", c.Topology, strings.Join(names, ", "))
			}
			if c.Topology != "orders" && !c.Replay {
				return fmt.Errorf("--topology %s has no domain audit: add --replay", c.Topology)
			}
			failed := false
			if c.Topology == "orders" {
				rep, err := verify.Orders(cmd.Context(), verify.Config{Brokers: c.Brokers, Timeout: c.Deadline, Options: c.ordersOptions(), ClientOptions: c.Security.ClientOptions()})
				if err != nil {
					return c.Security.Explain(err)
				}
				fmt.Fprint(cmd.OutOrStdout(), rep)
				failed = !rep.OK()
			}
			if !c.Replay {
				if failed {
					return &exitError{code: 1, err: fmt.Errorf("verification failed")}
				}
				return nil
			}
			top, err := build(c)
			if err != nil {
				return err
			}
			rep, err := verify.Replay(cmd.Context(), top, verify.ReplayConfig{Brokers: c.Brokers, ApplicationID: c.ApplicationID, Timeout: c.Deadline, ClientOptions: c.Security.ClientOptions()})
			if err != nil {
				return c.Security.Explain(err)
			}
			fmt.Fprint(cmd.OutOrStdout(), rep)
			switch {
			case failed || !rep.OK() && rep.Replayable():
				return &exitError{code: 1, err: fmt.Errorf("verification failed")}
			case !rep.Replayable():
				return &exitError{code: 2, err: fmt.Errorf("the topology cannot be replayed faithfully; see NOT REPLAYABLE above")}
			}
			return nil
		},
	}
	f := cmd.Flags()
	security = kafkaflags.Register(f)
	f.StringSliceVar(&c.Brokers, "brokers", nil, "seed brokers, host:port (comma-separated)")
	f.StringVar(&c.Input, "input-topic", orders.DefaultInputTopic, "input topic")
	f.StringVar(&c.Output, "output-topic", orders.DefaultOutputTopic, "projection topic")
	f.StringVar(&c.DLQ, "dlq-topic", orders.DefaultDeadLetterTopic, "dead-letter topic")
	f.DurationVar(&c.DedupTTL, "dedup-ttl", 0, "the application's dedup TTL (0: its default, 7 days)")
	f.DurationVar(&c.BufferTTL, "buffer-ttl", 0, "the application's reorder buffer TTL (0: its default, 24h)")
	f.DurationVar(&c.SweepInterval, "sweep-interval", 0, "the application's sweep interval (0: its default, 1m)")
	f.DurationVar(&c.Deadline, "timeout", time.Minute, "give up reading after this long (each of the audit and the replay)")
	f.BoolVar(&c.Replay, "replay", false, "also replay the committed input through the topology and compare the committed output with the replay's")
	f.StringVar(&c.Topology, "topology", c.Topology, "with --replay, the application's topology: "+strings.Join(names, ", "))
	f.StringVar(&c.ApplicationID, "application-id", c.ApplicationID, "with --replay, the application id: its consumer group, and the prefix of its changelog and repartition topics")
	f.Int64Var(&c.ThresholdCents, "threshold-cents", c.ThresholdCents, "with --replay --topology exposure, the application's decision threshold")
	return cmd
}
