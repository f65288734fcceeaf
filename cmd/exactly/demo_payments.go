package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/examples/payments"
	"github.com/exactly-go/exactly/examples/payments/gateway"
	"github.com/exactly-go/exactly/internal/feed"
	"github.com/exactly-go/exactly/internal/fleet"
	"github.com/exactly-go/exactly/internal/progress"
	"github.com/exactly-go/exactly/verify"
)

const (
	pipelineDirect = "direct"
	pipelineOutbox = "outbox"
)

type paymentsDemoOptions struct {
	orders          int
	partitions      int32
	instances       int
	kills           int
	seed            uint64
	duration        time.Duration
	pipeline        string
	ignoreKeys      bool
	latency         time.Duration
	transientRate   float64
	declineRate     float64
	concurrency     int
	callerGuarantee string
	timeout         time.Duration
}

func newDemoPaymentsCommand() *cobra.Command {
	var o paymentsDemoOptions
	cmd := &cobra.Command{
		Use:   "payments",
		Short: "Charge payment orders through a gateway simulator while killing the pipeline mid-call, and count the charges",
		Long: `Starts an embedded Kafka-protocol broker, a payment gateway simulator (HTTP, on
loopback) and the payment pipeline in several processes, then sends a stream
of payment orders with redeliveries, resent orders and malformed records.
Right after the gateway has charged an order, and before the process that
asked has heard back (so before its transaction can commit), that process
is killed with SIGKILL, --kills times, and restarted. Its order comes back
to it, uncommitted, and it calls again with the same idempotency key.

At the end the report counts orders, charges, duplicate charges and dead
letters by reason, and checks payments-processed (read_committed).

--pipeline direct  one exactly_once_v2 application calls the gateway
--pipeline outbox  an exactly_once_v2 validator forwards each order once to
                   pending-api-calls; a separate caller application
                   (--caller-guarantee, at_least_once by default) calls.
                   Every other kill also kills the validator, and
                   pending-api-calls must still hold one record per order.

With --gateway-ignores-keys the gateway charges every request: the report
then shows the double charges the crashes cause, the failure no stream
processor can prevent without the external system's help.

Exit status 0 only if every valid order was charged exactly once.`,
		Example: "  exactly demo payments\n  exactly demo payments --pipeline outbox\n  exactly demo payments --gateway-ignores-keys",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPaymentsDemo(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.orders, "orders", 400, "payment orders to generate")
	f.Int32Var(&o.partitions, "partitions", 4, "partitions of the payment topics")
	f.IntVar(&o.instances, "instances", 2, "pipeline processes that call the gateway")
	f.IntVar(&o.kills, "kills", 10, "SIGKILLs to deliver, each right after a charge")
	f.Uint64Var(&o.seed, "seed", 1, "seed of the generated stream and the gateway's failures")
	f.DurationVar(&o.duration, "duration", 6*time.Second, "how long the producer takes to send the stream")
	f.StringVar(&o.pipeline, "pipeline", pipelineDirect, "direct or outbox")
	f.BoolVar(&o.ignoreKeys, "gateway-ignores-keys", false, "make the gateway ignore idempotency keys, to see what crashes then cost")
	f.DurationVar(&o.latency, "latency", 5*time.Millisecond, "gateway latency per charge")
	f.Float64Var(&o.transientRate, "transient-rate", 0.05, "share of charge requests the gateway answers 503")
	f.Float64Var(&o.declineRate, "decline-rate", 0.03, "share of orders the gateway declines (402)")
	f.IntVar(&o.concurrency, "concurrency", 4, "gateway calls per task at once")
	f.StringVar(&o.callerGuarantee, "caller-guarantee", "at_least_once", "guarantee of the outbox caller (at_least_once, exactly_once_v2)")
	f.DurationVar(&o.timeout, "timeout", 100*time.Second, "give up if the pipeline has not handled every order by then")
	return cmd
}

func runPaymentsDemo(ctx context.Context, out io.Writer, o paymentsDemoOptions) error {
	if o.orders < 1 || o.instances < 1 || o.partitions < 1 || o.kills < 0 || o.concurrency < 1 {
		return errors.New("--orders, --instances, --partitions and --concurrency must be positive, --kills not negative")
	}
	if o.pipeline != pipelineDirect && o.pipeline != pipelineOutbox {
		return fmt.Errorf("--pipeline %q: use direct or outbox", o.pipeline)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this program to start pipeline processes: %w", err)
	}
	dir, err := os.MkdirTemp("", "exactly-payments-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	cluster, err := startBroker("127.0.0.1:0", 1, "", false, o.partitions,
		[]string{payments.DefaultInputTopic, payments.DefaultOutputTopic, payments.DefaultPendingTopic, payments.DefaultDeadLetterTopic})
	if err != nil {
		return err
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	procs := &fleet.Fleet{}
	defer procs.Close(stopGrace)
	kills := &killPlan{target: o.kills, every: max(1, o.orders/(2*max(1, o.kills)))}
	if o.pipeline == pipelineOutbox {
		kills.validator = "validator-0"
	}
	gw, err := gateway.Start("127.0.0.1:0", gateway.Options{
		IgnoreKeys:    o.ignoreKeys,
		Latency:       o.latency,
		TransientRate: o.transientRate,
		DeclineRate:   o.declineRate,
		Seed:          o.seed,
		File:          filepath.Join(dir, "charges.jsonl"),
		AfterCharge: func(r *http.Request, _ gateway.Charge) {
			if name := r.Header.Get(headerClientID); kills.due() {
				if !procs.Kill(name) {
					kills.unclaim()
					return
				}
				kills.killed(procs, name)
			}
		},
	})
	if err != nil {
		return err
	}
	defer gw.Close()

	input := payments.Generate(payments.DefaultGenerateOptions(o.seed, o.orders))
	printPaymentsSetup(out, o, brokers, gw.URL, input, dir)
	httpAddrs, err := planPayments(procs, exe, dir, o, brokers, gw.URL)
	if err != nil {
		return err
	}
	for _, name := range procs.Names() {
		if err := procs.Start(name); err != nil {
			return err
		}
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(2*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	produced := make(chan error, 1)
	stream := make([]*kgo.Record, len(input))
	for i, r := range input {
		stream[i] = &kgo.Record{Topic: payments.DefaultInputTopic, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
	}
	go func() {
		_, err := feed.Paced(ctx, cl, stream, o.duration, 40, nil)
		produced <- err
	}()

	readOpts := []kgo.Opt{kgo.SeedBrokers(brokers...)}
	bar := progress.New(out, "committed", int64(o.orders))
	deadline := time.Now().Add(o.timeout)
	producing := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-produced:
			if err != nil {
				return fmt.Errorf("produce the payment orders: %w", err)
			}
			producing = false
		case <-time.After(300 * time.Millisecond):
		}
		rep, err := auditPayments(ctx, brokers, input, gw, o.declineRate)
		if err != nil {
			return err
		}
		done := rep.ProcessedOrders + rep.Declined
		bar.Set(int64(min(done, o.orders)), fmt.Sprintf("%d kills so far", kills.count()))
		if !producing && done >= rep.Orders && kills.finished() {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the pipeline handled %d of %d orders in %v (%d kills): see the logs in %s", done, rep.Orders, o.timeout, kills.count(), dir)
		}
	}
	bar.Finish()
	kills.wait()
	metricsSeen := scrapeMetrics(ctx, httpAddrs, paymentsDemoMetrics)
	procs.Close(stopGrace)

	rep, err := auditPayments(ctx, brokers, input, gw, o.declineRate)
	if err != nil {
		return err
	}
	strict := o.pipeline == pipelineDirect || o.callerGuarantee == "exactly_once_v2"
	err = printPaymentsReport(out, o, rep, gw.Stats(), kills.count(), len(procs.Exited()), strict)
	if o.pipeline == pipelineOutbox {
		if perr := reportPending(ctx, out, readOpts, kills); perr != nil && err == nil {
			err = perr
		}
	}
	fmt.Fprintf(out, "metrics on /metrics during the run: %s\n", strings.Join(metricsSeen, ", "))
	return err
}

// reportPending checks the outbox validator's output: pending-api-calls,
// read_committed, must hold exactly one record per order, however often the
// validator was killed.
func reportPending(ctx context.Context, out io.Writer, opts []kgo.Opt, kills *killPlan) error {
	recs, err := verify.ReadCommitted(ctx, opts, payments.DefaultPendingTopic)
	if err != nil {
		return err
	}
	perOrder := map[string]int{}
	for _, r := range recs {
		perOrder[string(r.Key)]++
	}
	repeated := len(recs) - len(perOrder)
	kills.mu.Lock()
	validatorKills := kills.validatorKills
	kills.mu.Unlock()
	fmt.Fprintf(out, "validator: killed %d times with SIGKILL; %s holds %d records for %d orders (%d repeated)\n",
		validatorKills, payments.DefaultPendingTopic, len(recs), len(perOrder), repeated)
	if repeated > 0 {
		return &exitError{code: 1, err: fmt.Errorf("the exactly_once_v2 validator wrote %d orders to %s more than once", repeated, payments.DefaultPendingTopic)}
	}
	return nil
}

// paymentsDemoMetrics are the metrics the demo shows are exported while it
// runs.
var paymentsDemoMetrics = []string{"sideeffect_calls_total", "sideeffect_retries_total", "sideeffect_skipped_total", "sideeffect_dead_letters_total", "sideeffect_call_duration_seconds_count", "exactly_records_processed_total"}

func auditPayments(ctx context.Context, brokers []string, input []payments.InputRecord, gw *gateway.Server, declineRate float64) (*verify.PaymentsReport, error) {
	return verify.Payments(ctx, verify.PaymentsConfig{Brokers: brokers, Input: input, Charges: gw.Charges(), DeclineRate: declineRate, Timeout: 20 * time.Second})
}

func printPaymentsSetup(out io.Writer, o paymentsDemoOptions, brokers []string, gatewayURL string, input []payments.InputRecord, dir string) {
	mode := "honours idempotency keys"
	if o.ignoreKeys {
		mode = "IGNORES idempotency keys"
	}
	events, orders := map[string]bool{}, map[string]map[string]bool{}
	redelivered, malformed := 0, 0
	for _, r := range input {
		p, _, err := payments.Decode(r.Value)
		if err != nil {
			malformed++
			continue
		}
		if events[p.EventID] {
			redelivered++
		}
		events[p.EventID] = true
		if orders[p.OrderID] == nil {
			orders[p.OrderID] = map[string]bool{}
		}
		orders[p.OrderID][p.EventID] = true
	}
	resent := 0
	for _, ids := range orders {
		resent += len(ids) - 1
	}
	fmt.Fprintf(out, "broker      %s (any Kafka client can connect)\n", strings.Join(brokers, ","))
	fmt.Fprintf(out, "gateway     %s: %s; %v per charge, %.0f%% of requests 503, %.0f%% of orders declined (402)\n",
		gatewayURL, mode, o.latency, 100*o.transientRate, 100*o.declineRate)
	fmt.Fprintf(out, "stream      %d records for %d payment orders: %d redelivered events, %d orders resent with a new event id, %d malformed\n",
		len(input), len(orders), redelivered, resent, malformed)
	if o.pipeline == pipelineDirect {
		fmt.Fprintf(out, "pipeline    direct: %d processes under exactly_once_v2, %d gateway calls at once per task\n", o.instances, o.concurrency)
	} else {
		fmt.Fprintf(out, "pipeline    outbox split: 1 validator (exactly_once_v2) -> %s -> %d callers (%s), %d gateway calls at once per task\n",
			payments.DefaultPendingTopic, o.instances, o.callerGuarantee, o.concurrency)
	}
	fmt.Fprintf(out, "kills       %d SIGKILLs, each right after the gateway charged and before the caller heard back\n", o.kills)
	fmt.Fprintf(out, "logs        %s\n\n", dir)
}

func printPaymentsReport(out io.Writer, o paymentsDemoOptions, rep *verify.PaymentsReport, st gateway.Stats, kills, failures int, strict bool) error {
	fmt.Fprintf(out, "\nwhat happened\n")
	fmt.Fprintf(out, "  processes killed with SIGKILL  %d (each between a charge and its commit)\n", kills)
	if failures > 0 {
		fmt.Fprintf(out, "  processes that exited on their own %d (see their logs)\n", failures)
	}
	fmt.Fprintf(out, "  gateway requests               %d: %d answered from an idempotency record, %d transient 503s, %d declined\n",
		st.Requests, st.Replays, st.Transient, st.Declined)
	rep.Print(out)
	if !strict && rep.RepeatedRecords > 0 {
		fmt.Fprintf(out, "  (repeated payments-processed records come from the at-least-once caller; each names the order's one charge)\n")
	}
	fmt.Fprintln(out)
	switch {
	case o.ignoreKeys && rep.DuplicateCharges > 0:
		fmt.Fprintf(out, `DOUBLE CHARGES: %d orders were charged more than once (%d extra charges).
Each kill struck after the gateway had charged and before the Kafka transaction
recording it could commit. The transaction aborted, as it must; the restarted
process found no record of the charge, called again with the same idempotency
key, and this gateway, which ignores keys, charged again. Kafka's exactly-once
ends at Kafka: only an external system that honours the idempotency key makes
the repeated call harmless.
`, len(rep.DoubleCharged), rep.DuplicateCharges)
		return &exitError{code: 1, err: fmt.Errorf("%d duplicate charges: the gateway ignores idempotency keys", rep.DuplicateCharges)}
	case rep.OK(strict):
		fmt.Fprintf(out, "OK: every valid order charged exactly once despite %d kills between charge and commit;\n"+
			"the gateway answered %d repeated calls with the first charge instead of charging again.\n", kills, st.Replays)
		return nil
	default:
		fmt.Fprintf(out, "FAILED\n")
		return &exitError{code: 1, err: errors.New("payments audit failed")}
	}
}

// killPlan decides which charges are followed by a SIGKILL of the process
// that asked for them: one every `every` charges, target in all.
type killPlan struct {
	target, every int
	validator     string // the outbox validator's process name, or ""

	mu             sync.Mutex
	charges        int
	kills          int
	validatorKills int
	restarts       sync.WaitGroup
}

// due counts a charge and claims a kill when one is due, so that
// concurrent charges never claim more kills than the target.
func (k *killPlan) due() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.charges++
	if k.kills < k.target && k.charges%k.every == 0 {
		k.kills++
		return true
	}
	return false
}

// unclaim gives back a kill that could not be delivered.
func (k *killPlan) unclaim() {
	k.mu.Lock()
	k.kills--
	k.mu.Unlock()
}

// killed restarts the process killed for a claimed kill after a pause.
// Every other kill also kills the validator, if there is one: it is then
// as likely as not in the middle of a transaction.
func (k *killPlan) killed(f *fleet.Fleet, name string) {
	k.mu.Lock()
	alsoValidator := k.validator != "" && k.kills%2 == 0
	k.mu.Unlock()
	k.restartLater(f, name)
	if alsoValidator && f.Kill(k.validator) {
		k.mu.Lock()
		k.validatorKills++
		k.mu.Unlock()
		k.restartLater(f, k.validator)
	}
}

func (k *killPlan) restartLater(f *fleet.Fleet, name string) {
	k.restarts.Go(func() {
		time.Sleep(300 * time.Millisecond)
		f.Start(name)
	})
}

func (k *killPlan) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.kills
}

func (k *killPlan) finished() bool { return k.count() >= k.target }

// wait waits for the restarts under way.
func (k *killPlan) wait() { k.restarts.Wait() }

// planPayments defines the processes of the pipeline and their arguments;
// it returns their HTTP addresses.
func planPayments(f *fleet.Fleet, exe, dir string, o paymentsDemoOptions, brokers []string, gatewayURL string) ([]string, error) {
	var err error
	var httpAddrs []string
	add := func(name, role, guarantee string) {
		addr, lerr := fleet.FreeLoopbackAddr()
		if lerr != nil {
			err = lerr
			return
		}
		httpAddrs = append(httpAddrs, addr)
		f.Set(name, fleet.Spec{Path: exe, Log: filepath.Join(dir, name+".log"), Args: []string{"payments",
			"--http", addr,
			"--role", role,
			"--brokers", strings.Join(brokers, ","),
			"--gateway", gatewayURL,
			"--guarantee", guarantee,
			"--state-dir", filepath.Join(dir, "state-"+name),
			"--instance-id", name,
			"--client-id", name,
			"--concurrency", strconv.Itoa(o.concurrency),
			"--session-timeout", "3s",
			"--log-level", "warn",
		}})
	}
	if o.pipeline == pipelineDirect {
		for i := range o.instances {
			add(fmt.Sprintf("direct-%d", i), roleDirect, "exactly_once_v2")
		}
		return httpAddrs, err
	}
	add("validator-0", roleValidator, "exactly_once_v2")
	for i := range o.instances {
		add(fmt.Sprintf("caller-%d", i), roleCaller, o.callerGuarantee)
	}
	return httpAddrs, err
}
