package inbox

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkInbox compares one transaction per event with batches, every event
// new and its effect one row in effects, on one connection: per-event
// effects in a batch (ProcessBatch) and one set-based effect (ProcessBulk).
func BenchmarkInbox(b *testing.B) {
	cases := []struct {
		name  string
		batch int
		bulk  bool
	}{
		{"per-event", 1, false},
		{"batch=100", 100, false},
		{"bulk=100", 100, true},
		{"bulk=1000", 1000, true},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			pool := newPool(b)
			in := New(pool, "bench", Options{})
			ids := make([]string, bc.batch)
			n := 0
			start := time.Now()
			for b.Loop() {
				for i := range ids {
					ids[i] = fmt.Sprintf("e-%d", n)
					n++
				}
				var err error
				switch {
				case bc.batch == 1:
					_, err = in.Process(ctx, ids[0], recordEffect(ids[0]))
				case bc.bulk:
					_, err = in.ProcessBulk(ctx, ids, func(ctx context.Context, tx pgx.Tx, fresh []int) ([][]byte, error) {
						freshIDs := make([]string, len(fresh))
						for j, i := range fresh {
							freshIDs[j] = ids[i]
						}
						_, err := tx.Exec(ctx, `INSERT INTO effects (event_id) SELECT unnest($1::text[])`, freshIDs)
						return make([][]byte, len(fresh)), err
					})
				default:
					_, err = in.ProcessBatch(ctx, ids, func(ctx context.Context, tx pgx.Tx, i int) ([]byte, error) {
						return recordEffect(ids[i])(ctx, tx)
					})
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkConsumer measures the Kafka consumer end to end (kfake broker,
// real PostgreSQL): 20,000 new events, one transaction per event vs batches.
// One scenario per case; run with -benchtime=1x.
func BenchmarkConsumer(b *testing.B) {
	cases := []struct {
		name  string
		batch int
		bulk  bool
	}{{"per-event", 1, false}, {"batch=100", 100, false}, {"bulk=500", 500, true}}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				pool := newPool(b)
				ids := seq(20000, "e-%d")
				brokers := newBroker(b, ids)
				seen := newTally(len(ids))
				var first time.Time // the group join is not part of the rate
				cfg := ConsumerConfig{Inbox: New(pool, "bench", Options{}), BatchSize: bc.batch,
					OnResult: func(r *kgo.Record, res Result) {
						if first.IsZero() {
							first = time.Now()
						}
						seen.onResult(r, res)
					},
					Kafka: kafkaOpts(brokers, "bench")}
				if bc.bulk {
					cfg.BulkHandler = bulkEffectHandler
				} else {
					cfg.Handler = effectHandler
				}
				c, err := NewConsumer(cfg)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				errc := make(chan error, 1)
				go func() { errc <- c.Run(ctx) }()
				<-seen.done
				elapsed := time.Since(first)
				cancel()
				<-errc
				b.ReportMetric(float64(len(ids))/elapsed.Seconds(), "events/s")
			}
		})
	}
}
