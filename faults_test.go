package exactly_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactly-go/exactly/internal/metrics"

	"github.com/exactly-go/exactly"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// metricSum adds up every sample of the named counter or gauge.
func metricSum(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	v, err := metrics.Sum(reg, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestInjectedFaultsAbortAndRetryWithoutDuplicates makes the broker fail
// produce requests, transactional offset commits and EndTxn (with the
// unknown-outcome REQUEST_TIMED_OUT) while the application runs: every
// fault fails one of the application's requests, transactions abort, and
// the committed output still holds every input once.
func TestInjectedFaultsAbortAndRetryWithoutDuplicates(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	const n, keys = 20_000, 13

	// The produce fault is one franz-go does not retry but that says nothing
	// of the records (kafkaerr.RefusedForGood is false): the transaction
	// aborts and its input is redelivered. An error that blames the records
	// (INVALID_RECORD) would have them refused and the task failed instead.
	failProduce := func(req kmsg.Request) (kmsg.Response, error, bool) {
		pr := req.(*kmsg.ProduceRequest)
		if pr.TransactionID == nil {
			return nil, nil, false
		}
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	}
	failOffsetCommit := func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.TxnOffsetCommitRequest)
		resp := r.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewTxnOffsetCommitResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.CoordinatorNotAvailable.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	}
	failEndTxn := func(req kmsg.Request) (kmsg.Response, error, bool) {
		resp := req.(*kmsg.EndTxnRequest).ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.RequestTimedOut.Code
		return resp, nil, true
	}
	type fault struct {
		key  kmsg.Key
		fail func(kmsg.Request) (kmsg.Response, error, bool)
	}
	faults := []fault{
		{kmsg.Produce, failProduce}, {kmsg.TxnOffsetCommit, failOffsetCommit}, {kmsg.EndTxn, failEndTxn},
		{kmsg.Produce, failProduce}, {kmsg.TxnOffsetCommit, failOffsetCommit}, {kmsg.EndTxn, failEndTxn},
	}
	// The input arrives in one part more than there are faults: each fault
	// is armed before the next part is produced and has failed one of the
	// application's requests before the part after it is, so every fault
	// lands while input is still pending, however fast the application is.
	produceInputPart := func(i int) {
		produceInputs(t, brokers, i*n/(len(faults)+1), (i+1)*n/(len(faults)+1), keys)
	}
	produceInputPart(0)

	reg := prometheus.NewRegistry()
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.Registerer = reg
	stop := startApp(t, countingApp(t, true), cfg)
	defer stop()

	for i, f := range faults {
		failed := make(chan struct{})
		c.ControlKey(int16(f.key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			resp, err, handled := f.fail(req)
			if handled {
				close(failed) // a handled control is dropped: this runs once
			}
			return resp, err, handled
		})
		produceInputPart(i + 1)
		select {
		case <-failed:
		case <-time.After(60 * time.Second):
			t.Fatalf("fault %d (%s) was armed with input pending, but no request of the application reached it in 60s", i, f.key.Name())
		}
		t.Logf("fault %d (%s) failed a request of the application", i, f.key.Name())
	}
	out := readCommitted(t, brokers, n, 90*time.Second)
	checkExactlyOnce(t, out, n, keys)
	aborted := metricSum(t, reg, "exactly_transactions_total") - countWithLabel(t, reg, "exactly_transactions_total", "result", "committed")
	t.Logf("transactions aborted: %.0f", aborted)
	if aborted == 0 {
		t.Fatal("no transaction was aborted: the faults did not reach the application")
	}
}

func countWithLabel(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	v, err := metrics.Sum(reg, name, label, value)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRestoreRebuildsDeletedStateAndReadsOnlyTheDelta restarts an instance
// once with its state directory deleted (the store is rebuilt from the whole
// changelog) and once with it intact (nothing before the checkpoint is read
// again), and checks the results continue as if nothing happened.
func TestRestoreRebuildsDeletedStateAndReadsOnlyTheDelta(t *testing.T) {
	brokers := newCluster(t, 2)
	top := countingApp(t, true)
	dir := t.TempDir()
	const keys = 11
	run := func(from, to int) (restored float64) {
		produceInputs(t, brokers, from, to, keys)
		reg := prometheus.NewRegistry()
		cfg := appConfig(brokers, dir, exactly.ExactlyOnceV2)
		cfg.Registerer = reg
		stop := startApp(t, top, cfg)
		out := readCommitted(t, brokers, to, 60*time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		checkExactlyOnce(t, out, to, keys)
		return metricSum(t, reg, "exactly_restore_records_total")
	}
	if got := run(0, 2000); got != 0 {
		t.Fatalf("first start restored %.0f records from an empty changelog", got)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "counting"))
	var taskDirs int
	for _, e := range entries {
		if e.IsDir() && strings.Contains(e.Name(), "_") {
			taskDirs++
			os.RemoveAll(filepath.Join(dir, "counting", e.Name()))
		}
	}
	if taskDirs == 0 {
		t.Fatal("no task directory was written")
	}
	full := run(2000, 4000)
	if full < keys {
		t.Fatalf("after deleting the state, restored %.0f records; want the whole changelog (at least one per key)", full)
	}
	if delta := run(4000, 6000); delta != 0 {
		t.Fatalf("with the state intact, restored %.0f records; want 0 (checkpoint at the changelog end)", delta)
	}
	t.Logf("full restore read %.0f changelog records; restart with state read 0", full)
}

// TestProduceRetriesAreCountedApartFromErrors drops the connection of the
// application's first transactional produce request: franz-go sends the
// batches again, exactly_produce_request_retries_total counts it, no
// produce error is counted, and every record is in the output once.
func TestProduceRetriesAreCountedApartFromErrors(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	const n, keys = 2_000, 7
	produceInputs(t, brokers, 0, n, keys)

	var dropped atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if req.(*kmsg.ProduceRequest).TransactionID == nil {
			c.KeepControl()
			return nil, nil, false
		}
		dropped.Add(1)
		return nil, errors.New("connection dropped by the test"), true // closes the connection
	})

	reg := prometheus.NewRegistry()
	cfg := appConfig(brokers, t.TempDir(), exactly.ExactlyOnceV2)
	cfg.Registerer = reg
	stop := startApp(t, countingApp(t, true), cfg)
	defer stop()
	checkExactlyOnce(t, readCommitted(t, brokers, n, 60*time.Second), n, keys)

	if dropped.Load() != 1 {
		t.Fatalf("the broker dropped %d produce requests; want 1", dropped.Load())
	}
	if got := metricSum(t, reg, "exactly_produce_request_retries_total"); got < 1 {
		t.Errorf("exactly_produce_request_retries_total = %v after a dropped produce request; want at least 1", got)
	}
	if got := metricSum(t, reg, "exactly_produce_errors_total"); got != 0 {
		t.Errorf("exactly_produce_errors_total = %v; a retried request is not an error", got)
	}
}
