package exactly_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/metrics"
)

// waitMetric waits until the sum of a metric's series satisfies ok.
func waitMetric(t *testing.T, reg prometheus.Gatherer, name string, timeout time.Duration, ok func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, err := metrics.Sum(reg, name)
		if err == nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (err %v) after %v", name, v, err, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runApp runs an app until the returned stop is called.
func runApp(t *testing.T, top *exactly.Topology, cfg exactly.Config) (*exactly.App, func() error) {
	t.Helper()
	app, err := exactly.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Run(context.Background()) }()
	return app, sync.OnceValue(func() error { app.Close(); return <-done })
}

// TestStandbyOwnerLeavingRestoresOnlyTheDelta runs two instances with one
// standby replica each: every task's standby lives on the other instance
// and catches up with the changelog, and answers queries with
// AllowStandby, saying so. When one instance leaves, the other takes its
// tasks over from its standbys and restores nothing that they had applied;
// the output stays exactly once.
func TestStandbyOwnerLeavingRestoresOnlyTheDelta(t *testing.T) {
	for _, persistent := range []bool{true, false} {
		t.Run(map[bool]string{true: "pebble", false: "memory"}[persistent], func(t *testing.T) {
			const keys = 50
			brokers := newCluster(t, 4)
			top := countingApp(t, persistent)
			regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
			cfg := func(reg *prometheus.Registry) exactly.Config {
				c := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
				c.StandbyReplicas = 1
				c.Registerer = reg
				return c
			}
			_, stopA := runApp(t, top, cfg(regA))
			appB, stopB := runApp(t, top, cfg(regB))
			defer stopB()
			produceInputs(t, brokers, 0, 2000, keys)
			readCommitted(t, brokers, 2000, 60*time.Second)
			time.Sleep(time.Second) // standbys fetch at least every 250ms
			// Two tasks each, a standby of each of the other's.
			for _, reg := range []*prometheus.Registry{regA, regB} {
				waitMetric(t, reg, "exactly_standby_tasks", 30*time.Second, func(v float64) bool { return v == 2 })
				waitMetric(t, reg, "exactly_standby_lag_records", 30*time.Second, func(v float64) bool { return v == 0 })
			}
			// B answers every key: its own tasks' from them, the others'
			// from its caught-up standbys, saying so.
			fromStandby := 0
			for k := range keys {
				key := fmt.Sprint("k", k)
				res, err := exactly.QueryWith[string, int64](context.Background(), appB, "counts", key, exactly.QueryOptions{AllowStandby: true})
				if err != nil || !res.Found || res.Value != 2000/keys || res.Lag != 0 {
					t.Fatalf("QueryWith(%s, AllowStandby) = %+v, %v; want the count %d", key, res, err, 2000/keys)
				}
				if res.Standby {
					fromStandby++
					var notLocal *exactly.NotLocalError
					if _, _, err := exactly.Query[string, int64](context.Background(), appB, "counts", key); !errors.As(err, &notLocal) {
						t.Fatalf("Query(%s) = %v on the instance keeping its standby; want a *NotLocalError", key, err)
					}
				}
			}
			if fromStandby == 0 || fromStandby == keys {
				t.Fatalf("%d of %d keys answered from standbys; want the other instance's share", fromStandby, keys)
			}
			applied, _ := metrics.Sum(regB, "exactly_standby_records_total")
			restoredBefore, _ := metrics.Sum(regB, "exactly_restore_records_total")
			if err := stopA(); err != nil {
				t.Fatal(err)
			}
			waitMetric(t, regB, "exactly_active_tasks", 30*time.Second, func(v float64) bool { return v == 4 })
			restored, _ := metrics.Sum(regB, "exactly_restore_records_total")
			t.Logf("standby applied %.0f changelog records; the takeover restored %.0f", applied, restored-restoredBefore)
			if applied == 0 || restored != restoredBefore {
				t.Fatalf("the takeover restored %.0f records; its standbys were caught up (applied %.0f)", restored-restoredBefore, applied)
			}
			produceInputs(t, brokers, 2000, 3000, keys)
			checkExactlyOnce(t, readCommitted(t, brokers, 3000, 60*time.Second), 3000, keys)
			waitMetric(t, regB, "exactly_standby_tasks", 10*time.Second, func(v float64) bool { return v == 0 })
		})
	}
}

// childAddress waits for a child process to write the address of its
// status listener to path.
func childAddress(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no status address at %s", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// childTasks returns a child's active and standby tasks; ok is false when
// it does not answer.
func childTasks(addr string) (st childStatus, ok bool) {
	resp, err := http.Get("http://" + addr + "/tasks")
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st) == nil
}

// childMetric sums the series of one metric a child exports.
func childMetric(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// waitUntil polls cond every 100ms until it holds, failing after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSigkilledOwnersTasksRestoreOnlyTheDeltaFromTheirStandbys runs three
// instance processes with one standby replica over a Pebble store of more
// than 100,000 keys. Once every standby has caught up, input keeps flowing
// and one instance is killed with SIGKILL: each of its tasks goes to the
// instance holding its standby, and the restores there read no more
// changelog records than were written after the standbys caught up (from
// exactly_restore_records_total), where a restore without a standby reads
// the task's whole changelog. The committed result passes the crash tests'
// checks, ending with the replay verifier.
func TestSigkilledOwnersTasksRestoreOnlyTheDeltaFromTheirStandbys(t *testing.T) {
	const (
		records   = 120_000 // each with a key of its own
		delta     = 3_000
		keys      = records + delta
		instances = 3
	)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	dir := t.TempDir()
	children := make([]*child, instances)
	addrs := make([]string, instances)
	for i := range children {
		children[i] = startChild(t, brokers, dir, i, exactly.ExactlyOnceV2,
			"EXACTLY_CHILD_STANDBYS=1", "EXACTLY_CHILD_HTTP="+filepath.Join(dir, fmt.Sprint("http-", i)))
	}
	defer func() {
		for _, ch := range children {
			if ch.cmd.ProcessState == nil {
				ch.cmd.Process.Kill()
				ch.cmd.Wait()
			}
		}
	}()
	for i := range children {
		addrs[i] = childAddress(t, filepath.Join(dir, fmt.Sprint("http-", i)))
	}
	produceInputs(t, brokers, 0, records, keys)
	readCommitted(t, brokers, records, 180*time.Second)

	// Every task runs once, and has a caught-up standby elsewhere.
	var statuses []childStatus
	waitUntil(t, 60*time.Second, "every task running with a caught-up standby", func() bool {
		statuses = make([]childStatus, instances)
		active, standby := 0, 0
		for i, addr := range addrs {
			st, ok := childTasks(addr)
			if !ok {
				return false
			}
			statuses[i] = st
			for _, task := range st.Active {
				if !task.Restoring {
					active++
				}
			}
			for _, task := range st.Standby {
				if task.CaughtUp && task.Lag == 0 {
					standby++
				}
			}
		}
		return active == 6 && standby == 6
	})
	victim := 0
	for i, st := range statuses {
		if len(st.Active) > len(statuses[victim].Active) {
			victim = i
		}
	}
	standbyOn := map[string]int{}
	for i, st := range statuses {
		for _, task := range st.Standby {
			standbyOn[task.ID] = i
		}
	}
	restoredBefore := map[int]float64{}
	for i, addr := range addrs {
		if i != victim {
			restoredBefore[i] = childMetric(t, addr, "exactly_restore_records_total")
		}
	}

	// Input keeps flowing across the kill: the delta.
	produceInputs(t, brokers, records, records+delta/2, keys)
	children[victim].cmd.Process.Signal(syscall.SIGKILL)
	children[victim].cmd.Wait()
	produceInputs(t, brokers, records+delta/2, records+delta, keys)
	t.Logf("killed instance %d, which ran %v", victim, statuses[victim].Active)

	owner := map[string]int{}
	waitUntil(t, 60*time.Second, "the survivors running every task", func() bool {
		clear(owner)
		for i, addr := range addrs {
			if i == victim {
				continue
			}
			st, ok := childTasks(addr)
			if !ok {
				return false
			}
			for _, task := range st.Active {
				if !task.Restoring {
					owner[task.ID] = i
				}
			}
		}
		return len(owner) == 6
	})
	var restored float64
	for i, before := range restoredBefore {
		restored += childMetric(t, addrs[i], "exactly_restore_records_total") - before
	}
	adm := kadm.NewClient(mustClient(t, brokers))
	ends, err := adm.ListEndOffsets(context.Background(), "crash-counts-changelog")
	if err != nil {
		t.Fatal(err)
	}
	var full int64
	for _, task := range statuses[victim].Active {
		var p int32
		fmt.Sscanf(task.ID, "0_%d", &p)
		end, _ := ends.Lookup("crash-counts-changelog", p)
		full += end.Offset
		if owner[task.ID] != standbyOn[task.ID] {
			t.Errorf("task %s went to instance %d; its standby was on instance %d", task.ID, owner[task.ID], standbyOn[task.ID])
		}
	}
	t.Logf("the takeover restored %.0f changelog records; the killed instance's tasks' changelogs hold %d offsets", restored, full)
	if restored > delta/2 || int64(restored)*10 > full {
		t.Fatalf("the takeover restored %.0f changelog records; its standbys were caught up before %d records were produced", restored, delta/2)
	}

	out := readCommitted(t, brokers, records+delta, 120*time.Second)
	for i, ch := range children {
		if i != victim {
			ch.cmd.Process.Signal(syscall.SIGTERM)
			ch.cmd.Wait()
		}
	}
	checkCrashRun(t, brokers, out, records+delta, keys, exactly.ExactlyOnceV2)
}

func mustClient(t *testing.T, brokers []string) *kgo.Client {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}
