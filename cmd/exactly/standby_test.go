package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/exactly-go/exactly/cmd/exactly/internal/httpapi"
)

// TestRunOrdersWithStandbyReplicasShowsThemOnTheStatusPage runs two
// instances of `exactly run orders --standby-replicas 1` in one process:
// each keeps a standby copy of the task the other runs, and /status.json
// lists it (with its lag) beside the active task, and in the other
// instance's view of the group.
func TestRunOrdersWithStandbyReplicasShowsThemOnTheStatusPage(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var bases []string
	var dones []chan error
	for _, id := range []string{"orders-1", "orders-2"} {
		c := defaultRunOrdersConfig()
		c.Brokers = cluster.ListenAddrs()
		c.StateDir = t.TempDir()
		c.HTTP = "127.0.0.1:0"
		c.InstanceID = id
		c.Partitions = 2
		c.CommitInterval = 50 * time.Millisecond
		c.SessionTimeout = time.Second
		c.StandbyReplicas = 1
		addrs, done := make(chan net.Addr, 1), make(chan error, 1)
		go func() { done <- runOrders(ctx, c, func(a net.Addr) { addrs <- a }) }()
		select {
		case a := <-addrs:
			bases = append(bases, "http://"+a.String())
		case err := <-done:
			t.Fatalf("run orders: %v", err)
		}
		dones = append(dones, done)
	}
	defer func() {
		cancel()
		for _, done := range dones {
			if err := <-done; err != nil {
				t.Errorf("run orders returned %v after cancel; want nil", err)
			}
		}
	}()
	status := func(base string) httpapi.Status {
		var st httpapi.Status
		_, body := get(t, base+"/status.json")
		json.Unmarshal([]byte(body), &st)
		return st
	}
	waitFor(t, 30*time.Second, "each instance to run one task and keep a caught-up standby of the other", func() bool {
		for _, base := range bases {
			r := status(base).Routing
			if r == nil || len(r.LocalTasks) != 1 || len(r.StandbyTasks) != 1 || !r.StandbyTasks[0].CaughtUp || r.StandbyTasks[0].ID == r.LocalTasks[0].ID {
				return false
			}
		}
		return true
	})
	for _, base := range bases {
		r := status(base).Routing
		for _, in := range r.Instances {
			if in.Host == r.Self && !slices.Equal(in.StandbyTasks, []string{r.StandbyTasks[0].ID}) {
				t.Errorf("%s: the group's view lists standby tasks %v for this instance; it keeps %v", base, in.StandbyTasks, r.StandbyTasks)
			}
		}
	}
	if code, page := get(t, bases[0]+"/"); code != http.StatusOK || !strings.Contains(page, "standbyTasks") {
		t.Errorf("GET / = %d; want the status page rendering standbyTasks", code)
	}
}
