package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/internal/pgtest"
	"github.com/exactly-go/exactly/internal/wire"
	"github.com/exactly-go/exactly/outbox"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelperRelay())
	}
	pgtest.Main(m)
}

var aggregateTypes = []string{"order", "payment"}

// newKafka starts an in-process broker with the topics the default routing
// produces for aggregateTypes.
func newKafka(t testing.TB) []string {
	t.Helper()
	var topics []string
	for _, a := range aggregateTypes {
		topics = append(topics, a+".events")
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	return cluster.ListenAddrs()
}

// connect opens a connection to dsn for the test; the caller closes it.
func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func migrated(t testing.TB, dsn string) {
	t.Helper()
	ctx := context.Background()
	conn := connect(t, dsn)
	defer conn.Close(ctx)
	if err := outbox.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
}

// written is what the writers put in the outbox, by event id.
type written struct {
	rounds int // calls of writeEvents so far: part of the ids
	mu     sync.Mutex
	events map[string]outbox.Event
	seq    map[string]int // per-aggregate sequence number of each event
}

// eventID is deterministic, so a writer retrying a commit whose outcome it
// did not learn writes the same id (and gets a unique violation if the first
// attempt had committed).
func eventID(round, writer, n int) string {
	return fmt.Sprintf("00000000-%04x-7%03x-8000-%012x", writer, round, n)
}

// writeEvents writes total events from workers concurrent writers, one to
// three events per transaction. Each writer owns its aggregates, so an
// aggregate's events commit in sequence order. Writes are retried through
// server restarts.
func writeEvents(ctx context.Context, t testing.TB, dsn string, workers, total int, w *written) {
	t.Helper()
	w.mu.Lock()
	if w.events == nil {
		w.events, w.seq = map[string]outbox.Event{}, map[string]int{}
	}
	round := w.rounds
	w.rounds++
	w.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for worker := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(worker), uint64(round)))
			seq := map[string]int{}
			n := 0
			quota := total / workers
			if worker < total%workers {
				quota++
			}
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(context.Background())
				}
			}()
			for n < quota {
				size := min(1+rng.IntN(3), quota-n)
				var events []outbox.Event
				for range size {
					aggType := aggregateTypes[rng.IntN(len(aggregateTypes))]
					aggID := fmt.Sprintf("%s-%d-%d-%d", aggType, round, worker, rng.IntN(20))
					seq[aggID]++
					id := eventID(round, worker, n)
					events = append(events, outbox.Event{
						ID: id, AggregateType: aggType, AggregateID: aggID, EventType: "Created",
						Payload: fmt.Appendf(nil, `{"id": %q,  "seq":%d}`, id, seq[aggID]),
						Headers: map[string]string{"traceId": "t-" + id},
					})
					w.mu.Lock()
					w.events[id] = events[len(events)-1]
					w.seq[id] = seq[aggID]
					w.mu.Unlock()
					n++
				}
				for attempt := 0; ; attempt++ {
					if ctx.Err() != nil {
						errs <- ctx.Err()
						return
					}
					if conn == nil || conn.IsClosed() {
						var err error
						if conn, err = pgx.Connect(ctx, dsn); err != nil {
							time.Sleep(50 * time.Millisecond)
							continue
						}
					}
					err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
						for _, e := range events {
							if _, err := outbox.Write(ctx, tx, e); err != nil {
								return err
							}
						}
						return nil
					})
					var pgErr *pgconn.PgError
					if err == nil || errors.As(err, &pgErr) && pgErr.Code == "23505" {
						break // committed now, or by an attempt whose answer was lost
					}
					if attempt > 200 {
						errs <- err
						return
					}
					conn.Close(context.Background())
					conn = nil
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("writer: %v", err)
	}
}

// received collects what a consumer of the outbox topics saw.
type received struct {
	mu       sync.Mutex
	records  map[string]*kgo.Record // first delivery of each id
	arrived  map[string]time.Time   // when the first delivery was polled
	order    map[string][]string    // per key, ids in first-delivery order
	total    int
	progress chan struct{} // signalled on every new id
}

func consume(ctx context.Context, t testing.TB, brokers []string) *received {
	t.Helper()
	var topics []string
	for _, a := range aggregateTypes {
		topics = append(topics, a+".events")
	}
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	r := &received{records: map[string]*kgo.Record{}, arrived: map[string]time.Time{}, order: map[string][]string{}, progress: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; client.Close() })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fetches := client.PollFetches(ctx)
			now := time.Now()
			r.mu.Lock()
			fetches.EachRecord(func(rec *kgo.Record) {
				r.total++
				id := header(rec, "id")
				if _, dup := r.records[id]; dup {
					return
				}
				r.records[id] = rec
				r.arrived[id] = now
				r.order[string(rec.Key)] = append(r.order[string(rec.Key)], id)
			})
			r.mu.Unlock()
			select {
			case r.progress <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

func header(rec *kgo.Record, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func (r *received) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.records)
}

// waitFor waits until n distinct ids arrived.
func (r *received) waitFor(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for r.distinct() < n {
		select {
		case <-r.progress:
		case <-deadline:
			t.Fatalf("received %d of %d events within %s", r.distinct(), n, timeout)
		}
	}
}

// check verifies that every written event arrived once at least, routed,
// keyed and with headers and payload as written, in per-aggregate order, and
// returns the number of duplicate deliveries.
func (r *received) check(t testing.TB, w *written) int {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(r.records) != len(w.events) {
		t.Errorf("distinct events received = %d, want %d", len(r.records), len(w.events))
	}
	bad := 0
	for id, e := range w.events {
		rec, ok := r.records[id]
		switch {
		case !ok:
			t.Errorf("event %s lost", id)
		case rec.Topic != e.AggregateType+".events" || string(rec.Key) != e.AggregateID ||
			string(rec.Value) != string(e.Payload) || header(rec, "eventType") != e.EventType ||
			header(rec, "traceId") != e.Headers["traceId"]:
			t.Errorf("event %s arrived as topic %s key %s value %s headers %v; wrote %+v", id, rec.Topic, rec.Key, rec.Value, rec.Headers, e)
		default:
			continue
		}
		if bad++; bad > 5 {
			t.FailNow()
		}
	}
	for key, ids := range r.order {
		for i := 1; i < len(ids); i++ {
			if w.seq[ids[i]] <= w.seq[ids[i-1]] {
				t.Fatalf("aggregate %s: event seq %d arrived after seq %d", key, w.seq[ids[i]], w.seq[ids[i-1]])
			}
		}
	}
	return r.total - len(r.records)
}

func outboxRows(t testing.TB, dsn string) int {
	t.Helper()
	ctx := context.Background()
	conn := connect(t, dsn)
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitEmpty waits until the relay cleaned up every row.
func waitEmpty(t testing.TB, dsn string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for n := outboxRows(t, dsn); n > 0; n = outboxRows(t, dsn) {
		if time.Now().After(deadline) {
			t.Fatalf("%d relayed rows left in the outbox", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startRelay(t testing.TB, cfg Config) (stop func()) {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("relay: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// startRelayStreaming is startRelay that, in CDC mode, returns once the
// relay's slot exists: rows written after come through the replication
// stream, not the backfill.
func startRelayStreaming(t *testing.T, cfg Config) (stop func()) {
	t.Helper()
	stop = startRelay(t, cfg)
	waitStreaming(t, cfg)
	return stop
}

// runRelayToItsEnd runs a relay with cfg that is to end by itself, on a
// row it may not publish, and returns as startRelayStreaming does. ended
// waits for what Run returned; it fails the test if Run did not end by
// itself within 60 s of the start.
func runRelayToItsEnd(t *testing.T, cfg Config) (ended func() error) {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitStreaming(t, cfg)
	return func() error {
		t.Helper()
		err := <-done
		if ctx.Err() != nil {
			t.Fatalf("Run did not end by itself within 60s: %v", err)
		}
		return err
	}
}

// waitStreaming waits, in CDC mode, until the relay created its slot.
func waitStreaming(t *testing.T, cfg Config) {
	t.Helper()
	if cfg.Mode != ModePoll {
		waitSlot(t, cfg.DSN)
	}
}

func TestRelayPublishesConcurrentWritesRoutedKeyedWithHeadersAndCleansUp(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		total int
	}{
		{"cdc", Config{Mode: ModeCDC}, 10000},
		{"cdc-transactional", Config{Mode: ModeCDC, TransactionalID: "relay-1"}, 3000},
		{"poll", Config{Mode: ModePoll}, 10000},
		{"poll-transactional", Config{Mode: ModePoll, TransactionalID: "relay-1"}, 3000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := pgtest.NewDatabase(t)
			migrated(t, dsn)
			brokers := newKafka(t)
			got := consume(ctx, t, brokers)
			reg := prometheus.NewRegistry()
			cfg := tc.cfg
			cfg.DSN, cfg.Kafka, cfg.Registerer = dsn, []kgo.Opt{kgo.SeedBrokers(brokers...)}, reg
			cfg.StatusInterval = 100 * time.Millisecond
			startRelay(t, cfg)
			var w written
			writeEvents(ctx, t, dsn, 4, tc.total, &w)
			got.waitFor(t, tc.total, 90*time.Second)
			if dups := got.check(t, &w); dups != 0 {
				t.Errorf("duplicates without a crash = %d, want 0", dups)
			}
			waitEmpty(t, dsn)
			if n := counterValue(t, reg, "outbox_relay_rows_total"); n != float64(tc.total) {
				t.Errorf("outbox_relay_rows_total = %v, want %d", n, tc.total)
			}
		})
	}
}

func counterValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestCDCRelayPublishesRowsWrittenBeforeItsSlotExisted(t *testing.T) {
	for _, slotLeftByCrash := range []bool{false, true} {
		t.Run(fmt.Sprintf("slot-left-by-crashed-backfill=%v", slotLeftByCrash), func(t *testing.T) {
			ctx := context.Background()
			dsn := pgtest.NewDatabase(t)
			migrated(t, dsn)
			brokers := newKafka(t)
			var w written
			writeEvents(ctx, t, dsn, 2, 200, &w) // before the relay ever ran
			if slotLeftByCrash {
				// A relay that created its slot and died before its
				// backfill committed: the slot exists, the record of the
				// backfill does not.
				conn := connect(t, dsn)
				for _, sql := range []string{
					`CREATE PUBLICATION exactly_outbox FOR TABLE outbox WITH (publish = 'insert')`,
					`SELECT pg_create_logical_replication_slot('exactly_outbox', 'pgoutput')`,
				} {
					if _, err := conn.Exec(ctx, sql); err != nil {
						t.Fatal(err)
					}
				}
				conn.Close(ctx)
				writeEvents(ctx, t, dsn, 1, 50, &w) // after the slot: may arrive twice
			}
			got := consume(ctx, t, brokers)
			startRelay(t, Config{DSN: dsn, Kafka: []kgo.Opt{kgo.SeedBrokers(brokers...)}})
			want := len(w.events)
			got.waitFor(t, want, 60*time.Second)
			dups := got.check(t, &w)
			if !slotLeftByCrash && dups != 0 {
				t.Errorf("duplicates = %d, want 0: a new slot's snapshot splits the rows exactly", dups)
			}
			waitEmpty(t, dsn)
		})
	}
}

func TestCustomTopicReplacementRoutesByAggregateType(t *testing.T) {
	r, err := New(Config{DSN: "host=/nonexistent", TopicReplacement: "outbox.event.${aggregate_type}"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.client.Close()
	rec, err := r.router.record(textRow(r.router, map[string]string{"id": "i", "aggregate_type": "order", "aggregate_id": "o-1", "event_type": "OrderCreated", "payload": `{}`, "headers": `{"n": 1, "s": "x"}`}))
	if err != nil {
		t.Fatal(err)
	}
	var hs []string
	for _, h := range rec.Headers {
		hs = append(hs, h.Key+"="+string(h.Value))
	}
	if rec.Topic != "outbox.event.order" || strings.Join(hs, ",") != "id=i,eventType=OrderCreated,n=1,s=x" {
		t.Fatalf("record topic %s headers %v", rec.Topic, hs)
	}
}

func TestSecondCDCRelayOnTheSlotTakesOverWhenTheFirstStops(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	migrated(t, dsn)
	brokers := newKafka(t)
	got := consume(ctx, t, brokers)
	cfg := Config{DSN: dsn, Kafka: []kgo.Opt{kgo.SeedBrokers(brokers...)}, StatusInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
	stopFirst := startRelay(t, cfg)
	var w written
	writeEvents(ctx, t, dsn, 2, 500, &w)
	got.waitFor(t, 500, 60*time.Second)
	startRelay(t, cfg) // waits for the slot
	stopFirst()
	writeEvents(ctx, t, dsn, 2, 500, &w)
	got.waitFor(t, len(w.events), 60*time.Second)
	got.check(t, &w)
}

// TestUnroutableRowIsDeadLetteredAndTheRelayGoesOn: a row whose aggregate
// type makes no valid topic name sits between good rows. With a
// DeadLetterTopic the relay publishes it there with its reason, publishes
// the good rows after it, and cleans the table (CDC: it confirmed past the
// row; poll: it deleted it).
func TestUnroutableRowIsDeadLetteredAndTheRelayGoesOn(t *testing.T) {
	for _, mode := range []Mode{ModeCDC, ModePoll} {
		t.Run(string(mode), func(t *testing.T) {
			ctx := context.Background()
			dsn := pgtest.NewDatabase(t)
			migrated(t, dsn)
			brokers := newKafka(t)
			admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close()
			if _, err := kadm.NewClient(admin).CreateTopic(ctx, 1, 1, nil, "outbox-dlq"); err != nil {
				t.Fatal(err)
			}
			got := consume(ctx, t, brokers)
			startRelay(t, Config{DSN: dsn, Mode: mode, DeadLetterTopic: "outbox-dlq", StatusInterval: 100 * time.Millisecond,
				Kafka: []kgo.Opt{kgo.SeedBrokers(brokers...)}})
			conn := connect(t, dsn)
			defer conn.Close(ctx)
			for i, aggregateType := range []string{"order", "order", "not a topic", "order", "payment"} {
				tx, err := conn.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := outbox.Write(ctx, tx, outbox.Event{ID: fmt.Sprintf("00000000-0000-7000-8000-%012d", i), AggregateType: aggregateType, AggregateID: fmt.Sprint("a-", i),
					EventType: "Happened", Payload: []byte(`{}`)}); err != nil {
					t.Fatal(err)
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			got.waitFor(t, 4, 30*time.Second)
			waitEmpty(t, dsn)
			dl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("outbox-dlq"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer dl.Close()
			pollCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			recs := dl.PollFetches(pollCtx).Records()
			if len(recs) != 1 || header(recs[0], "id") != "00000000-0000-7000-8000-000000000002" || header(recs[0], wire.HeaderErrorReason) != ReasonUnroutable ||
				!strings.Contains(header(recs[0], wire.HeaderErrorMessage), "not a valid topic name") {
				t.Fatalf("dead letters %v, want row 2 as %s", recs, ReasonUnroutable)
			}
		})
	}
}

// TestUnroutableRowWithoutADeadLetterTopicEndsRun: without a
// DeadLetterTopic an unroutable row is neither dropped nor retried forever
// (a restart loop that holds the WAL and says nothing new): Run returns
// ErrRowUnroutable naming the row and the reason, and the row stays.
func TestUnroutableRowWithoutADeadLetterTopicEndsRun(t *testing.T) {
	for _, mode := range []Mode{ModeCDC, ModePoll} {
		t.Run(string(mode), func(t *testing.T) {
			dsn := pgtest.NewDatabase(t)
			migrated(t, dsn)
			brokers := newKafka(t)
			ended := runRelayToItsEnd(t, Config{DSN: dsn, Mode: mode, StatusInterval: 50 * time.Millisecond, PollInterval: 20 * time.Millisecond,
				Kafka: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Logger: slog.New(slog.DiscardHandler)})
			ctx := context.Background()
			conn := connect(t, dsn)
			defer conn.Close(ctx)
			const id = "00000000-0000-7000-8000-000000000042"
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := outbox.Write(ctx, tx, outbox.Event{ID: id, AggregateType: "not a topic", AggregateID: "a-1", EventType: "Happened", Payload: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			err = ended()
			if !errors.Is(err, ErrRowUnroutable) || !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), "not a valid topic name") {
				t.Fatalf("Run = %v, want ErrRowUnroutable naming row %s and why", err, id)
			}
			var left bool
			if err := conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM outbox WHERE id = $1)`, id).Scan(&left); err != nil || !left {
				t.Errorf("unroutable row left in the table: %v (%v), want true", left, err)
			}
		})
	}
}
