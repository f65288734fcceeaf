package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/exactly-go/exactly/examples/payments/gateway"
)

func init() { commands = append(commands, newGatewayCommand) }

func newGatewayCommand() *cobra.Command {
	var (
		listen string
		opts   gateway.Options
	)
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the payment gateway simulator (HTTP) until interrupted",
		Long: `Runs a simulated payment gateway over HTTP, the counterpart of the payments
pipeline ("exactly payments", "exactly demo payments"):

  POST /charges  header Idempotency-Key, body {"orderId", "amountCents", "currency"}
                 200 {"transactionId"}; the same key again returns the same
                 transaction and charges nothing new (unless --ignore-keys)
                 402 card_declined (permanent), 503 unavailable (transient),
                 422 idempotency_key_reused (same key, different charge)
  GET  /charges  every real charge, oldest first
  GET  /stats    requests, charges, replays, transient and declined counts

Charges are kept in memory, or in --file (one JSON line each) so that a
restarted gateway on the same file remembers its charges and keys.`,
		Example: `  exactly gateway --listen 127.0.0.1:8090 --latency 50ms --transient-rate 0.1
  curl -s -X POST -H 'Idempotency-Key: k-1' -d '{"orderId":"o-1","amountCents":1299,"currency":"EUR"}' 127.0.0.1:8090/charges
  curl -s 127.0.0.1:8090/charges`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, _, err := net.SplitHostPort(listen)
			if err != nil {
				return fmt.Errorf("--listen %q: want host:port", listen)
			}
			if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				slog.Warn("the gateway simulator is reachable from other machines and has no authentication", "listen", listen)
			}
			s, err := gateway.Start(listen, opts)
			if err != nil {
				return err
			}
			mode := "honours idempotency keys"
			if opts.IgnoreKeys {
				mode = "IGNORES idempotency keys (every request charges)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "gateway listening on %s; it %s\n", s.URL, mode)
			<-cmd.Context().Done()
			st := s.Stats()
			fmt.Fprintf(cmd.OutOrStdout(), "stopped: %d requests, %d charges, %d replays, %d transient, %d declined\n",
				st.Requests, st.Charges, st.Replays, st.Transient, st.Declined)
			return s.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8090", "address to listen on (port 0: any free port)")
	f.BoolVar(&opts.IgnoreKeys, "ignore-keys", false, "ignore Idempotency-Key: charge every request, as a non-idempotent gateway would")
	f.DurationVar(&opts.Latency, "latency", 0, "delay before answering each charge")
	f.Float64Var(&opts.TransientRate, "transient-rate", 0, "share of charge requests answered 503 without charging (0 to 1)")
	f.Float64Var(&opts.DeclineRate, "decline-rate", 0, "share of orders declined with 402, always the same orders (0 to 1)")
	f.StringVar(&opts.File, "file", "", "keep charges in this file too, to survive restarts (default: memory only)")
	f.Uint64Var(&opts.Seed, "seed", 1, "seed of the random transient failures")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if opts.Latency < 0 || opts.Latency > time.Minute {
			return errors.New("--latency must lie between 0 and 1m")
		}
		return nil
	}
	return cmd
}
