package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"encoding/binary"

	"github.com/exactly-go/exactly/examples/revenue"
	"github.com/exactly-go/exactly/internal/fleet"
	"github.com/exactly-go/exactly/verify"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestMain lets the test binary stand in for the revenue command: the
// multi-process test starts instances by running its own executable with
// REVENUE_AS_COMMAND set.
func TestMain(m *testing.M) {
	if os.Getenv("REVENUE_AS_COMMAND") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// grace is longer than the sample's six hours of event time: while an
// instance is dead its partitions lag the others by hours of event time,
// which must not make their orders late; the ticks close the windows.
const grace = 24 * time.Hour

// The instances are static members (-instance-id), as instances that
// are restarted with their state directory are deployed: a restarted
// instance takes its predecessor's place in the group and fences its open
// transaction at once. With dynamic members every kill leaves a member
// behind until it times out, and the in-process broker keeps one for
// good when it is killed while waiting for its JoinGroup response (kfake
// starts its session timer only once the response is sent, and the
// leader's SyncGroup stops the timer that would remove a member that
// never syncs): the partitions the leader gives that member are never
// processed again (a failure seen in about one run in four).
//
// rebalanceTimeout bounds how long a rebalance waits for a member that
// does not join it again. An instance killed while the group rebalances
// holds the group for that long (the classic protocol removes it only
// then), and each kill may; with the runtime's default of a minute, a few
// kills in a row kept every instance from processing for minutes, and
// the waiting members' joins timed out. A few session timeouts suffice
// for the survivors to revoke and join again.
const rebalanceTimeout = 10 * time.Second

func decodeRevenue(t *testing.T, key, value []byte, got map[string]int64) {
	t.Helper()
	if len(value) != 8 {
		t.Fatalf("revenue %q of %q is not 8 bytes", value, key)
	}
	if _, dup := got[string(key)]; dup {
		t.Fatalf("window %s emitted twice", key)
	}
	got[string(key)] = int64(binary.BigEndian.Uint64(value))
}

// TestThreeInstancesUnderSIGKILLsCommitTheOracle runs the application as
// three processes against an in-process broker and kills them with
// SIGKILL while the orders flow (each killed instance is started again),
// then checks that the committed hourly revenue is the oracle's: every
// window once, with its exact sum.
func TestThreeInstancesUnderSIGKILLsCommitTheOracle(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three instance processes against a broker")
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, revenue.ProductsTopic, revenue.OrdersTopic), kfake.SeedTopics(2, revenue.CustomersTopic),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	// Every call to the broker has a deadline: a broker that stops
	// answering fails the test with the instances' logs and the group's
	// state instead of hanging it.
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 30*time.Second)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	produce := func(recs []revenue.Record) {
		t.Helper()
		var krs []*kgo.Record
		for _, r := range recs {
			krs = append(krs, &kgo.Record{Topic: r.Topic, Key: []byte(r.Key), Value: r.Bytes(), Timestamp: r.Timestamp})
		}
		ctx, cancel := call()
		defer cancel()
		if err := cl.ProduceSync(ctx, krs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	readCommitted := func(topic string) ([]*kgo.Record, error) {
		ctx, cancel := call()
		defer cancel()
		return verify.ReadCommitted(ctx, []kgo.Opt{kgo.SeedBrokers(brokers...)}, topic)
	}
	sample := revenue.NewSample(42, 600)
	produce(sample.Tables())

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	procs := &fleet.Fleet{}
	defer procs.Close(10 * time.Second)
	ids := []string{"a", "b", "c"}
	for _, id := range ids {
		procs.Set(id, fleet.Spec{Path: exe, Env: append(fleet.WithoutExactlyEnv(os.Environ()), "REVENUE_AS_COMMAND=1"),
			Log: filepath.Join(dir, id+".log"), Args: []string{
				"-brokers", strings.Join(brokers, ","), "-instance-id", id, "-state-dir", filepath.Join(dir, "state-"+id),
				"-session-timeout", "2s", "-rebalance-timeout", rebalanceTimeout.String(), "-commit-interval", "50ms", "-grace", grace.String(),
			}})
		if err := procs.Start(id); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		if t.Failed() {
			ctx, cancel := call()
			defer cancel()
			if groups, err := adm.DescribeGroups(ctx, "revenue"); err != nil {
				t.Logf("describe the group: %v", err)
			} else {
				for _, g := range groups {
					var members []string
					for _, m := range g.Members {
						members = append(members, m.MemberID+" ("+m.ClientHost+")")
					}
					t.Logf("group %s: state %s, members %v (%v)", g.Group, g.State, members, g.Err)
				}
			}
			for _, id := range ids {
				log, _ := os.ReadFile(filepath.Join(dir, id+".log"))
				t.Logf("log of instance %s (last 6000 bytes):\n%s", id, log[max(0, len(log)-6000):])
			}
		}
	}()

	// Orders flow in batches; every few batches an instance dies by
	// SIGKILL and is started again a moment later.
	rng := rand.New(rand.NewPCG(7, 7))
	kills := 0
	for i := 0; i < len(sample.Orders); i += 30 {
		produce(sample.Orders[i:min(i+30, len(sample.Orders))])
		time.Sleep(100 * time.Millisecond)
		if i%90 == 60 {
			id := ids[rng.IntN(len(ids))]
			if procs.Kill(id) {
				kills++
			}
			time.Sleep(300 * time.Millisecond)
			if err := procs.Start(id); err != nil {
				t.Fatal(err)
			}
		}
	}
	if kills < 5 {
		t.Fatalf("%d kills", kills)
	}

	// Every real order must have gone all the way through before the
	// ticks close the windows: its line committed in the repartition
	// topic and consumed by the group.
	valid := sample.Joined()
	repartition := ""
	waitFor(t, 90*time.Second, "every order's line to be consumed", func() bool {
		ctx, cancel := call()
		defer cancel()
		if repartition == "" {
			topics, _ := adm.ListTopics(ctx)
			for _, name := range topics.Names() {
				if strings.HasPrefix(name, "revenue-") && strings.HasSuffix(name, "-repartition") {
					repartition = name
				}
			}
			if repartition == "" {
				return false
			}
		}
		lines, err := readCommitted(repartition)
		if err != nil || len(lines) < valid {
			return false
		}
		if len(lines) > valid {
			t.Fatalf("%d lines in %s for %d orders: an order went through twice", len(lines), repartition, valid)
		}
		last := map[int32]int64{}
		for _, l := range lines {
			last[l.Partition] = max(last[l.Partition], l.Offset)
		}
		offsets, err := adm.FetchOffsets(ctx, "revenue")
		if err != nil {
			return false
		}
		for p, off := range last {
			if o, ok := offsets.Lookup(repartition, p); !ok || o.At <= off {
				return false
			}
		}
		return true
	})
	produce(sample.Ticks)

	want := sample.Oracle()
	got := map[string]int64{}
	waitFor(t, 60*time.Second, fmt.Sprintf("%d final windows", len(want)), func() bool {
		recs, err := readCommitted(revenue.RevenueTopic)
		if err != nil {
			return false
		}
		got = map[string]int64{}
		for _, r := range recs {
			decodeRevenue(t, r.Key, r.Value, got)
		}
		return len(got) >= len(want)
	})
	time.Sleep(time.Second) // nothing more may come
	recs, err := readCommitted(revenue.RevenueTopic)
	if err != nil {
		t.Fatal(err)
	}
	got = map[string]int64{}
	for _, r := range recs {
		decodeRevenue(t, r.Key, r.Value, got)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after %d SIGKILLs the hourly revenue differs from the oracle\n got %v\nwant %v", kills, got, want)
	}
	t.Logf("%d SIGKILLs; %d windows, each committed once with the oracle's sum", kills, len(got))
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}
