package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactly-go/exactly/cmd/exactly/internal/httpapi"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/httpquery"
	"github.com/exactly-go/exactly/internal/fleet"
)

// TestRunOrdersServesProjectionsMetricsAndStatus runs `exactly run orders`
// against an in-process broker, produces one order's events (with a
// duplicate, an orphan and a malformed record) in the wire format of the
// specification, and checks the HTTP endpoints: readiness, the order's
// projection, 404 for an unknown order, the metrics and the status JSON.
func TestRunOrdersServesProjectionsMetricsAndStatus(t *testing.T) {
	brokers := newBroker(t).ListenAddrs()
	c := testRunOrdersConfig(t, brokers, 2)
	base, _ := startRunOrders(t, c)
	waitReady(t, base)
	if status, _ := get(t, base+"/healthz"); status != http.StatusOK {
		t.Fatalf("/healthz = %d; want 200", status)
	}

	const ts = 1732260000000
	updated := fmt.Sprintf(`{"metadata":{"eventId":"e-2","traceId":"t-1","timestamp":%d},"type":"OrderUpdated","payload":{"orderId":"o-1","items":[{"sku":"s-1","quantity":2,"priceCents":1299}],"updatedAt":%d}}`, ts+1000, ts+1000)
	produce(t, brokers, c.InputTopic,
		[2]string{"o-1", fmt.Sprintf(`{"metadata":{"eventId":"e-1","traceId":"t-1","timestamp":%d},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c-1","createdAt":%d}}`, ts, ts)},
		[2]string{"o-1", updated},
		[2]string{"o-1", updated}, // a duplicate: skipped
		[2]string{"o-1", fmt.Sprintf(`{"metadata":{"eventId":"e-3","traceId":"t-1","timestamp":%d},"type":"OrderShipped","payload":{"orderId":"o-1","trackingNumber":"tn-1","shippedAt":%d}}`, ts+2000, ts+2000)},
		[2]string{"o-2", fmt.Sprintf(`{"metadata":{"eventId":"e-4","timestamp":%d},"type":"OrderUpdated","payload":{"orderId":"o-2","items":[],"updatedAt":%d}}`, ts, ts)}, // an orphan: buffered
		[2]string{"o-3", `{"metadata": not json`}, // malformed: dead-lettered
	)

	want := orders.Projection{
		OrderID: "o-1", CustomerID: "c-1", Status: orders.StatusShipped,
		Items:          []orders.LineItem{{SKU: "s-1", Quantity: 2, PriceCents: 1299}},
		TrackingNumber: "tn-1", CreatedAt: ts, UpdatedAt: ts + 1000, ShippedAt: ts + 2000,
		Version: 3, LastEventID: "e-3",
	}
	var got orders.Projection
	waitFor(t, 15*time.Second, "GET /orders/o-1 to show version 3", func() bool {
		status, body := get(t, base+"/orders/o-1")
		if status != http.StatusOK {
			return false
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("GET /orders/o-1: %v in %s", err, body)
		}
		return got.Version == 3
	})
	if gotJSON, wantJSON := mustJSON(t, got), mustJSON(t, want); gotJSON != wantJSON {
		t.Errorf("GET /orders/o-1 = %s\nwant %s", gotJSON, wantJSON)
	}

	status, body := get(t, base+"/orders/o-unknown")
	var notFound map[string]any
	if status != http.StatusNotFound || json.Unmarshal([]byte(body), &notFound) != nil || notFound["error"] == nil {
		t.Errorf("GET /orders/o-unknown = %d %s; want 404 with a JSON error", status, body)
	}

	status, metrics := get(t, base+"/metrics")
	for _, name := range []string{"exactly_records_processed_total", `duplicates_skipped_total{processor="dedup"} 1`, `buffer_size{processor="reorder"} 1`, "go_goroutines"} {
		if status != http.StatusOK || !strings.Contains(metrics, name) {
			t.Errorf("/metrics (status %d) lacks %q", status, name)
		}
	}

	var st httpapi.Status
	waitFor(t, 5*time.Second, "/status.json to count the dead letter", func() bool {
		status, body := get(t, base+"/status.json")
		if status != http.StatusOK {
			t.Fatalf("/status.json = %d", status)
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("/status.json: %v in %s", err, body)
		}
		return st.Totals.DeadLettersByTopic[c.DLQTopic] == 1
	})
	if !st.Ready || st.Application != "orders" || st.Totals.Processed < 6 || st.Totals.DuplicatesSkipped != 1 || st.Totals.BufferSize != 1 {
		t.Errorf("/status.json = %+v; want ready, application orders, ≥6 processed, 1 duplicate, 1 buffered", st)
	}
	if status, page := get(t, base+"/"); status != http.StatusOK || !strings.Contains(page, "/status.json") {
		t.Errorf("GET / = %d; want the status page polling /status.json", status)
	}
}

// TestRunOrdersFlagsAreTheDocumentedContract checks the flags and defaults
// of `exactly run orders` that other processes (the demo) rely on.
func TestRunOrdersFlagsAreTheDocumentedContract(t *testing.T) {
	cmd := newRunOrdersCommand()
	want := map[string]string{
		"brokers": "[]", "application-id": "orders", "guarantee": "exactly_once_v2", "commit-interval": "0s",
		"instance-id": "", "http": "127.0.0.1:8080", "partitions": "4", "create-topics": "true",
		"input-topic": "order-events", "output-topic": "order-projections", "dlq-topic": "order-events-dlq",
		"session-timeout": "10s", "persistent": "true", "application-server": "", "standby-replicas": "0",
	}
	for name, def := range want {
		f := cmd.Flags().Lookup(name)
		if f == nil {
			t.Errorf("--%s is missing", name)
			continue
		}
		if f.DefValue != def {
			t.Errorf("--%s defaults to %q; want %q", name, f.DefValue, def)
		}
	}
	if f := cmd.Flags().Lookup("state-dir"); f == nil || f.DefValue == "" {
		t.Error("--state-dir is missing or has no default")
	}
	if cmd.Short == "" || cmd.Long == "" || cmd.Example == "" {
		t.Error("run orders lacks Short, Long or Example")
	}
}

// TestRunOrdersRejectsBadFlagsSayingWhatToDo checks configuration errors
// before anything connects.
func TestRunOrdersRejectsBadFlagsSayingWhatToDo(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*runOrdersConfig)
		want   string
	}{
		{"no brokers", func(c *runOrdersConfig) { c.Brokers = nil }, "--brokers is required"},
		{"unknown guarantee", func(c *runOrdersConfig) { c.Guarantee = "exactly_once" }, "use exactly_once_v2 or at_least_once"},
		{"no partitions", func(c *runOrdersConfig) { c.Partitions = 0 }, "positive partition count"},
		{"negative standbys", func(c *runOrdersConfig) { c.StandbyReplicas = -1 }, "give 0 for none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultRunOrdersConfig()
			c.Brokers = []string{"127.0.0.1:1"}
			tc.modify(&c)
			err := runOrders(context.Background(), c, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("runOrders = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func produce(t *testing.T, brokers []string, topic string, records ...[2]string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var rs []*kgo.Record
	for _, r := range records {
		rs = append(rs, &kgo.Record{Key: []byte(r[0]), Value: []byte(r[1])})
	}
	if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// newBroker starts an in-process broker that lets the tests' short
// session timeouts through; it closes when the test ends.
func newBroker(t *testing.T) *kfake.Cluster {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	return cluster
}

// testRunOrdersConfig is `exactly run orders` as the tests run it: on
// brokers, with partitions input partitions, a state directory of its own,
// HTTP on a free loopback port, and commits and session timeout short
// enough for a test.
func testRunOrdersConfig(t *testing.T, brokers []string, partitions int32) runOrdersConfig {
	c := defaultRunOrdersConfig()
	c.Brokers, c.StateDir, c.HTTP, c.Partitions = brokers, t.TempDir(), "127.0.0.1:0", partitions
	c.CommitInterval, c.SessionTimeout = 50*time.Millisecond, time.Second
	return c
}

// startRunOrders runs `exactly run orders` with c. It returns once the
// HTTP server listens, with its base URL ("" when c.HTTP is ""), and fails
// the test if the run ends before. stop cancels the run and returns what
// it returned (nil for a clean stop); a run the test did not stop is
// stopped when the test ends, and an error it returns fails the test.
func startRunOrders(t *testing.T, c runOrdersConfig) (base string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- runOrders(ctx, c, func(a net.Addr) { addrs <- a }) }()
	var once sync.Once
	var runErr error
	halt := func() {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(15 * time.Second):
				runErr = errors.New("did not stop within 15s of cancel")
			}
		})
	}
	stoppedByTest := false
	stop = func() error {
		halt()
		stoppedByTest = true
		return runErr
	}
	t.Cleanup(func() {
		halt()
		if !stoppedByTest && runErr != nil {
			t.Errorf("run orders: %v", runErr)
		}
	})
	if c.HTTP == "" {
		return "", stop
	}
	select {
	case a := <-addrs:
		return "http://" + a.String(), stop
	case err := <-done:
		t.Fatalf("run orders: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("run orders did not listen within 30s")
	}
	return "", nil
}

// waitReady waits until the instance at base answers /readyz with 200.
func waitReady(t *testing.T, base string) {
	t.Helper()
	waitFor(t, 30*time.Second, "/readyz to answer 200", func() bool {
		status, _ := get(t, base+"/readyz")
		return status == http.StatusOK
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTwoRunOrdersProcessesAnswerEveryOrderFromEither runs `exactly run
// orders` as two processes with --application-server set. While the second
// one restores a partition (its changelog fetches are held back), the
// orders of that partition answer 503 with Retry-After on both instances;
// then every order answers 200 with its projection on both (one of them
// forwards to the other), an unknown order 404, and the queries send no
// DescribeGroups to the broker.
func TestTwoRunOrdersProcessesAnswerEveryOrderFromEither(t *testing.T) {
	t.Setenv("EXACTLYTEST_AS_COMMAND", "1")
	c := newBroker(t)
	brokers := c.ListenAddrs()
	var describes atomic.Int64
	c.ControlKey(int16(kmsg.DescribeGroups), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		describes.Add(1)
		return nil, nil, false
	})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const partitions = 4
	dir := t.TempDir()
	procs := &fleet.Fleet{}
	defer procs.Close(10 * time.Second)
	bases := map[string]string{}
	for _, id := range []string{"a", "b"} {
		addr, err := fleet.FreeLoopbackAddr()
		if err != nil {
			t.Fatal(err)
		}
		bases[id] = "http://" + addr
		procs.Set(id, fleet.Spec{Path: exe, Log: filepath.Join(dir, id+".log"), Args: []string{"run", "orders",
			"--brokers", strings.Join(brokers, ","), "--state-dir", filepath.Join(dir, "state-"+id), "--instance-id", id,
			"--partitions", strconv.Itoa(partitions), "--commit-interval", "50ms", "--session-timeout", "2s",
			"--http", addr, "--application-server", addr,
		}})
	}
	defer func() {
		if t.Failed() {
			for _, id := range []string{"a", "b"} {
				log, _ := os.ReadFile(filepath.Join(dir, id+".log"))
				t.Logf("log of instance %s:\n%s", id, log)
			}
		}
	}()
	if err := procs.Start("a"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "instance a to be ready", func() bool {
		status, _ := get(t, bases["a"]+"/readyz")
		return status == http.StatusOK
	})
	var ids []string
	var records [][2]string
	for i := range 12 {
		id := fmt.Sprintf("o-%d", i)
		ids = append(ids, id)
		records = append(records, [2]string{id, fmt.Sprintf(`{"metadata":{"eventId":"e-%d","timestamp":1732260000000},"type":"OrderCreated","payload":{"orderId":"%s","customerId":"c-%d","createdAt":1732260000000}}`, i, id, i)})
	}
	produce(t, brokers, orders.DefaultInputTopic, records...)
	answers := func(base, id string) bool {
		status, body := get(t, base+"/orders/"+id)
		var p orders.Projection
		return status == http.StatusOK && json.Unmarshal([]byte(body), &p) == nil && p.OrderID == id && p.CustomerID == "c-"+strings.TrimPrefix(id, "o-")
	}
	waitFor(t, 30*time.Second, "instance a to answer every order", func() bool {
		for _, id := range ids {
			if !answers(bases["a"], id) {
				return false
			}
		}
		return true
	})

	// Instance b's restore waits while this is open.
	release := make(chan struct{})
	var releaseOnce sync.Once
	restoreHeld := func() { releaseOnce.Do(func() { close(release) }) }
	defer restoreHeld()
	changelog := "orders-" + orders.ProjectionStore + "-changelog"
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, rt := range req.(*kmsg.FetchRequest).Topics {
			if rt.Topic == changelog || rt.TopicID == c.TopicInfo(changelog).TopicID {
				c.SleepControl(func() { <-release })
			}
		}
		return nil, nil, false
	})
	if err := procs.Start("b"); err != nil {
		t.Fatal(err)
	}
	restoring := int32(-1)
	waitFor(t, 30*time.Second, "instance b to restore a task", func() bool {
		_, body := get(t, bases["b"]+"/instances")
		var in httpquery.Instances
		json.Unmarshal([]byte(body), &in)
		for _, task := range in.LocalTasks {
			if task.Restoring {
				p, _ := strconv.Atoi(strings.TrimPrefix(task.ID, "0_"))
				restoring = int32(p)
				return true
			}
		}
		return false
	})
	held := ""
	for _, id := range ids {
		if kgo.StickyKeyPartitioner(nil).ForTopic(orders.DefaultInputTopic).Partition(&kgo.Record{Key: []byte(id)}, partitions) == int(restoring) {
			held = id
		}
	}
	if held == "" {
		t.Fatalf("no order of partition %d", restoring)
	}
	for _, id := range []string{"b", "a"} {
		waitFor(t, 10*time.Second, "instance "+id+" to answer 503 restoring for "+held, func() bool {
			status, body := get(t, bases[id]+"/orders/"+held)
			if status != http.StatusServiceUnavailable {
				t.Fatalf("instance %s: GET /orders/%s = %d %s; want 503", id, held, status, body)
			}
			return strings.Contains(body, "restoring")
		})
	}

	restoreHeld()
	waitFor(t, 30*time.Second, "both instances to answer every order", func() bool {
		for _, id := range ids {
			if !answers(bases["a"], id) || !answers(bases["b"], id) {
				return false
			}
		}
		return true
	})
	describes.Store(0)
	for _, base := range bases {
		for _, id := range ids {
			if !answers(base, id) {
				t.Errorf("%s/orders/%s stopped answering", base, id)
			}
		}
		if status, body := get(t, base+"/orders/o-unknown"); status != http.StatusNotFound {
			t.Errorf("%s/orders/o-unknown = %d %s; want 404", base, status, body)
		}
	}
	if n := describes.Load(); n != 0 {
		t.Errorf("%d DescribeGroups requests during %d queries; want none", n, 2*(len(ids)+1))
	}

	var st httpapi.Status
	_, body := get(t, bases["a"]+"/status.json")
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Routing == nil || len(st.Routing.Instances) != 2 || len(st.Routing.LocalTasks) == 0 {
		t.Errorf("/status.json routing = %+v (%v); want this instance's tasks and both instances", st.Routing, err)
	}
}
