package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactly-go/exactly/cmd/exactly/internal/httpapi"
	"github.com/exactly-go/exactly/examples/orders"
)

// TestRunOrdersShowsRestoreProgress starts `exactly run orders` on an
// empty state directory over a projection changelog of 3000 records in
// 30 batches. The broker hands the changelog over one batch per fetch and
// holds it after the third: meanwhile /status.json reports the restore
// partly done (300 of 3000 offsets) and the log has a progress line with
// the same numbers. Released, the restore reaches 100% and the log says
// so.
func TestRunOrdersShowsRestoreProgress(t *testing.T) {
	cluster := newBroker(t)
	brokers := cluster.ListenAddrs()
	c := testRunOrdersConfig(t, brokers, 1)

	const batches, perBatch = 30, 100
	changelog := c.ApplicationID + "-" + orders.ProjectionStore + "-changelog"
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(changelog))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	compact := "compact"
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, -1, map[string]*string{"cleanup.policy": &compact}, changelog); err != nil {
		t.Fatal(err)
	}
	for b := range batches {
		var batch []*kgo.Record
		for i := range perBatch {
			id := fmt.Sprintf("o-%05d", b*perBatch+i)
			value, err := orders.AggregateSerde{}.Serialize(orders.Aggregate{Projection: orders.Projection{OrderID: id, Status: orders.StatusCreated, Version: 1}})
			if err != nil {
				t.Fatal(err)
			}
			batch = append(batch, &kgo.Record{Key: []byte(id), Value: value})
		}
		if err := cl.ProduceSync(context.Background(), batch...).FirstErr(); err != nil { // one batch
			t.Fatal(err)
		}
	}

	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseRestore := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseRestore()
	var changelogFetches atomic.Int32
	cluster.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		fetch := req.(*kmsg.FetchRequest)
		fetch.MaxBytes = 1 // one record batch per fetch
		for _, rt := range fetch.Topics {
			if (rt.Topic == changelog || rt.TopicID == cluster.TopicInfo(changelog).TopicID) && changelogFetches.Add(1) > 3 {
				cluster.SleepControl(func() { <-release })
			}
		}
		return nil, nil, false
	})

	logs := &lockedBuffer{}
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.NewTextHandler(logs, nil)))
	defer func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	}()

	base, stop := startRunOrders(t, c)
	defer func() {
		releaseRestore()
		if err := stop(); err != nil {
			t.Errorf("run orders: %v", err)
		}
	}()
	restoreOf := func() (httpapi.Restore, bool) {
		status, body := get(t, base+"/status.json")
		var st httpapi.Status
		if status != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil {
			t.Fatalf("/status.json = %d %s", status, body)
		}
		for _, r := range st.Restores {
			if r.Store == orders.ProjectionStore {
				return r, true
			}
		}
		return httpapi.Restore{}, false
	}

	const total = batches * perBatch
	var partial httpapi.Restore
	waitFor(t, 30*time.Second, "/status.json to show the restore up to where the broker holds it", func() bool {
		r, ok := restoreOf()
		partial = r
		return ok && (r.Restored >= 3*perBatch || r.Done)
	})
	if want := (httpapi.Restore{Store: orders.ProjectionStore, Partition: 0, Task: "0_0", Restored: 3 * perBatch, Total: total, Percent: 10, Records: 3 * perBatch}); partial.Store != want.Store ||
		partial.Partition != want.Partition || partial.Task != want.Task || partial.Restored != want.Restored || partial.Total != want.Total ||
		partial.Percent != want.Percent || partial.Records != want.Records || partial.Done {
		t.Errorf("restore under way = %+v; want %+v", partial, want)
	}
	if status, _ := get(t, base+"/readyz"); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d while restoring; want 503", status)
	}
	progressLine := fmt.Sprintf(`msg="restoring store partition" application=orders store=%s partition=0 task=0_0 restored=%d/%d percent=10.0`, orders.ProjectionStore, 3*perBatch, total)
	waitFor(t, 10*time.Second, "a restore progress line in the log", func() bool {
		return strings.Contains(logs.String(), progressLine)
	})

	releaseRestore()
	waitFor(t, 30*time.Second, "/status.json to show the restore done", func() bool {
		r, ok := restoreOf()
		return ok && r.Done
	})
	if r, _ := restoreOf(); r.Restored != total || r.Total != total || r.Percent != 100 || r.Records != total {
		t.Errorf("restore done = %+v; want %d of %d offsets and records, 100%%", r, total, total)
	}
	waitReady(t, base)
	finalLine := fmt.Sprintf(`msg="restored store partition" application=orders store=%s partition=0 task=0_0 offsets=%d records=%d`, orders.ProjectionStore, total, total)
	waitFor(t, 10*time.Second, "the restore's final line in the log", func() bool {
		return strings.Contains(logs.String(), finalLine)
	})
	if status, body := get(t, base+"/orders/o-02999"); status != http.StatusOK || !strings.Contains(body, `"orderId":"o-02999"`) {
		t.Errorf("GET /orders/o-02999 = %d %s; want the restored projection", status, body)
	}
}
