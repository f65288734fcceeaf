// Command goka runs the orders projection (decode, dedup, reorder buffer
// with expiry, apply, emit) written with goka, at least once, with goka's
// default storage (LevelDB), against a running Kafka-protocol broker whose
// input topic already holds the generated stream. It is the goka side of
// `exactly bench`, kept in its own module so that the exactly module does
// not depend on goka.
//
// It prints one JSON object: records, seconds (from the processor being
// ready to every input offset and every expiry committed) and
// records_per_second. The output and dead-letter topics follow the orders
// wire contract, so the orders verifier can audit them.
//
//	go run . -brokers 127.0.0.1:9092 -records 60000
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"hash"
	"io"
	"log"
	"os"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/lovoo/goka"
	"github.com/lovoo/goka/codec"
	"github.com/lovoo/goka/storage"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	var (
		brokers    = flag.String("brokers", "127.0.0.1:9092", "comma-separated seed brokers")
		input      = flag.String("input", "order-events", "input topic")
		output     = flag.String("output", "goka-order-projections", "projection topic")
		dlq        = flag.String("dlq", "goka-order-events-dlq", "dead-letter topic")
		group      = flag.String("group", "goka-orders", "goka group (consumer group, table and loop topics)")
		records    = flag.Int64("records", 0, "input records to wait for (required)")
		dir        = flag.String("dir", "", "storage directory (default: a temporary directory)")
		interval   = flag.Duration("commit-interval", 100*time.Millisecond, "offset auto-commit interval")
		timeout    = flag.Duration("timeout", 5*time.Minute, "give up after this long")
		bufferTTL  = flag.Duration("buffer-ttl", 24*time.Hour, "reorder buffer TTL in stream time")
		sweepEvery = flag.Duration("sweep-interval", time.Minute, "expiry sweep interval in stream time")
	)
	flag.Parse()
	if *records <= 0 {
		log.Fatal("goka bench: -records is required")
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "goka-bench-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	res, err := run(config{
		brokers: strings.Split(*brokers, ","), input: *input, output: *output, dlq: *dlq, group: *group,
		records: *records, dir: *dir, commitInterval: *interval, timeout: *timeout,
		bufferTTL: bufferTTL.Milliseconds(), sweepInterval: sweepEvery.Milliseconds(),
	})
	if err != nil {
		log.Fatalf("goka bench: %v", err)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

type config struct {
	brokers                   []string
	input, output, dlq, group string
	records                   int64
	dir                       string
	commitInterval, timeout   time.Duration
	bufferTTL, sweepInterval  int64
}

type result struct {
	Records          int64   `json:"records"`
	Seconds          float64 `json:"seconds"`
	RecordsPerSecond float64 `json:"records_per_second"`
	StartupSeconds   float64 `json:"startup_seconds"`
}

func run(cfg config) (*result, error) {
	sc := goka.DefaultConfig()
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Offsets.AutoCommit.Interval = cfg.commitInterval
	sc.Producer.Compression = sarama.CompressionNone
	sc.Producer.RequiredAcks = sarama.WaitForAll
	goka.ReplaceGlobalConfig(sc)
	tm := goka.NewTopicManagerConfig()
	tm.Table.Replication, tm.Stream.Replication = 1, 1

	p := &projection{cfg: cfg, partitions: map[int32]*partitionState{}}
	graph := goka.DefineGroup(goka.Group(cfg.group),
		goka.Input(goka.Stream(cfg.input), new(codec.Bytes), p.process),
		goka.Loop(new(expiryCodec), p.expire),
		goka.Output(goka.Stream(cfg.output), new(codec.Bytes)),
		goka.Output(goka.Stream(cfg.dlq), new(codec.Bytes)),
		goka.Persist(new(stateCodec)),
	)
	proc, err := goka.NewProcessor(cfg.brokers, graph,
		goka.WithStorageBuilder(storage.DefaultBuilder(cfg.dir)),
		goka.WithTopicManagerBuilder(goka.TopicManagerBuilderWithConfig(sc, tm)),
		goka.WithHasher(kafkaHasher),
		goka.WithLogger(log.New(io.Discard, "", 0)),
	)
	if err != nil {
		return nil, fmt.Errorf("create processor: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	started := time.Now()
	runErr := make(chan error, 1)
	go func() { runErr <- proc.Run(ctx) }()
	if err := proc.WaitForReadyContext(ctx); err != nil {
		return nil, fmt.Errorf("wait for ready: %w", err)
	}
	finished, err := waitCommitted(ctx, cfg, runErr)
	if err != nil {
		return nil, err
	}
	// The clock starts at the first input record: goka's WaitForReady can
	// return before the group is joined, and the exactly side's clock
	// starts when it is ready to process, after joining.
	ready := time.Unix(0, p.firstRecord.Load())
	done := finished.Sub(ready)
	cancel()
	if err := <-runErr; err != nil && ctx.Err() == nil {
		return nil, err
	}
	return &result{Records: cfg.records, Seconds: done.Seconds(), RecordsPerSecond: float64(cfg.records) / done.Seconds(),
		StartupSeconds: ready.Sub(started).Seconds()}, nil
}

// waitCommitted waits until the group committed offsets covering all input
// and everything in its loop topic (the expiry messages), and that stayed
// so for settle, since a loop message may still be on its way when the
// input offsets are committed. It returns when the condition first held.
func waitCommitted(ctx context.Context, cfg config, runErr <-chan error) (time.Time, error) {
	const settle = 500 * time.Millisecond
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.brokers...))
	if err != nil {
		return time.Time{}, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	loop := strings.TrimSuffix(string(goka.GroupTable(goka.Group(cfg.group))), "-table") + "-loop"
	var heldSince time.Time
	lastEnd := int64(-1)
	for {
		select {
		case err := <-runErr:
			return time.Time{}, fmt.Errorf("processor stopped: %v", err)
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("timed out waiting for %d records", cfg.records)
		case <-time.After(20 * time.Millisecond):
		}
		now := time.Now()
		done, loopEnd, err := committed(ctx, adm, cfg, loop)
		if err != nil || !done || loopEnd != lastEnd {
			heldSince, lastEnd = time.Time{}, loopEnd
			continue
		}
		if heldSince.IsZero() {
			heldSince = now
		}
		if now.Sub(heldSince) >= settle {
			return heldSince, nil
		}
	}
}

func committed(ctx context.Context, adm *kadm.Client, cfg config, loop string) (bool, int64, error) {
	offs, err := adm.FetchOffsets(ctx, cfg.group)
	if err != nil {
		return false, -1, err
	}
	var input, loopDone int64
	offs.Each(func(o kadm.OffsetResponse) {
		switch o.Topic {
		case cfg.input:
			input += o.At
		case loop:
			loopDone += o.At
		}
	})
	ends, err := adm.ListEndOffsets(ctx, loop)
	if err != nil {
		return false, -1, err
	}
	var loopEnd int64
	ends.Each(func(o kadm.ListedOffset) { loopEnd += o.Offset })
	return input >= cfg.records && loopDone >= loopEnd, loopEnd, nil
}

// kafkaHasher makes goka partition as Kafka's default partitioner does
// (murmur2, sign bit cleared), so that the input (produced by Kafka
// clients), the table, the loop topic and the outputs agree on a key's
// partition.
func kafkaHasher() hash.Hash32 { return &murmur2{} }

type murmur2 struct{ data []byte }

func (m *murmur2) Write(p []byte) (int, error) { m.data = append(m.data, p...); return len(p), nil }
func (m *murmur2) Sum(b []byte) []byte {
	s := m.Sum32()
	return append(b, byte(s>>24), byte(s>>16), byte(s>>8), byte(s))
}
func (m *murmur2) Reset()         { m.data = m.data[:0] }
func (m *murmur2) Size() int      { return 4 }
func (m *murmur2) BlockSize() int { return 4 }

// Sum32 is Kafka's murmur2 of the written bytes with the sign bit cleared.
func (m *murmur2) Sum32() uint32 {
	b := m.data
	const (
		seed uint32 = 0x9747b28c
		mul  uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		k *= mul
		k ^= k >> r
		k *= mul
		h *= mul
		h ^= k
		b = b[4:]
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= mul
	}
	h ^= h >> 13
	h *= mul
	h ^= h >> 15
	return h & 0x7fffffff
}
