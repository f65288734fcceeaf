package relay

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/internal/pgtest"
	"github.com/exactly-go/exactly/outbox"
)

// BenchmarkRelay measures, per mode, the catch-up rate over a backlog of
// rows written while the relay was stopped, and the latency from a writer's
// COMMIT to the record's arrival at a consumer under a steady trickle of
// single-event transactions. One scenario per mode; run with -benchtime=1x.
//
//	go test -run '^$' -bench BenchmarkRelay -benchtime=1x ./outbox/relay
func BenchmarkRelay(b *testing.B) {
	for _, mode := range []Mode{ModeCDC, ModePoll} {
		b.Run(string(mode), func(b *testing.B) {
			for b.Loop() {
				rate, p50, p99 := relayScenario(b, mode, 20000, 2000)
				b.ReportMetric(rate, "rows/s")
				b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			}
		})
	}
}

func relayScenario(b *testing.B, mode Mode, backlog, trickle int) (rowsPerSecond float64, p50, p99 time.Duration) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(b)
	migrated(b, dsn)
	brokers := newKafka(b)
	got := consume(ctx, b, brokers)
	cfg := Config{DSN: dsn, Mode: mode, Kafka: []kgo.Opt{kgo.SeedBrokers(brokers...)}, PollInterval: 10 * time.Millisecond}

	// Create the slot, then stop: the backlog goes through the slot.
	stop := startRelay(b, cfg)
	var w written
	writeEvents(ctx, b, dsn, 1, 1, &w)
	got.waitFor(b, 1, 30*time.Second)
	stop()

	writeBacklog(ctx, b, dsn, backlog)
	start := time.Now()
	stop = startRelay(b, cfg)
	got.waitFor(b, 1+backlog, 120*time.Second)
	rowsPerSecond = float64(backlog) / time.Since(start).Seconds()
	// The backlog's cleanup is WAL the slot decodes too: let it pass, so
	// the latency below is the steady state's.
	waitEmpty(b, dsn)
	time.Sleep(time.Second)

	// Latency: one event per transaction, about 1 ms apart.
	conn := connect(b, dsn)
	defer conn.Close(ctx)
	var mu sync.Mutex
	committed := map[string]time.Time{}
	for i := range trickle {
		tx, err := conn.Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		id, err := outbox.Write(ctx, tx, outbox.Event{AggregateType: "order", AggregateID: fmt.Sprintf("o-%d", i%50), EventType: "Tick", Payload: []byte(`{}`)})
		if err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		committed[id] = time.Now() // just before COMMIT: the latency includes the commit itself
		mu.Unlock()
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	got.waitFor(b, 1+backlog+trickle, 60*time.Second)
	stop()

	got.mu.Lock()
	defer got.mu.Unlock()
	var latencies []time.Duration
	for id, at := range committed {
		latencies = append(latencies, got.arrived[id].Sub(at))
	}
	slices.Sort(latencies)
	return rowsPerSecond, latencies[len(latencies)/2], latencies[len(latencies)*99/100]
}

// writeBacklog writes n events in transactions of 100 from 4 connections.
func writeBacklog(ctx context.Context, b *testing.B, dsn string, n int) {
	var wg sync.WaitGroup
	for worker := range 4 {
		wg.Go(func() {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				b.Error(err)
				return
			}
			defer conn.Close(ctx)
			for start := worker * 100; start < n; start += 400 {
				err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
					for i := start; i < min(start+100, n); i++ {
						if _, err := outbox.Write(ctx, tx, outbox.Event{AggregateType: "order", AggregateID: fmt.Sprintf("o-%d", i%500), EventType: "Created",
							Payload: fmt.Appendf(nil, `{"n":%d,"pad":"%0200d"}`, i, 0)}); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
