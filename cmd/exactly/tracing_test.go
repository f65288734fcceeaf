package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// lockedBuffer is a bytes.Buffer the exporter's goroutine writes while the
// test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// exportedSpan is what the test reads of a span the stdout exporter wrote.
type exportedSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Attributes  []struct {
		Key   string
		Value struct{ Value any }
	}
}

// TestRunOrdersTraceStdoutWritesTheSpansOfRecordsAndCommits: with
// --trace-stdout, an order event whose envelope names a W3C trace id is
// traced in that trace, its commit is traced, and its projection carries
// the record span's traceparent.
func TestRunOrdersTraceStdoutWritesTheSpansOfRecordsAndCommits(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	var spans lockedBuffer
	c := defaultRunOrdersConfig()
	c.Brokers = brokers
	c.StateDir = t.TempDir()
	c.HTTP = ""
	c.Partitions = 1
	c.CommitInterval = 50 * time.Millisecond
	c.SessionTimeout = time.Second
	c.TraceStdout, c.TraceOutput = true, &spans

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runOrders(ctx, c, nil) }()

	const traceID = "0af7651916cd43dd8448eb211c80319c"
	ts := time.Now().UnixMilli()
	waitFor(t, 20*time.Second, "the input topic", func() bool {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
		if err != nil {
			return false
		}
		defer cl.Close()
		err = cl.ProduceSync(context.Background(), &kgo.Record{Topic: c.InputTopic, Key: []byte("o-1"),
			Value: fmt.Appendf(nil, `{"metadata":{"eventId":"e-1","traceId":%q,"timestamp":%d},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c-1","createdAt":%d}}`, traceID, ts, ts)}).FirstErr()
		return err == nil
	})

	out, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(c.OutputTopic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var projection *kgo.Record
	waitFor(t, 20*time.Second, "the projection", func() bool {
		pollCtx, stop := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer stop()
		if recs := out.PollFetches(pollCtx).Records(); len(recs) > 0 {
			projection = recs[0]
		}
		return projection != nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run orders: %v", err)
	}

	var record, commit *exportedSpan
	sc := bufio.NewScanner(strings.NewReader(spans.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s exportedSpan
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("a line of the trace output is not a span: %v: %s", err, sc.Text())
		}
		switch {
		case s.Name == "process "+c.InputTopic:
			record = &s
		case s.Name == "commit" && commit == nil:
			commit = &s
		}
	}
	if record == nil || commit == nil {
		t.Fatalf("the trace output lacks a record's or a commit's span:\n%s", spans.String())
	}
	if record.SpanContext.TraceID != traceID {
		t.Errorf("the record is traced in %s; want its envelope's traceId %s", record.SpanContext.TraceID, traceID)
	}
	var traceparent string
	for _, h := range projection.Headers {
		if h.Key == "traceparent" {
			traceparent = string(h.Value)
		}
	}
	if want := "00-" + traceID + "-" + record.SpanContext.SpanID + "-01"; traceparent != want {
		t.Errorf("the projection carries traceparent %q; want %q", traceparent, want)
	}
}
