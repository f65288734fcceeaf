package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/examples/counting"
)

// latency measures, at a steady input rate, the time from a record's
// creation (its timestamp, carried in the value at nanosecond precision) to
// its output becoming visible to a read_committed consumer, with the
// counting topology under exactly_once_v2 at a 100 ms commit interval.
func (r *runner) latency(ctx context.Context) error {
	rate, seconds := 20000, 10
	if r.opts.Quick {
		seconds = 2
	}
	r.progress("latency: %d records/s for %d s", rate, seconds)
	for range r.lightReps() {
		lat, err := latencyOnce(ctx, rate, seconds)
		if err != nil {
			return err
		}
		n := len(lat)
		r.add("latency_eos_100ms_p50", "ms", n, ms(lat[n/2]))
		r.add("latency_eos_100ms_p99", "ms", n, ms(lat[n*99/100]))
		r.add("latency_eos_100ms_max", "ms", n, ms(lat[n-1]))
	}
	r.note("latency_eos_100ms_p50", fmt.Sprintf("%d records/s, 100 B, record timestamp to read_committed consumer", rate))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func latencyOnce(ctx context.Context, rate, seconds int) ([]time.Duration, error) {
	c, err := newCluster("input", "output")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	top, err := CountingTopology("input", "output", false)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "exactly-bench-latency-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfg := appConfig(c.brokers, "latency", true, 100*time.Millisecond)
	cfg.StateDir = dir
	_, _, stop, err := untilReady(ctx, top, cfg)
	if err != nil {
		return nil, err
	}
	defer stop()

	consumer, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...), kgo.ConsumeTopics("output"),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(10*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer consumer.Close()
	producer, err := kgo.NewClient(kgo.SeedBrokers(c.brokers...), kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer producer.Close()

	total := rate * seconds
	go func() {
		pad := strings.Repeat("x", 100)
		start := time.Now()
		for i := range total {
			// Pace: record i is due at start + i/rate.
			if due := start.Add(time.Duration(i) * time.Second / time.Duration(rate)); time.Until(due) > 0 {
				time.Sleep(time.Until(due))
			}
			now := time.Now()
			v := strconv.FormatInt(now.UnixNano(), 10) + " "
			producer.Produce(ctx, &kgo.Record{Topic: "input", Key: []byte("k" + strconv.Itoa(i%1000)), Value: []byte(v + pad[len(v):]), Timestamp: now}, nil)
		}
	}()
	lat := make([]time.Duration, 0, total)
	deadline := time.Now().Add(time.Duration(seconds)*time.Second + time.Minute)
	for len(lat) < total {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("latency: %d of %d outputs seen", len(lat), total)
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := consumer.PollFetches(pctx)
		cancel()
		now := time.Now()
		fetches.EachRecord(func(rec *kgo.Record) {
			var out counting.Output
			if json.Unmarshal(rec.Value, &out) != nil {
				return
			}
			sent, err := strconv.ParseInt(strings.Fields(out.ID)[0], 10, 64)
			if err == nil {
				lat = append(lat, now.Sub(time.Unix(0, sent)))
			}
		})
	}
	slices.Sort(lat)
	return lat, nil
}
