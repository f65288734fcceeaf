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

	"github.com/spf13/cobra"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/cmd/exactly/internal/httpapi"
	"github.com/exactly-go/exactly/cmd/exactly/internal/kafkaflags"
	"github.com/exactly-go/exactly/examples/payments"
	"github.com/exactly-go/exactly/examples/payments/gateway"
	"github.com/exactly-go/exactly/processors/sideeffect"
)

func init() { commands = append(commands, newPaymentsCommand) }

// Roles of `exactly payments`.
const (
	roleDirect    = "direct"
	roleValidator = "validator"
	roleCaller    = "caller"
)

// headerClientID names the pipeline instance on each gateway request, so
// that the demo's gateway can tell which process made a charge.
const headerClientID = "X-Client-Id"

type paymentsConfig struct {
	Brokers        []string
	Role           string
	Gateway        string
	ApplicationID  string
	Guarantee      string
	StateDir       string
	InstanceID     string
	Concurrency    int
	CommitInterval time.Duration
	SessionTimeout time.Duration
	RetryFor       time.Duration
	ClientID       string
	HTTP           string
	Security       kafkaflags.Security
}

func newPaymentsCommand() *cobra.Command {
	c := paymentsConfig{Role: roleDirect, Concurrency: 1, SessionTimeout: 10 * time.Second, StateDir: filepath.Join(os.TempDir(), "exactly-state")}
	var security *kafkaflags.Flags
	cmd := &cobra.Command{
		Use:   "payments",
		Short: "Run one instance of the payment pipeline against a cluster and a payment gateway",
		Long: `Runs one instance of the payments reference application until interrupted. It
reads payment orders ({"eventId", "orderId", "amountCents", "currency"}, key
orderId) and charges each once through the gateway at --gateway (see
"exactly gateway"), with an idempotency key derived from the order id.

--role direct     payment-orders -> charge -> payments-processed, under
                  exactly_once_v2: the key is recorded and the result
                  written in the transaction that commits the input
--role validator  payment-orders -> PENDING -> pending-api-calls, under
                  exactly_once_v2: each order forwarded once
--role caller     pending-api-calls -> charge -> payments-processed, under
                  at_least_once: a crash repeats the call, with the same key

Unusable orders and declined charges go to payment-orders-dlq with a reason
header (malformed, missing-field, invalid-amount, payment-declined,
gateway-rejected, retries-exhausted). A process killed between a charge and
its commit calls again with the same key when it restarts: only a gateway
that honours idempotency keys then charges once.`,
		Example: `  exactly broker --topic payment-orders --partitions 4 &
  exactly gateway &
  exactly payments --brokers 127.0.0.1:9092 --gateway http://127.0.0.1:8090 --concurrency 8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if c.Security, err = security.Load(); err != nil {
				return err
			}
			return c.Security.Explain(runPayments(cmd.Context(), c))
		},
	}
	f := cmd.Flags()
	security = kafkaflags.Register(f)
	f.StringSliceVar(&c.Brokers, "brokers", nil, "Kafka seed brokers, host:port[,host:port] (required)")
	f.StringVar(&c.Role, "role", c.Role, "what this instance runs: direct, validator or caller")
	f.StringVar(&c.Gateway, "gateway", "http://127.0.0.1:8090", "base URL of the payment gateway")
	f.StringVar(&c.ApplicationID, "application-id", "", "consumer group and prefix of changelog topics; default payments, payments-validator or payments-caller by role")
	f.StringVar(&c.Guarantee, "guarantee", "", "processing guarantee; default exactly_once_v2, at_least_once for the caller")
	f.StringVar(&c.StateDir, "state-dir", c.StateDir, "directory of the persistent stores; one instance per directory")
	f.StringVar(&c.InstanceID, "instance-id", "", "static group membership id; a restarted instance with the same id takes its partitions back at once and fences its predecessor's open transaction")
	f.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "most gateway calls one task makes at once")
	f.DurationVar(&c.CommitInterval, "commit-interval", 0, "how often to commit; 0 means the guarantee's default")
	f.DurationVar(&c.SessionTimeout, "session-timeout", c.SessionTimeout, "consumer group session timeout")
	f.DurationVar(&c.RetryFor, "retry-for", 0, "how long to retry a charge that fails transiently before dead-lettering it; default 5s")
	f.StringVar(&c.ClientID, "client-id", "", "sent to the gateway as header "+headerClientID)
	f.StringVar(&c.HTTP, "http", "", `HTTP listen address for /metrics, /healthz, /readyz and the status page; "" (the default) turns it off`)
	return cmd
}

func (c *paymentsConfig) withDefaults() error {
	if len(c.Brokers) == 0 {
		return errors.New("--brokers is required (or EXACTLY_BROKERS): Kafka seed brokers, host:port[,host:port]")
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("--concurrency %d: give at least 1", c.Concurrency)
	}
	defaultID := map[string]string{roleDirect: "payments", roleValidator: "payments-validator", roleCaller: "payments-caller"}[c.Role]
	if defaultID == "" {
		return fmt.Errorf("--role %q: use direct, validator or caller", c.Role)
	}
	if c.ApplicationID == "" {
		c.ApplicationID = defaultID
	}
	if c.Guarantee == "" {
		c.Guarantee = string(exactly.ExactlyOnceV2)
		if c.Role == roleCaller {
			c.Guarantee = string(exactly.AtLeastOnce)
		}
	}
	switch exactly.Guarantee(c.Guarantee) {
	case exactly.ExactlyOnceV2, exactly.AtLeastOnce:
	default:
		return fmt.Errorf("--guarantee %q: use %s or %s", c.Guarantee, exactly.ExactlyOnceV2, exactly.AtLeastOnce)
	}
	if c.CommitInterval == 0 && c.Role == roleCaller {
		c.CommitInterval = 200 * time.Millisecond
	}
	return nil
}

// runPayments runs one pipeline instance until ctx ends.
func runPayments(ctx context.Context, c paymentsConfig) error {
	if err := c.withDefaults(); err != nil {
		return err
	}
	log := slog.Default().With("application", c.ApplicationID, "role", c.Role)
	client := &gateway.Client{BaseURL: strings.TrimRight(c.Gateway, "/"), HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: max(c.Concurrency, 2)}}}
	if c.ClientID != "" {
		client.Headers = http.Header{headerClientID: {c.ClientID}}
	}
	reg := newRegistry()
	opts := payments.Options{Gateway: client, Concurrency: c.Concurrency, Persistent: true, Retry: sideeffect.Retry{For: c.RetryFor}, Registerer: reg}
	var top *exactly.Topology
	var err error
	switch c.Role {
	case roleDirect:
		top, err = payments.DirectTopology(opts)
	case roleValidator:
		top, err = payments.ValidatorTopology(opts)
	default:
		top, err = payments.CallerTopology(opts)
	}
	if err != nil {
		return err
	}
	app, err := exactly.New(top, exactly.Config{
		Brokers:        c.Brokers,
		ApplicationID:  c.ApplicationID,
		Guarantee:      exactly.Guarantee(c.Guarantee),
		CommitInterval: c.CommitInterval,
		StateDir:       c.StateDir,
		InstanceID:     c.InstanceID,
		SessionTimeout: c.SessionTimeout,
		CreateTopics:   true,
		TLS:            c.Security.TLS,
		SASL:           c.Security.SASL,
		Registerer:     reg,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	var ln net.Listener
	var srv *httpapi.Server
	if c.HTTP != "" {
		if ln, err = net.Listen("tcp", c.HTTP); err != nil {
			return fmt.Errorf("--http %s: %w: choose a free address, or leave --http empty", c.HTTP, err)
		}
		srv = httpapi.New(httpapi.Options{Application: c.ApplicationID, Instance: c.InstanceID, Registry: reg, Ready: app.Ready(), Health: app.Healthy, Logger: log, Restores: app.Restores})
	}
	log.Info("running the payment pipeline", "brokers", strings.Join(c.Brokers, ","), "security", c.Security.String(), "gateway", c.Gateway, "guarantee", c.Guarantee, "concurrency", c.Concurrency)
	return runServing(ctx, app, srv, ln, "payments "+c.Role, log)
}
