package main

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/verify"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newVerifyCommand) }

func newVerifyCommand() *cobra.Command {
	var (
		brokers                 []string
		input, output, dlq      string
		dedupTTL, bufferTTL     time.Duration
		sweepInterval, deadline time.Duration
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Audit the orders application's committed topics for loss, duplicates and wrong results",
		Long: `Reads the input, projection and dead-letter topics read_committed, recomputes
from the input alone what the orders application must have committed (every
projection update, the final projections, the dead letters), and compares.
It also checks that no transaction is left open and counts records of aborted
transactions that read_committed readers do not see.

The TTL flags must match the application's. Exit status 0 only if every
check holds.`,
		Example: "  exactly verify --brokers 127.0.0.1:9092",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(brokers) == 0 {
				return fmt.Errorf("--brokers is required (host:port of a broker)")
			}
			rep, err := verify.Orders(cmd.Context(), verify.Config{
				Brokers: brokers,
				Timeout: deadline,
				Options: orders.Options{
					InputTopic: input, OutputTopic: output, DeadLetterTopic: dlq,
					DedupTTL: dedupTTL, BufferTTL: bufferTTL, SweepInterval: sweepInterval,
				},
			})
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), rep)
			if !rep.OK() {
				return &exitError{code: 1, err: fmt.Errorf("verification failed")}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&brokers, "brokers", nil, "seed brokers, host:port (comma-separated)")
	f.StringVar(&input, "input-topic", orders.DefaultInputTopic, "input topic")
	f.StringVar(&output, "output-topic", orders.DefaultOutputTopic, "projection topic")
	f.StringVar(&dlq, "dlq-topic", orders.DefaultDeadLetterTopic, "dead-letter topic")
	f.DurationVar(&dedupTTL, "dedup-ttl", 0, "the application's dedup TTL (0: its default, 7 days)")
	f.DurationVar(&bufferTTL, "buffer-ttl", 0, "the application's reorder buffer TTL (0: its default, 24h)")
	f.DurationVar(&sweepInterval, "sweep-interval", 0, "the application's sweep interval (0: its default, 1m)")
	f.DurationVar(&deadline, "timeout", time.Minute, "give up reading after this long")
	return cmd
}
