package httpquery_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/counting"
	"github.com/exactly-go/exactly/httpquery"
)

const changelog = "counting-counts-changelog"

// instance is one application instance serving queries over HTTP at the
// address it advertises.
type instance struct {
	app  *exactly.App
	base string
}

func startInstance(t *testing.T, brokers []string) *instance {
	t.Helper()
	return startInstanceWith(t, brokers, func(*exactly.Config) {})
}

// startInstanceWith starts an instance whose configuration configure
// changes first.
func startInstanceWith(t *testing.T, brokers []string, configure func(*exactly.Config)) *instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	top, err := counting.Topology("input", "output", false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := exactly.Config{
		Brokers:           brokers,
		ApplicationID:     "counting",
		ApplicationServer: ln.Addr().String(),
		CommitInterval:    50 * time.Millisecond,
		StateDir:          t.TempDir(),
		SessionTimeout:    3 * time.Second,
		RebalanceTimeout:  5 * time.Second,
		CreateTopics:      true,
	}
	configure(&cfg)
	app, err := exactly.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := httpquery.New(app, httpquery.Options{})
	httpquery.Add(h, httpquery.Store[string, int64]{Name: counting.StoreName, ParseKey: httpquery.StringKey})
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("instance %s: %v", ln.Addr(), err)
		}
		srv.Close()
	})
	return &instance{app: app, base: "http://" + ln.Addr().String()}
}

func get(t *testing.T, url string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

func produce(t *testing.T, brokers []string, n, keys int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("input"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprint("k", i%keys)), Value: []byte(fmt.Sprint("r", i))})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestAnyInstanceAnswersEveryKeyWithoutAskingTheBrokers runs one instance,
// then a second one whose restore of the changelog is held back: while it
// restores, its keys answer 503 with Retry-After on both instances. Once
// it has restored, every key answers 200 with its count from both
// instances (one of them forwards to the other), unknown keys 404, and no
// query sends a DescribeGroups (or any group request) to the brokers.
func TestAnyInstanceAnswersEveryKeyWithoutAskingTheBrokers(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	const keys, perKey = 40, 5
	produce(t, brokers, keys*perKey, keys)

	var describes atomic.Int64
	c.ControlKey(int16(kmsg.DescribeGroups), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		describes.Add(1)
		return nil, nil, false
	})
	release := make(chan struct{})
	var releaseOnce sync.Once
	restoreHeld := func() { releaseOnce.Do(func() { close(release) }) }
	defer restoreHeld()

	a := startInstance(t, brokers)
	answers := func(inst *instance, key string, want int64) bool {
		status, _, body := get(t, inst.base+"/stores/counts/keys/"+key)
		n, _ := strconv.ParseInt(strings.TrimSpace(body), 10, 64)
		return status == http.StatusOK && n == want
	}
	waitFor(t, 30*time.Second, "the first instance to count every key", func() bool {
		for k := range keys {
			if !answers(a, fmt.Sprint("k", k), perKey) {
				return false
			}
		}
		return true
	})

	// From now on, fetches of the changelog (only a restore reads it) wait.
	c.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, rt := range req.(*kmsg.FetchRequest).Topics {
			if rt.Topic == changelog || rt.TopicID == c.TopicInfo(changelog).TopicID {
				c.SleepControl(func() { <-release })
			}
		}
		return nil, nil, false
	})
	b := startInstance(t, brokers)
	var restoring string
	waitFor(t, 30*time.Second, "the second instance to restore a task", func() bool {
		for _, task := range b.app.LocalTasks() {
			if task.Restoring {
				restoring = task.ID
				return true
			}
		}
		return false
	})
	var key string
	for k := range keys {
		m, err := exactly.KeyMetadata(b.app, counting.StoreName, fmt.Sprint("k", k))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint("0_", m.Partition) == restoring {
			key = fmt.Sprint("k", k)
			break
		}
	}
	if key == "" {
		t.Fatalf("no key of task %s among %d keys", restoring, keys)
	}
	if _, _, err := exactly.Query[string, int64](context.Background(), b.app, counting.StoreName, key); !errors.Is(err, exactly.ErrRestoring) {
		t.Errorf("Query of %s on the restoring instance = %v; want ErrRestoring", key, err)
	}
	for name, inst := range map[string]*instance{"restoring instance": b, "other instance": a} {
		// (Until its sync lands, the other instance may still say that
		// no instance holds the key.)
		waitFor(t, 10*time.Second, "the "+name+" to answer 503 restoring for "+key, func() bool {
			status, h, body := get(t, inst.base+"/stores/counts/keys/"+key)
			if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
				t.Fatalf("%s: GET %s = %d %s; want 503 with Retry-After", name, key, status, body)
			}
			return strings.Contains(body, "restoring")
		})
	}
	if status, _, _ := get(t, b.base+"/stores/counts/keys?limit=10"); status != http.StatusServiceUnavailable {
		t.Errorf("a range on the restoring instance = %d; want 503", status)
	}

	restoreHeld()
	waitFor(t, 30*time.Second, "both instances to answer every key", func() bool {
		for k := range keys {
			if !answers(a, fmt.Sprint("k", k), perKey) || !answers(b, fmt.Sprint("k", k), perKey) {
				return false
			}
		}
		return true
	})

	describes.Store(0)
	local := map[string]int{}
	for k := range keys {
		key := fmt.Sprint("k", k)
		for _, inst := range []*instance{a, b} {
			if !answers(inst, key, perKey) {
				t.Errorf("%s: GET %s stopped answering", inst.base, key)
			}
			m, err := exactly.KeyMetadata(inst.app, counting.StoreName, key)
			if err != nil || (m.ActiveHost != a.app.ApplicationServer() && m.ActiveHost != b.app.ApplicationServer()) {
				t.Fatalf("KeyMetadata(%s) = %+v, %v; want one of the two instances", key, m, err)
			}
			_, found, err := exactly.Query[string, int64](context.Background(), inst.app, counting.StoreName, key)
			var notLocal *exactly.NotLocalError
			switch {
			case found && m.ActiveHost == inst.app.ApplicationServer():
				local[inst.base]++
			case errors.As(err, &notLocal) && notLocal.Host == m.ActiveHost && m.ActiveHost != inst.app.ApplicationServer():
			default:
				t.Errorf("Query(%s) on %s = %v, %v; metadata says %+v", key, inst.base, found, err, m)
			}
		}
		for _, inst := range []*instance{a, b} {
			if status, _, body := get(t, inst.base+"/stores/counts/keys/never-seen-"+key); status != http.StatusNotFound || !strings.Contains(body, "not found") {
				t.Errorf("%s: unknown key = %d %s; want 404", inst.base, status, body)
			}
		}
	}
	if n := describes.Load(); n != 0 {
		t.Errorf("%d DescribeGroups requests during %d queries; want none", n, 4*keys)
	}
	if local[a.base]+local[b.base] != keys || local[a.base] == 0 || local[b.base] == 0 {
		t.Errorf("keys held locally: %v; want the %d keys split between both instances", local, keys)
	}

	// The range answers of both instances together hold every key once.
	seen := map[string]bool{}
	for _, inst := range []*instance{a, b} {
		status, _, body := get(t, inst.base+"/stores/counts/keys?limit=1000")
		var ans httpquery.RangeAnswer
		if err := json.Unmarshal([]byte(body), &ans); status != http.StatusOK || err != nil || ans.More || ans.Instance != inst.app.ApplicationServer() {
			t.Fatalf("%s range = %d %s (%v)", inst.base, status, body, err)
		}
		for _, e := range ans.Entries {
			if seen[e.Key.(string)] || e.Value.(float64) != perKey {
				t.Errorf("entry %v twice or with the wrong count", e)
			}
			seen[e.Key.(string)] = true
		}
	}
	if len(seen) != keys {
		t.Errorf("the range answers hold %d keys; want %d", len(seen), keys)
	}

	// A forwarded lookup is never forwarded again.
	for k := range keys {
		key := fmt.Sprint("k", k)
		if m, _ := exactly.KeyMetadata(a.app, counting.StoreName, key); m.ActiveHost == b.app.ApplicationServer() {
			status, _, _ := get(t, a.base+"/stores/counts/keys/"+key, httpquery.ForwardedHeader, "somewhere")
			if status != http.StatusServiceUnavailable {
				t.Errorf("a forwarded lookup of a key held elsewhere = %d; want 503", status)
			}
			break
		}
	}

	for path, want := range map[string]int{
		"/stores/no-such-store/keys/k1":             http.StatusNotFound,
		"/stores/no-such-store/keys":                http.StatusNotFound,
		"/stores/counts/keys?limit=0":               http.StatusBadRequest,
		"/stores/counts/keys?limit=5000":            http.StatusBadRequest,
		"/stores/counts/keys?from=k1":               http.StatusBadRequest,
		"/stores/counts/keys?from=k1&to=k2&limit=1": http.StatusOK,
	} {
		if status, _, body := get(t, a.base+path); status != want {
			t.Errorf("GET %s = %d %s; want %d", path, status, body, want)
		}
	}

	var inst httpquery.Instances
	_, _, body := get(t, a.base+"/instances")
	if err := json.Unmarshal([]byte(body), &inst); err != nil || len(inst.Instances) != 2 || inst.Self != a.app.ApplicationServer() {
		t.Errorf("/instances = %s (%v); want both instances", body, err)
	}
}

// TestStandbyAnswersWhenAskedWithItsLag runs two instances with one standby
// replica each: a lookup with ?standby=true is answered by the instance
// asked, from its standby copy when the other instance runs the key's
// task, with the copy's lag in StandbyLagHeader; without it the lookup is
// forwarded and carries no lag.
func TestStandbyAnswersWhenAskedWithItsLag(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	const keys, perKey = 40, 5
	produce(t, brokers, keys*perKey, keys)
	withStandby := func(cfg *exactly.Config) { cfg.StandbyReplicas = 1 }
	a, b := startInstanceWith(t, brokers, withStandby), startInstanceWith(t, brokers, withStandby)
	waitFor(t, 30*time.Second, "every key counted and both standbys caught up", func() bool {
		for _, inst := range []*instance{a, b} {
			standbys := inst.app.StandbyTasks()
			if len(standbys) != 2 || !standbys[0].CaughtUp || !standbys[1].CaughtUp || standbys[0].Lag+standbys[1].Lag != 0 {
				return false
			}
		}
		for k := range keys {
			status, _, body := get(t, a.base+"/stores/counts/keys/"+fmt.Sprint("k", k))
			if status != http.StatusOK || strings.TrimSpace(body) != strconv.Itoa(perKey) {
				return false
			}
		}
		return true
	})
	fromStandby := 0
	for k := range keys {
		key := fmt.Sprint("k", k)
		status, h, body := get(t, a.base+"/stores/counts/keys/"+key+"?standby=true")
		if status != http.StatusOK || strings.TrimSpace(body) != strconv.Itoa(perKey) {
			t.Fatalf("GET %s?standby=true = %d %s; want %d", key, status, body, perKey)
		}
		m, _ := exactly.KeyMetadata(a.app, counting.StoreName, key)
		remote := m.ActiveHost == b.app.ApplicationServer()
		if lag := h.Get(httpquery.StandbyLagHeader); remote != (lag == "0") {
			t.Errorf("GET %s?standby=true (active on %s) carries lag %q; want \"0\" exactly when the other instance runs it", key, m.ActiveHost, lag)
		}
		if remote {
			fromStandby++
			if _, h, _ := get(t, a.base+"/stores/counts/keys/"+key); h.Get(httpquery.StandbyLagHeader) != "" {
				t.Errorf("GET %s without ?standby carries a standby lag", key)
			}
		}
	}
	if fromStandby == 0 {
		t.Fatal("no key answered from a standby")
	}
}
