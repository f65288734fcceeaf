package shop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/inbox"
	"github.com/exactly-go/exactly/internal/pgtest"
	"github.com/exactly-go/exactly/outbox/relay"
	"github.com/exactly-go/exactly/verify"
)

// The test binary doubles as the relay and projection processes, so the
// test can kill them with SIGKILL.
const (
	childEnv        = "EXACTLY_SHOP_CHILD" // "relay" or "projection"
	childBrokersEnv = "EXACTLY_SHOP_BROKERS"
	childDSNEnv     = "EXACTLY_SHOP_DSN"
	childStateEnv   = "EXACTLY_SHOP_STATE"
)

func TestMain(m *testing.M) {
	if child := os.Getenv(childEnv); child != "" {
		os.Exit(runChild(child))
	}
	pgtest.Main(m)
}

func runChild(child string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	brokers := strings.Split(os.Getenv(childBrokersEnv), ",")
	var err error
	switch child {
	case "relay":
		var r *relay.Relay
		r, err = relay.New(relay.Config{DSN: os.Getenv(childDSNEnv), Kafka: []kgo.Opt{kgo.SeedBrokers(brokers...)},
			StatusInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			err = r.Run(ctx)
		}
	case "projection":
		var topology *exactly.Topology
		topology, err = orders.Topology(orders.Options{InputTopic: "order.events"})
		if err == nil {
			var app *exactly.App
			app, err = exactly.New(topology, exactly.Config{
				Brokers: brokers, ApplicationID: "shop-projection", CommitInterval: 100 * time.Millisecond,
				StateDir: os.Getenv(childStateEnv), InstanceID: "projection-1",
				SessionTimeout: 2 * time.Second, RebalanceTimeout: 4 * time.Second, TransactionTimeout: 3 * time.Second,
				CreateTopics: true,
			})
			if err == nil {
				err = app.Run(ctx)
			}
		}
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", child, err)
		return 1
	}
	return 0
}

func startChild(t *testing.T, child, dsn, state string, brokers []string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+child, childDSNEnv+"="+dsn, childStateEnv+"="+state,
		childBrokersEnv+"="+strings.Join(brokers, ","))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func kill(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
}

// call sends one request, retrying while the service is unavailable, and
// decodes the answer into out.
func call(t *testing.T, method, url string, body, out any) {
	t.Helper()
	payload, _ := json.Marshal(body)
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequest(method, url, bytes.NewReader(payload))
		resp, err := http.DefaultClient.Do(req)
		if err == nil && resp.StatusCode < 300 {
			err = json.NewDecoder(resp.Body).Decode(out)
			resp.Body.Close()
			if err != nil {
				t.Errorf("%s %s: decode: %v", method, url, err)
			}
			return
		}
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				t.Errorf("%s %s: %s", method, url, resp.Status)
				return
			}
		}
		if attempt == 50 {
			t.Errorf("%s %s: gave up: %v", method, url, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestOrdersOverHTTPEndInProjectionsAndPaymentsThatMatchTheOrdersTable
// creates, fills and ships orders over HTTP while the relay and the
// projection instance are each killed with SIGKILL and restarted once. In
// the end every order's projection equals its row, and every shipped order
// was charged once, for its amount.
func TestOrdersOverHTTPEndInProjectionsAndPaymentsThatMatchTheOrdersTable(t *testing.T) {
	const n = 150
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "order.events", "payment.events"),
		kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	server := httptest.NewServer(NewService(pool).Handler())
	defer server.Close()
	relayProc := startChild(t, "relay", dsn, "", brokers)
	projectionState := t.TempDir()
	projectionProc := startChild(t, "projection", dsn, projectionState, brokers)

	payments, err := inbox.NewConsumer(inbox.ConsumerConfig{
		Inbox:     inbox.New(pool, "payments"),
		BatchSize: 20,
		Handler: func(ctx context.Context, tx pgx.Tx, r *kgo.Record) ([]byte, error) {
			return ChargePayment(ctx, tx, r.Value)
		},
		Kafka: []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumerGroup("payments"), kgo.ConsumeTopics("payment.events"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.SessionTimeout(6 * time.Second), kgo.FetchMaxWait(100 * time.Millisecond)},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	paymentsCtx, stopPayments := context.WithCancel(ctx)
	paymentsDone := make(chan error, 1)
	go func() { paymentsDone <- payments.Run(paymentsCtx) }()
	defer func() {
		stopPayments()
		if err := <-paymentsDone; !errors.Is(err, context.Canceled) {
			t.Errorf("payments consumer: %v", err)
		}
	}()

	// Clients: each order is created, given items, and shipped.
	var shipped atomic.Int64
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for i := c; i < n; i += 4 {
				id := fmt.Sprintf("o-%03d", i)
				var o Order
				call(t, "POST", server.URL+"/orders", map[string]string{"orderId": id, "customerId": fmt.Sprintf("c-%d", i%7)}, &o)
				var items []orders.LineItem
				for k := range 1 + rng.IntN(3) {
					items = append(items, orders.LineItem{SKU: fmt.Sprintf("s-%d", k), Quantity: int64(1 + rng.IntN(3)), PriceCents: int64(100 + rng.IntN(5000))})
				}
				call(t, "PUT", server.URL+"/orders/"+id+"/items", map[string]any{"items": items}, &o)
				call(t, "POST", server.URL+"/orders/"+id+"/ship", map[string]string{"trackingNumber": "track-" + id}, &o)
				shipped.Add(1)
				time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
			}
		})
	}
	waitUntil(t, func() bool { return shipped.Load() >= n/3 }, "a third of the orders shipped")
	kill(relayProc)
	t.Logf("relay killed after %d of %d orders shipped", shipped.Load(), n)
	startChild(t, "relay", dsn, "", brokers)
	waitUntil(t, func() bool { return shipped.Load() >= 2*n/3 }, "two thirds of the orders shipped")
	kill(projectionProc)
	t.Logf("projection killed after %d of %d orders shipped", shipped.Load(), n)
	startChild(t, "projection", dsn, projectionState, brokers)
	wg.Wait()
	if t.Failed() {
		return
	}

	table := readOrders(t, pool)
	if len(table) != n {
		t.Fatalf("orders table has %d rows, want %d", len(table), n)
	}
	projections := readProjections(t, brokers, table)
	for id, o := range table {
		want := orders.Projection{OrderID: o.ID, CustomerID: o.CustomerID, Status: o.Status, Items: o.Items,
			TrackingNumber: o.TrackingNumber, CreatedAt: o.CreatedAt, UpdatedAt: o.UpdatedAt, ShippedAt: o.ShippedAt,
			Version: o.Version, LastEventID: o.LastEventID}
		wantJSON, _ := json.Marshal(want)
		gotJSON, _ := json.Marshal(projections[id])
		if !bytes.Equal(wantJSON, gotJSON) {
			t.Errorf("order %s: projection %s, row %s", id, gotJSON, wantJSON)
		}
	}

	// The verifier recomputes the projections from the relayed events
	// (duplicates included) and audits the committed output.
	report, err := verify.Orders(ctx, verify.Config{Brokers: brokers, Options: orders.Options{InputTopic: "order.events"}})
	if err != nil {
		t.Fatal(err)
	}
	if !report.OK() {
		t.Errorf("verifier:\n%s", report)
	}
	t.Logf("verifier: %d relayed order events (with duplicates) for %d orders, %d projection records, %d checks held",
		report.Inputs, n, report.Outputs, len(report.Checks))

	waitUntil(t, func() bool { return countPayments(t, pool) >= n }, "every order charged")
	// Give a second charge every chance to show up before counting.
	waitUntil(t, func() bool { return outboxEmpty(t, pool) }, "the relay cleaned up the outbox")
	time.Sleep(500 * time.Millisecond)
	rows, err := pool.Query(ctx, `SELECT o.id, o.amount_cents, count(p.order_id), coalesce(sum(p.amount_cents), 0)
FROM orders o LEFT JOIN payments p ON p.order_id = o.id GROUP BY o.id, o.amount_cents`)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	var amount, charges, charged int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &amount, &charges, &charged}, func() error {
		if charges != 1 || charged != amount {
			t.Errorf("order %s of %d cents: %d charges for %d cents, want one for the amount", id, amount, charges, charged)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if total := countPayments(t, pool); total != n {
		t.Errorf("payments rows = %d, want %d", total, n)
	}
}

func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readOrders(t *testing.T, pool *pgxpool.Pool) map[string]Order {
	t.Helper()
	ctx := context.Background()
	ids, err := pgx.CollectRows(must(pool.Query(ctx, `SELECT id FROM orders`)), pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	table := map[string]Order{}
	for _, id := range ids {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			o, err := ReadOrder(ctx, tx, id, false)
			table[id] = o
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return table
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// readProjections reads order-projections (read_committed) until every
// order's latest projection has caught up with its row's version.
func readProjections(t *testing.T, brokers []string, table map[string]Order) map[string]orders.Projection {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(orders.DefaultOutputTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	latest := map[string]orders.Projection{}
	caughtUp := func() bool {
		for id, o := range table {
			if latest[id].Version != o.Version || latest[id].LastEventID != o.LastEventID {
				return false
			}
		}
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for !caughtUp() {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			behind := 0
			for id, o := range table {
				if latest[id].Version != o.Version {
					behind++
				}
			}
			t.Fatalf("%d of %d projections behind their rows after 120s", behind, len(table))
		}
		fetches.EachRecord(func(r *kgo.Record) {
			var p orders.Projection
			if err := json.Unmarshal(r.Value, &p); err != nil {
				t.Errorf("projection %s: %v", r.Key, err)
				return
			}
			latest[string(r.Key)] = p
		})
	}
	return latest
}

func countPayments(t *testing.T, pool *pgxpool.Pool) int {
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM payments`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func outboxEmpty(t *testing.T, pool *pgxpool.Pool) bool {
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 0
}
