package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly"
)

// partitions of every input topic.
const partitions = 4

// cluster is a fresh in-process kfake broker, listening on loopback only.
type cluster struct {
	c       *kfake.Cluster
	brokers []string
}

func newCluster(topics ...string) (*cluster, error) {
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(partitions, topics...),
		kfake.GroupMinSessionTimeout(100*time.Millisecond),
	)
	if err != nil {
		return nil, fmt.Errorf("start broker: %w", err)
	}
	return &cluster{c: c, brokers: c.ListenAddrs()}, nil
}

func (c *cluster) Close() { c.c.Close() }

// produce writes recs and waits for every acknowledgement.
func (c *cluster) produce(ctx context.Context, recs []*kgo.Record) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...), kgo.ProducerLinger(2*time.Millisecond),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.MaxBufferedRecords(100000))
	if err != nil {
		return err
	}
	defer cl.Close()
	var failed atomic.Pointer[error]
	for _, r := range recs {
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if e := failed.Load(); e != nil {
		return fmt.Errorf("produce input: %w", *e)
	}
	return nil
}

// sizedRecords returns n records of size value bytes on topic, keys drawn
// from keys distinct ones, spread over the partitions.
func sizedRecords(topic string, n, size, keys int) []*kgo.Record {
	pad := make([]byte, size)
	for i := range pad {
		pad[i] = 'x'
	}
	recs := make([]*kgo.Record, n)
	now := time.Now()
	for i := range n {
		v := make([]byte, size)
		copy(v, pad)
		copy(v, fmt.Sprintf("r%09d", i))
		k := "k" + strconv.Itoa(i%keys)
		recs[i] = &kgo.Record{Topic: topic, Partition: int32(i % partitions), Key: []byte(k), Value: v, Timestamp: now}
	}
	return recs
}

// rawLoop is the ceiling: consume every record of input in a group,
// produce one output per record, commit offsets after the outputs are
// acknowledged; no state, no transactions. The clock starts when the first
// records arrive (the group is joined). It returns the time and the CPU
// time the process used meanwhile (the in-process broker's included).
func rawLoop(ctx context.Context, brokers []string, input, output string, n int) (time.Duration, time.Duration, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup("raw-"+input+"-"+output), kgo.ConsumeTopics(input),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.SessionTimeout(3*time.Second))
	if err != nil {
		return 0, 0, err
	}
	defer cl.Close()
	var start time.Time
	var startCPU time.Duration
	done := 0
	for done < n {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err()
		}
		fetches := cl.PollRecords(ctx, 10000)
		if err := fetches.Err0(); err != nil {
			return 0, 0, err
		}
		recs := fetches.Records()
		if start.IsZero() && len(recs) > 0 {
			start, startCPU = time.Now(), cpuTime()
		}
		for _, r := range recs {
			cl.Produce(ctx, &kgo.Record{Topic: output, Key: r.Key, Value: r.Value, Headers: r.Headers}, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			return 0, 0, err
		}
		if err := cl.CommitRecords(ctx, recs...); err != nil {
			return 0, 0, err
		}
		done += len(recs)
	}
	return time.Since(start), cpuTime() - startCPU, nil
}

// appRun is one application run measured from Ready to the moment every
// input record is processed and committed (the final commit of a graceful
// Close, so that commit intervals longer than the run still end in a
// commit).
type appRun struct {
	top     *exactly.Topology
	cfg     exactly.Config
	records int
	timeout time.Duration
	// cpu, if set, receives the CPU time the process used from Ready to
	// the end (the in-process broker's included).
	cpu *time.Duration
}

// processedCounter registers the runtime's metrics and keeps the counter
// of processed records, readable without gathering the rest.
type processedCounter struct {
	prometheus.Registerer
	processed prometheus.Counter
}

func (p *processedCounter) Register(c prometheus.Collector) error {
	if m, ok := c.(prometheus.Counter); ok {
		ch := make(chan *prometheus.Desc, 1)
		m.Describe(ch)
		if d := <-ch; d != nil && containsName(d.String(), "exactly_records_processed_total") {
			p.processed = m
		}
	}
	return p.Registerer.Register(c)
}

func (p *processedCounter) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := p.Register(c); err != nil {
			panic(err)
		}
	}
}

func containsName(desc, name string) bool {
	return strings.Contains(desc, `"`+name+`"`)
}

func (p *processedCounter) value() float64 {
	if p.processed == nil {
		return 0
	}
	var m dto.Metric
	if err := p.processed.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// run starts the app, waits until it processed every record, closes it
// (committing) and returns the time from its first record processed.
func (a appRun) run(ctx context.Context) (time.Duration, *prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	counter := &processedCounter{Registerer: reg}
	a.cfg.Registerer = counter
	app, err := exactly.New(a.top, a.cfg)
	if err != nil {
		return 0, nil, err
	}
	timeout := a.timeout
	if timeout <= 0 {
		timeout = 3 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- app.Run(context.WithoutCancel(ctx)) }()
	stop := func() error {
		app.Close()
		return <-runErr
	}
	// The clock starts at the first record processed, as the ceiling's
	// does at the first records fetched (App.Ready, all workers joined,
	// can come after much of the input is processed when there are
	// several).
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var start time.Time
	var startCPU time.Duration
	for counter.value() < float64(a.records) {
		select {
		case err := <-runErr:
			return 0, nil, fmt.Errorf("app stopped: %v", err)
		case <-ctx.Done():
			stop()
			return 0, nil, fmt.Errorf("processed %.0f of %d records in %s", counter.value(), a.records, timeout)
		case <-tick.C:
		}
		if start.IsZero() && counter.value() > 0 {
			start, startCPU = time.Now(), cpuTime()
		}
	}
	if err := stop(); err != nil {
		return 0, nil, err
	}
	if start.IsZero() {
		start, startCPU = time.Now(), cpuTime() // every record in the first millisecond
	}
	if a.cpu != nil {
		*a.cpu = cpuTime() - startCPU
	}
	return time.Since(start), reg, nil
}

// committedOffsets sums a group's committed offsets on topic.
func committedOffsets(ctx context.Context, brokers []string, group, topic string) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	offs, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		return 0, err
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			sum += o.At
		}
	})
	return sum, nil
}
