package exactly_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/exposure"
	"github.com/exactly-go/exactly/verify"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRepartitionTopicKeepsExactlyOnce runs the customer-exposure example
// (orders re-keyed by customer through a repartition topic the runtime
// creates) in two instances, one restarted mid-stream: each customer over
// the threshold is decided exactly once.
func TestRepartitionTopicKeepsExactlyOnce(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, exposure.OrdersTopic),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	const threshold, customers = 50_000, 40
	top, err := exposure.CustomerExposure("risk", threshold)
	if err != nil {
		t.Fatal(err)
	}
	cfg := func() exactly.Config {
		cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
		cfg.ApplicationID = "risk"
		return cfg
	}
	stopA := startApp(t, top, cfg())
	stopB := startApp(t, top, cfg())
	defer func() { stopB() }()

	cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...))
	defer cl.Close()
	rng := rand.New(rand.NewPCG(4, 2))
	totals := map[string]int64{}
	produce := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			o := exposure.OrderSubmitted{OrderID: fmt.Sprint("o", i), CustomerID: fmt.Sprint("c", rng.IntN(customers)), AmountCents: rng.Int64N(1000)}
			totals[o.CustomerID] += o.AmountCents
			v, _ := json.Marshal(o)
			recs = append(recs, &kgo.Record{Topic: exposure.OrdersTopic, Key: []byte(o.OrderID), Value: v})
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, 2000)
	time.Sleep(300 * time.Millisecond)
	stopA() // its tasks move to B mid-stream
	produce(2000, 4000)
	stopA = startApp(t, top, cfg())
	defer func() { stopA() }()
	want := 0
	for _, total := range totals {
		if total >= threshold {
			want++
		}
	}
	out, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(exposure.DecisionsTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer out.Close()
	decided := map[string]int{}
	n := 0
	for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline) && (n < want || time.Now().Before(deadline.Add(-43*time.Second))); {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		out.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var d exposure.RiskDecision
			json.Unmarshal(r.Value, &d)
			decided[d.CustomerID]++
			n++
			if d.DecisionID != exposure.DecisionID(d.CustomerID, d.ExposureCents) || d.ExposureCents < threshold {
				t.Errorf("bad decision %+v", d)
			}
		})
		cancel()
	}
	time.Sleep(500 * time.Millisecond) // room for a duplicate to show
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	out.PollFetches(ctx).EachRecord(func(r *kgo.Record) { n++ })
	cancel()
	if want == 0 {
		t.Fatal("no customer reached the threshold: the test proves nothing")
	}
	if len(decided) != want || n != want {
		t.Fatalf("%d decisions for %d customers, want one each for %d customers over the threshold", n, len(decided), want)
	}
}

const exposureThreshold = 30_000

// TestSigkilledExposureInstancesDecideEachCustomerOnce runs the
// customer-exposure example in three instance processes killed with
// SIGKILL and restarted while orders flow: every customer over the
// threshold is decided exactly once, with the id its exposure determines.
func TestSigkilledExposureInstancesDecideEachCustomerOnce(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, exposure.OrdersTopic, exposure.DecisionsTopic),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	dir := t.TempDir()
	env := "EXACTLY_CHILD_APP=exposure"
	children := make([]*child, 3)
	for i := range children {
		children[i] = startChild(t, brokers, dir, i, exactly.ExactlyOnceV2, env)
	}
	defer func() {
		for _, ch := range children {
			ch.cmd.Process.Kill()
			ch.cmd.Wait()
		}
	}()
	cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...))
	defer cl.Close()
	rng := rand.New(rand.NewPCG(8, 1))
	totals := map[string]int64{}
	const customers, orders, kills = 200, 30_000, 6
	for batch := range kills + 1 {
		var recs []*kgo.Record
		for i := batch * orders / (kills + 1); i < (batch+1)*orders/(kills+1); i++ {
			o := exposure.OrderSubmitted{OrderID: fmt.Sprint("o", i), CustomerID: fmt.Sprint("c", rng.IntN(customers)), AmountCents: rng.Int64N(400)}
			totals[o.CustomerID] += o.AmountCents
			v, _ := json.Marshal(o)
			recs = append(recs, &kgo.Record{Topic: exposure.OrdersTopic, Key: []byte(o.OrderID), Value: v})
		}
		if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if batch == kills {
			break
		}
		time.Sleep(time.Duration(300+rng.IntN(700)) * time.Millisecond)
		victim := rng.IntN(len(children))
		children[victim].cmd.Process.Signal(syscall.SIGKILL)
		children[victim].cmd.Wait()
		children[victim] = startChild(t, brokers, dir, victim, exactly.ExactlyOnceV2, env)
	}
	want := 0
	for _, total := range totals {
		if total >= exposureThreshold {
			want++
		}
	}
	out, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(exposure.DecisionsTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer out.Close()
	decided := map[string]int{}
	n, idle := 0, 0
	for deadline := time.Now().Add(120 * time.Second); time.Now().Before(deadline) && (n < want || idle < 4); {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		got := 0
		out.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var d exposure.RiskDecision
			json.Unmarshal(r.Value, &d)
			decided[d.CustomerID]++
			n++
			got++
			if d.DecisionID != exposure.DecisionID(d.CustomerID, d.ExposureCents) || d.ExposureCents < exposureThreshold || d.ExposureCents >= exposureThreshold+400 {
				t.Errorf("bad decision %+v", d)
			}
		})
		cancel()
		if got == 0 && n >= want {
			idle++
		}
	}
	t.Logf("%d customers over the threshold, %d decisions, %d kills", want, n, kills)
	if want == 0 {
		t.Fatal("no customer reached the threshold: the test proves nothing")
	}
	if len(decided) != want || n != want {
		t.Fatalf("%d decisions for %d customers, want one each for %d customers", n, len(decided), want)
	}

	// The committed output of the killed run equals an uninterrupted replay
	// of its committed input, sub-topology by sub-topology.
	for _, ch := range children {
		ch.cmd.Process.Signal(syscall.SIGTERM)
		ch.cmd.Wait()
	}
	top, err := exposure.CustomerExposure("risk", exposureThreshold)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := verify.Replay(ctx, top, verify.ReplayConfig{Brokers: brokers, ApplicationID: "risk", Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if !rep.OK() {
		t.Fatal("the killed run's committed output differs from the replay of its committed input")
	}
}
