package kafka

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func histogramOf(t *testing.T, reg *prometheus.Registry, name, since string) *dto.Histogram {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := since == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetName() == "since" && l.GetValue() == since
			}
			if match {
				return m.GetHistogram()
			}
		}
	}
	t.Fatalf("no histogram %s{since=%q}", name, since)
	return nil
}

// TestPipelineLatencyStartsAtAppendOrFetchNotAtEventTime: a record whose
// timestamp is an event time a year old commits with an event-time lag of
// a year, and a pipeline latency measured from its fetch; a record of a
// LogAppendTime topic is measured from the broker's append time.
func TestPipelineLatencyStartsAtAppendOrFetchNotAtEventTime(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_800_000_000_000)
	yearAgo := now.Add(-365 * 24 * time.Hour)
	createTime := &kgo.Record{Timestamp: yearAgo}
	appendTime := &kgo.Record{Timestamp: now.Add(-3 * time.Second), Attrs: kgo.NewRecordAttrs(kgo.RecordAttrsOpts{TimestampType: 1})}
	fetched := now.Add(-40 * time.Millisecond).UnixMilli()
	m.observeCommitted([]recordTimes{timesOf(createTime, fetched), timesOf(appendTime, fetched)}, now.UnixMilli())

	lag := histogramOf(t, reg, "exactly_record_e2e_latency_seconds", "")
	if want := (365*24*3600 + 3.0); lag.GetSampleCount() != 2 || lag.GetSampleSum() != want {
		t.Errorf("event-time lag: %d samples summing to %vs; want 2 summing to %vs", lag.GetSampleCount(), lag.GetSampleSum(), want)
	}
	for _, c := range []struct {
		since string
		want  float64
	}{{"fetch", 0.04}, {"append", 3}} {
		h := histogramOf(t, reg, "exactly_record_commit_latency_seconds", c.since)
		if h.GetSampleCount() != 1 || h.GetSampleSum() != c.want {
			t.Errorf("pipeline latency since %s: %d samples summing to %vs; want 1 of %vs", c.since, h.GetSampleCount(), h.GetSampleSum(), c.want)
		}
	}
}

// TestObservingCommittedLatenciesAllocatesNothing: the commit path
// observes two histograms per record without a heap allocation.
func TestObservingCommittedLatenciesAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rec := &kgo.Record{Timestamp: time.UnixMilli(1000)}
	appended := &kgo.Record{Timestamp: time.UnixMilli(2000), Attrs: kgo.NewRecordAttrs(kgo.RecordAttrsOpts{TimestampType: 1})}
	times := make([]recordTimes, 0, 2)
	allocs := testing.AllocsPerRun(1000, func() {
		times = append(times[:0], timesOf(rec, 3000), timesOf(appended, 3000))
		m.observeCommitted(times, 4000)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per commit of two records; want 0", allocs)
	}
}

// TestProduceRetryHookCountsFailedProduceRequestsOnly: a produce request
// that lost its connection is retried and counted; other requests, answers
// without an error, and requests failed by a closing client are not.
func TestProduceRetryHookCountsFailedProduceRequestsOnly(t *testing.T) {
	for _, c := range []struct {
		key  kmsg.Key
		err  error
		want float64
	}{
		{kmsg.Produce, io.EOF, 1},
		{kmsg.Produce, &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, 1},
		{kmsg.Produce, nil, 0},
		{kmsg.Fetch, io.EOF, 0},
		{kmsg.Produce, kgo.ErrClientClosed, 0},
		{kmsg.Produce, fmt.Errorf("read: %w", net.ErrClosed), 0},
	} {
		counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "c"})
		produceRetryHook{counter}.OnBrokerE2E(kgo.BrokerMetadata{}, int16(c.key), kgo.BrokerE2E{ReadErr: c.err})
		var m dto.Metric
		counter.Write(&m)
		if got := m.GetCounter().GetValue(); got != c.want {
			t.Errorf("key %v, err %v: counted %v; want %v", c.key, c.err, got, c.want)
		}
	}
}

// BenchmarkObserveCommitted measures the commit path's per-record cost of
// the two latency observations.
func BenchmarkObserveCommitted(b *testing.B) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	times := make([]recordTimes, 1000)
	for i := range times {
		times[i] = timesOf(&kgo.Record{Timestamp: time.UnixMilli(int64(i))}, 5000)
	}
	b.ReportAllocs()
	for b.Loop() {
		m.observeCommitted(times, 6000)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(times)), "ns/record")
}
