package exactly_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

const benchRecords = 100_000

// benchCluster starts a broker with benchRecords input records of about
// 200 bytes on four partitions.
func benchCluster(b *testing.B) []string {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "input", "output"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	pad := bytes.Repeat([]byte("x"), 190)
	for i := range benchRecords {
		v := append([]byte(fmt.Sprintf("r%08d", i)), pad...)
		cl.Produce(context.Background(), &kgo.Record{Topic: "input", Key: []byte(fmt.Sprint("k", i%1000)), Value: v}, nil)
	}
	if err := cl.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	return brokers
}

// waitConsumed blocks until group has committed offsets for all input.
func waitConsumed(b *testing.B, brokers []string, group string) {
	cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...))
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for {
		offs, err := adm.FetchOffsets(context.Background(), group)
		if err == nil {
			var sum int64
			offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
			if sum >= benchRecords {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkCountingThroughput compares, in one run on one broker, the raw
// franz-go consume→produce loop (the ceiling) with the counting topology
// (store + changelog + one output per input) under at_least_once and
// exactly_once_v2 at a 100 ms commit interval. Compare records/s ratios.
func BenchmarkCountingThroughput(b *testing.B) {
	b.Run("ceiling", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			brokers := benchCluster(b)
			b.StartTimer()
			start := time.Now()
			rawLoop(b, brokers)
			b.ReportMetric(benchRecords/time.Since(start).Seconds(), "records/s")
		}
	})
	for _, g := range []exactly.Guarantee{exactly.AtLeastOnce, exactly.ExactlyOnceV2} {
		b.Run(string(g), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				brokers := benchCluster(b)
				cfg := appConfig(brokers, b.TempDir(), g)
				cfg.CommitInterval = 100 * time.Millisecond
				cfg.Logger = nil
				b.StartTimer()
				start := time.Now()
				stop := startApp(b, countingApp(b, false), cfg)
				waitConsumed(b, brokers, "counting")
				elapsed := time.Since(start)
				b.StopTimer()
				stop()
				b.ReportMetric(benchRecords/elapsed.Seconds(), "records/s")
			}
		})
	}
}

// rawLoop consumes every input record in a group and produces one output
// per record, committing offsets after the outputs are acknowledged.
func rawLoop(b *testing.B, brokers []string) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumerGroup("raw"), kgo.ConsumeTopics("input"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	done := 0
	for done < benchRecords {
		fetches := cl.PollRecords(ctx, 10000)
		recs := fetches.Records()
		for _, r := range recs {
			cl.Produce(ctx, &kgo.Record{Topic: "output", Key: r.Key, Value: r.Value}, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		if err := cl.CommitRecords(ctx, recs...); err != nil {
			b.Fatal(err)
		}
		done += len(recs)
	}
}
