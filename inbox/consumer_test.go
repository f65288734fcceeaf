package inbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/internal/pgtest"
)

const topic = "payment-orders"

// newBroker starts an in-process Kafka broker with topic and produces one
// record per id, in order, keyed by id, with the id in header "id".
func newBroker(t testing.TB, ids []string) []string {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	producer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	records := make([]*kgo.Record, len(ids))
	for i, id := range ids {
		records[i] = &kgo.Record{
			Topic:   topic,
			Key:     []byte(id),
			Value:   fmt.Appendf(nil, `{"eventId":%q,"orderId":"o-%s","amountCents":1299,"currency":"EUR"}`, id, id),
			Headers: []kgo.RecordHeader{{Key: "id", Value: []byte(id)}},
		}
	}
	if err := producer.ProduceSync(context.Background(), records...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return cluster.ListenAddrs()
}

func kafkaOpts(brokers []string, group string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(6 * time.Second),
		kgo.HeartbeatInterval(500 * time.Millisecond),
		kgo.FetchMaxWait(100 * time.Millisecond),
	}
}

func effectHandler(ctx context.Context, tx pgx.Tx, r *kgo.Record) ([]byte, error) {
	return recordEffect(string(r.Key))(ctx, tx)
}

// tally counts the results a consumer reports and signals when it has seen
// want deliveries.
type tally struct {
	want       int64
	seen       atomic.Int64
	duplicates atomic.Int64
	done       chan struct{}
	once       sync.Once
}

func newTally(want int) *tally { return &tally{want: int64(want), done: make(chan struct{})} }

func (c *tally) onResult(_ *kgo.Record, r Result) {
	if r.Duplicate {
		c.duplicates.Add(1)
	}
	if c.seen.Add(1) >= c.want {
		c.once.Do(func() { close(c.done) })
	}
}

// runUntil runs consumer until tally has seen its deliveries.
func runUntil(t *testing.T, c *Consumer, seen *tally) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	select {
	case <-seen.done:
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("consumer: %v", err)
		}
	case err := <-errc:
		cancel()
		t.Fatalf("consumer stopped early after %d deliveries: %v", seen.seen.Load(), err)
	case <-time.After(90 * time.Second):
		cancel()
		<-errc
		t.Fatalf("consumer saw %d of %d deliveries in 90s", seen.seen.Load(), seen.want)
	}
}

func seq(n int, format string) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf(format, i)
	}
	return ids
}

func TestConsumerKilledBetweenDBCommitAndOffsetCommitRedeliversWithoutSecondEffect(t *testing.T) {
	for _, batch := range []int{1, 25} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			pool := newPool(t)
			ids := seq(300, "e-%d")
			brokers := newBroker(t, ids)
			in := New(pool, "payments", Options{})

			// First instance: processes one poll, commits it to the
			// database, and dies before committing offsets.
			var crashedAfter atomic.Int64
			first, err := NewConsumer(ConsumerConfig{Inbox: in, Handler: effectHandler, BatchSize: batch, Kafka: kafkaOpts(brokers, "payments")})
			if err != nil {
				t.Fatal(err)
			}
			first.afterDBCommit = func(records []*kgo.Record) bool {
				crashedAfter.Store(int64(len(records)))
				return true
			}
			if err := first.Run(context.Background()); !errors.Is(err, errCrashed) {
				t.Fatalf("first consumer: %v, want the simulated crash", err)
			}
			processed, _ := countEffects(t, pool)
			if processed == 0 || int64(processed) != crashedAfter.Load() {
				t.Fatalf("effects before crash = %d, records committed to the database = %d", processed, crashedAfter.Load())
			}

			// Second instance: sees the crashed poll again.
			seen := newTally(len(ids))
			second, err := NewConsumer(ConsumerConfig{Inbox: in, Handler: effectHandler, BatchSize: batch, OnResult: seen.onResult, Kafka: kafkaOpts(brokers, "payments")})
			if err != nil {
				t.Fatal(err)
			}
			runUntil(t, second, seen)
			rows, distinct := countEffects(t, pool)
			if rows != len(ids) || distinct != len(ids) {
				t.Fatalf("effects = %d rows, %d distinct; want %d each", rows, distinct, len(ids))
			}
			if got := seen.duplicates.Load(); got != int64(processed) {
				t.Fatalf("redelivered duplicates = %d, want the %d records of the crashed poll", got, processed)
			}
		})
	}
}

func TestTwoConsumersDeliveringThe500SameEventsConcurrentlyRun500Effects(t *testing.T) {
	pool := newPool(t)
	ids := seq(500, "e-%d")
	brokers := newBroker(t, ids)
	in := New(pool, "payments", Options{})
	// Two Kafka groups read the whole topic, so every event reaches the
	// inbox twice, at about the same time.
	var wg sync.WaitGroup
	tallies := []*tally{newTally(len(ids)), newTally(len(ids))}
	for i, seen := range tallies {
		c, err := NewConsumer(ConsumerConfig{Inbox: in, Handler: effectHandler, OnResult: seen.onResult, Kafka: kafkaOpts(brokers, fmt.Sprintf("reader-%d", i))})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { runUntil(t, c, seen) })
	}
	wg.Wait()
	rows, distinct := countEffects(t, pool)
	if rows != len(ids) || distinct != len(ids) {
		t.Fatalf("effects = %d rows, %d distinct; want %d each", rows, distinct, len(ids))
	}
	if d := tallies[0].duplicates.Load() + tallies[1].duplicates.Load(); d != int64(len(ids)) {
		t.Fatalf("duplicates = %d, want %d", d, len(ids))
	}
}

func bulkEffectHandler(ctx context.Context, tx pgx.Tx, records []*kgo.Record) ([][]byte, error) {
	ids := make([]string, len(records))
	for i, r := range records {
		ids[i] = string(r.Key)
	}
	_, err := tx.Exec(ctx, `INSERT INTO effects (event_id) SELECT unnest($1::text[])`, ids)
	return make([][]byte, len(records)), err
}

func TestBatchedConsumerWithDuplicatesInsideOneBatchRunsOneEffectEach(t *testing.T) {
	for _, bulk := range []bool{false, true} {
		t.Run(fmt.Sprintf("bulk=%v", bulk), func(t *testing.T) {
			pool := newPool(t)
			// Every event twice in a row: on one partition both copies land
			// in the same batch.
			var ids []string
			for _, id := range seq(200, "e-%d") {
				ids = append(ids, id, id)
			}
			brokers := newBroker(t, ids)
			seen := newTally(len(ids))
			cfg := ConsumerConfig{Inbox: New(pool, "payments", Options{}), BatchSize: 50, OnResult: seen.onResult, Kafka: kafkaOpts(brokers, "payments")}
			if bulk {
				cfg.BulkHandler = bulkEffectHandler
			} else {
				cfg.Handler = effectHandler
			}
			c, err := NewConsumer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- c.Run(ctx) }()
			defer func() { cancel(); <-errc }()
			select {
			case <-seen.done:
			case err := <-errc:
				t.Fatalf("consumer stopped after %d deliveries: %v", seen.seen.Load(), err)
			case <-time.After(60 * time.Second):
				t.Fatalf("consumer saw %d of %d deliveries", seen.seen.Load(), seen.want)
			}
			rows, distinct := countEffects(t, pool)
			if rows != 200 || distinct != 200 {
				t.Fatalf("effects = %d rows, %d distinct; want 200 each", rows, distinct)
			}
			if d := seen.duplicates.Load(); d != 200 {
				t.Fatalf("duplicates = %d, want 200", d)
			}
		})
	}
}

func TestConsumerRequiresAConsumerGroup(t *testing.T) {
	_, err := NewConsumer(ConsumerConfig{Inbox: New((*pgxpool.Pool)(nil), "g", Options{}), Handler: effectHandler, Kafka: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}})
	if err == nil {
		t.Fatal("NewConsumer without kgo.ConsumerGroup succeeded")
	}
}

func TestConsumerRetriesThroughAPostgreSQLCrashAndRunsEachEffectOnce(t *testing.T) {
	ctx := context.Background()
	cluster := pgtest.Start(t)
	cfg, err := pgxpool.ParseConfig(cluster.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE effects (event_id text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	ids := seq(3000, "e-%d")
	brokers := newBroker(t, ids)
	seen := newTally(len(ids))
	restarted := make(chan struct{})
	var crashOnce sync.Once
	c, err := NewConsumer(ConsumerConfig{Inbox: New(pool, "payments", Options{}), Handler: effectHandler, BatchSize: 10,
		OnResult: func(r *kgo.Record, res Result) {
			seen.onResult(r, res)
			if seen.seen.Load() >= 500 {
				crashOnce.Do(func() {
					// Crash the server from outside the consumer's goroutine,
					// while it keeps processing.
					go func() {
						defer close(restarted)
						defer func() { t.Logf("server restarted after %d of %d deliveries", seen.seen.Load(), len(ids)) }()
						if err := cluster.Restart(pgtest.Immediate); err != nil {
							t.Error(err)
						}
					}()
				})
			}
		},
		Kafka: kafkaOpts(brokers, "payments"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runUntil(t, c, seen)
	<-restarted
	rows, distinct := countEffects(t, pool)
	if rows != len(ids) || distinct != len(ids) {
		t.Fatalf("effects = %d rows, %d distinct; want %d each", rows, distinct, len(ids))
	}
}

// TestPoisonRecordsGoToTheDeadLetterTopicAndTheConsumerGoesOn: a record
// without an event id and one whose effect fails for good sit between good
// records. With a DeadLetterTopic, both are dead-lettered with their reason
// and source, the good records after them take effect, and the offsets of
// all are committed (a second consumer of the group finds nothing left).
func TestPoisonRecordsGoToTheDeadLetterTopicAndTheConsumerGoesOn(t *testing.T) {
	for _, batch := range []int{1, 10} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			pool := newPool(t)
			ids := seq(20, "e-%d")
			brokers := newBroker(t, ids)
			producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
			if err != nil {
				t.Fatal(err)
			}
			defer producer.Close()
			if _, err := kadm.NewClient(producer).CreateTopic(context.Background(), 1, 1, nil, "payment-orders-dlq"); err != nil {
				t.Fatal(err)
			}
			poison := []*kgo.Record{
				{Topic: topic, Key: []byte("no-id"), Value: []byte(`{}`)},
				{Topic: topic, Key: []byte("poison"), Value: []byte(`{}`), Headers: []kgo.RecordHeader{{Key: "id", Value: []byte("poison")}}},
			}
			good := seq(5, "late-%d")
			for _, id := range good {
				poison = append(poison, &kgo.Record{Topic: topic, Key: []byte(id), Value: []byte(`{}`), Headers: []kgo.RecordHeader{{Key: "id", Value: []byte(id)}}})
			}
			for _, r := range poison {
				r.Partition = 0
			}
			if err := producer.ProduceSync(context.Background(), poison...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			in := New(pool, "payments", Options{})
			handler := func(ctx context.Context, tx pgx.Tx, r *kgo.Record) ([]byte, error) {
				if string(r.Key) == "poison" {
					return nil, errors.New("the order does not exist")
				}
				return effectHandler(ctx, tx, r)
			}
			seen := newTally(len(ids) + len(good))
			c, err := NewConsumer(ConsumerConfig{Inbox: in, Handler: handler, BatchSize: batch, OnResult: seen.onResult,
				DeadLetterTopic: "payment-orders-dlq", Kafka: kafkaOpts(brokers, "payments")})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- c.Run(ctx) }()
			defer func() { cancel(); <-errc }()
			select {
			case <-seen.done:
			case err := <-errc:
				t.Fatalf("consumer stopped after %d deliveries: %v", seen.seen.Load(), err)
			case <-time.After(60 * time.Second):
				t.Fatalf("consumer saw %d of %d deliveries", seen.seen.Load(), seen.want)
			}
			rows, distinct := countEffects(t, pool)
			if want := len(ids) + len(good); rows != want || distinct != want {
				t.Fatalf("effects = %d rows, %d distinct; want %d each", rows, distinct, want)
			}
			dlq := readAll(t, brokers, "payment-orders-dlq", 2)
			reasons := map[string]string{}
			for _, r := range dlq {
				h := map[string]string{}
				for _, hd := range r.Headers {
					h[hd.Key] = string(hd.Value)
				}
				if h["exactly.source.topic"] != topic || h["exactly.source.partition"] != "0" || h["exactly.source.offset"] == "" || h["exactly.error.message"] == "" {
					t.Errorf("dead letter %s lacks its source or message: %v", r.Key, h)
				}
				reasons[string(r.Key)] = h["exactly.error.reason"]
			}
			if reasons["no-id"] != ReasonMissingEventID || reasons["poison"] != ReasonEffectFailed || len(dlq) != 2 {
				t.Fatalf("dead letters %v, want no-id as %s and poison as %s, once each", reasons, ReasonMissingEventID, ReasonEffectFailed)
			}
			// The group's offsets come to cover the poison records too.
			admin := kadm.NewClient(producer)
			ends, err := admin.ListEndOffsets(context.Background(), topic)
			if err != nil {
				t.Fatal(err)
			}
			behind := func() (lagging []string) {
				offsets, err := admin.FetchOffsets(context.Background(), "payments")
				if err != nil {
					t.Fatal(err)
				}
				ends.Each(func(e kadm.ListedOffset) {
					if o, _ := offsets.Lookup(topic, e.Partition); o.At != e.Offset {
						lagging = append(lagging, fmt.Sprintf("partition %d: committed %d, end %d", e.Partition, o.At, e.Offset))
					}
				})
				return lagging
			}
			for deadline := time.Now().Add(15 * time.Second); len(behind()) > 0; time.Sleep(100 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("offsets not committed past the records: %v", behind())
				}
			}
		})
	}
}

// readAll reads topic from the start until it holds want records (or 30 s
// passed) and a little longer, to catch extra ones.
func readAll(t *testing.T, brokers []string, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(30 * time.Second)
	var quiet time.Time
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		out = append(out, fs.Records()...)
		if len(out) >= want {
			if quiet.IsZero() {
				quiet = time.Now().Add(time.Second)
			} else if time.Now().After(quiet) {
				break
			}
		}
	}
	return out
}
