package payments_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/payments"
	"github.com/exactly-go/exactly/examples/payments/gateway"
	"github.com/exactly-go/exactly/processors/sideeffect"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/exactly-go/exactly/verify"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// cluster starts a broker with the payments topics.
func cluster(t *testing.T, partitions int32) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond),
		kfake.SeedTopics(partitions, payments.DefaultInputTopic, payments.DefaultOutputTopic, payments.DefaultPendingTopic, payments.DefaultDeadLetterTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func produce(t *testing.T, brokers []string, recs []payments.InputRecord) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	batch := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		batch[i] = &kgo.Record{Topic: payments.DefaultInputTopic, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
	}
	if err := cl.ProduceSync(context.Background(), batch...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// run runs a topology as an application until the test ends.
func run(t *testing.T, brokers []string, top *exactly.Topology, appID string, g exactly.Guarantee) {
	t.Helper()
	app, err := exactly.New(top, exactly.Config{
		Brokers: brokers, ApplicationID: appID, Guarantee: g, StateDir: t.TempDir(),
		CommitInterval: 50 * time.Millisecond, SessionTimeout: time.Second, RebalanceTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Run(context.Background()) }()
	t.Cleanup(func() {
		app.Close()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", appID, err)
		}
	})
}

// audit waits until every order is reported or dead-lettered, then audits.
func audit(t *testing.T, brokers []string, input []payments.InputRecord, gw *gateway.Server, declineRate float64) *verify.PaymentsReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	for {
		rep, err := verify.Payments(ctx, verify.PaymentsConfig{Brokers: brokers, Input: input, Charges: gw.Charges(), DeclineRate: declineRate})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Done() {
			return rep
		}
		if ctx.Err() != nil {
			t.Fatalf("not every order was processed in time: %+v", rep)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestPipelinesChargeEveryOrderOnceThroughARealGateway(t *testing.T) {
	const declineRate = 0.05
	for _, shape := range []string{"direct", "outbox-split"} {
		t.Run(shape, func(t *testing.T) {
			brokers := cluster(t, 3)
			gw, err := gateway.Start("127.0.0.1:0", gateway.Options{Latency: time.Millisecond, TransientRate: 0.1, DeclineRate: declineRate, Seed: 3})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { gw.Close() })
			opts := payments.Options{
				Gateway: &gateway.Client{BaseURL: gw.URL}, Concurrency: 4,
				Retry: sideeffect.Retry{Initial: 5 * time.Millisecond},
			}
			input := payments.Generate(payments.DefaultGenerateOptions(7, 300))
			produce(t, brokers, input)
			if shape == "direct" {
				top, err := payments.DirectTopology(opts)
				if err != nil {
					t.Fatal(err)
				}
				run(t, brokers, top, "payments", exactly.ExactlyOnceV2)
			} else {
				validator, err := payments.ValidatorTopology(opts)
				if err != nil {
					t.Fatal(err)
				}
				caller, err := payments.CallerTopology(opts)
				if err != nil {
					t.Fatal(err)
				}
				run(t, brokers, validator, "payments-validator", exactly.ExactlyOnceV2)
				run(t, brokers, caller, "payments-caller", exactly.AtLeastOnce)
			}
			rep := audit(t, brokers, input, gw, declineRate)
			if !rep.OK(true) {
				t.Errorf("audit failed: %+v", rep)
			}
			if rep.Declined == 0 || rep.Malformed == 0 || gw.Stats().Transient == 0 {
				t.Errorf("the run exercised no decline, malformed record or transient failure: %+v, %+v", rep, gw.Stats())
			}
			t.Logf("%s: %d orders, %d charges, %d transient failures retried, dead letters %v", shape, rep.Orders, rep.Charges, gw.Stats().Transient, rep.DeadLetters)
		})
	}
}

// TestCallsRunConcurrencyAtOnceOnKafka runs the direct pipeline on one
// partition against a gateway that holds each call until Concurrency calls
// are under way: with Concurrency 8 it sees 8 at once and never more, with
// Concurrency 1 one at a time, and every order is charged once. Attempts
// outlast the gateway's hold, so no abandoned call is counted.
func TestCallsRunConcurrencyAtOnceOnKafka(t *testing.T) {
	const orders = 60
	for _, c := range []int{1, 8} {
		brokers := cluster(t, 1)
		gw, err := gateway.Start("127.0.0.1:0", gateway.Options{HoldUntilInFlight: c})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { gw.Close() })
		input := payments.Generate(payments.GenerateOptions{Seed: 1, Orders: orders, Start: time.UnixMilli(1732260000000)})
		produce(t, brokers, input)
		client := &gateway.Client{BaseURL: gw.URL, HTTP: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c}}}
		top, err := payments.DirectTopology(payments.Options{Gateway: client, Concurrency: c, Retry: sideeffect.Retry{AttemptTimeout: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		run(t, brokers, top, fmt.Sprintf("payments-%d", c), exactly.ExactlyOnceV2)
		if rep := audit(t, brokers, input, gw, 0); !rep.OK(true) {
			t.Fatalf("concurrency %d: audit failed: %+v", c, rep)
		}
		if got := gw.Stats().MaxInFlight; got != c {
			t.Errorf("concurrency %d: the gateway saw at most %d calls at once, want %d", c, got, c)
		}
	}
}

// TestValidatorForwardsEachOrderOnce runs the validator in the test driver:
// redelivered and resent orders reach pending-api-calls once, unusable
// records go to the dead-letter topic with their reason.
func TestValidatorForwardsEachOrderOnce(t *testing.T) {
	top, err := payments.ValidatorTopology(payments.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, testdriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	input := payments.Generate(payments.DefaultGenerateOptions(2, 200))
	for _, r := range input {
		if err := d.PipeBytes(payments.DefaultInputTopic, r.Key, r.Value, r.Timestamp); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []string{`{"eventId":"e-x","amountCents":5,"currency":"EUR"}`, `{"eventId":"e-y","orderId":"o-y","amountCents":0,"currency":"EUR"}`} {
		if err := d.PipeBytes(payments.DefaultInputTopic, []byte("x"), []byte(bad), time.UnixMilli(1732260000000)); err != nil {
			t.Fatal(err)
		}
	}
	pending, err := testdriver.CreateOutputTopic(d, payments.DefaultPendingTopic, serde.String, serde.JSON[payments.PaymentOrder]()).ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range pending {
		seen[r.Value.OrderID]++
	}
	rep := verify.AuditPayments(input, nil, nil, nil, 0)
	if len(pending) != rep.Orders || len(seen) != rep.Orders {
		t.Fatalf("%d pending records for %d orders, want one for each of %d", len(pending), len(seen), rep.Orders)
	}
	dls, err := testdriver.CreateOutputTopic(d, payments.DefaultDeadLetterTopic, serde.Bytes, serde.Bytes).ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int{}
	for _, r := range dls {
		for _, h := range r.Headers {
			if h.Key == exactly.HeaderErrorReason {
				reasons[string(h.Value)]++
			}
		}
	}
	want := map[string]int{payments.ReasonMalformed: rep.Malformed, payments.ReasonMissingField: 1, payments.ReasonInvalidAmount: 1}
	if fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Fatalf("dead letters by reason %v, want %v", reasons, want)
	}
}
