package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly/cmd/exactly/internal/httpapi"
)

// TestRunOrdersWithStandbyReplicasShowsThemOnTheStatusPage runs two
// instances of `exactly run orders --standby-replicas 1` in one process:
// each keeps a standby copy of the task the other runs, and /status.json
// lists it (with its lag) beside the active task, and in the other
// instance's view of the group.
func TestRunOrdersWithStandbyReplicasShowsThemOnTheStatusPage(t *testing.T) {
	brokers := newBroker(t).ListenAddrs()
	var bases []string
	for _, id := range []string{"orders-1", "orders-2"} {
		c := testRunOrdersConfig(t, brokers, 2)
		c.InstanceID = id
		c.StandbyReplicas = 1
		base, _ := startRunOrders(t, c)
		bases = append(bases, base)
	}
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
