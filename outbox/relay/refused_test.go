package relay

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	promsum "github.com/exactly-go/exactly/internal/metrics"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactly-go/exactly/internal/pgtest"
	"github.com/exactly-go/exactly/internal/wire"
	"github.com/exactly-go/exactly/outbox"
)

// refusal is one way a broker refuses a row for good, set up on a kfake
// cluster, and what the refused row looks like.
type refusal struct {
	name string
	// prepare configures the cluster after the topics exist.
	prepare func(t *testing.T, cluster *kfake.Cluster)
	// poison is the extra column values of the refused row: payload, and
	// occurred_at (the record's timestamp; NULL for the good rows).
	payload, occurredAt string
	// says is what the broker's error says.
	says string
}

// maxMessageBytes is order.events' max.message.bytes in these tests.
const maxMessageBytes = 10_000

// incompressible is n bytes of base64 text that no codec shrinks much.
func incompressible(n int) string {
	rng := rand.New(rand.NewPCG(1, 2))
	raw := make([]byte, n)
	for i := range raw {
		raw[i] = byte(rng.Uint32())
	}
	return base64.StdEncoding.EncodeToString(raw)[:n]
}

func refusals() []refusal {
	return []refusal{
		{
			// kfake enforces max.message.bytes on the whole batch, as a
			// broker does: the good rows sharing the big row's batch are
			// refused with it. The payload does not compress below the
			// limit.
			name:    "payload over max.message.bytes",
			payload: fmt.Sprintf(`{"blob":%q}`, incompressible(3*maxMessageBytes)),
			says:    "MESSAGE_TOO_LARGE",
		},
		{
			// A broker refuses a batch holding a timestamp further ahead
			// than log.message.timestamp.after.max.ms with
			// INVALID_TIMESTAMP. kfake does not check timestamps: a
			// fault refuses such a batch before kfake appends it, as the
			// broker would.
			name: "timestamp beyond log.message.timestamp.after.max.ms",
			prepare: func(t *testing.T, cluster *kfake.Cluster) {
				limit := time.Now().Add(365 * 24 * time.Hour).UnixMilli()
				cluster.Fault(kfake.Fault{
					Keys: []kmsg.Key{kmsg.Produce}, Topic: "order.events", Err: kerr.InvalidTimestamp, Count: -1,
					When: func(req kmsg.Request) bool {
						for _, topic := range req.(*kmsg.ProduceRequest).Topics {
							for _, p := range topic.Partitions {
								var batch kmsg.RecordBatch
								if batch.ReadFrom(p.Records) == nil && batch.MaxTimestamp > limit {
									return true
								}
							}
						}
						return false
					},
				})
			},
			payload:    `{"n":"poison"}`,
			occurredAt: "2200-01-01T00:00:00Z",
			says:       "INVALID_TIMESTAMP",
		},
	}
}

// refusedFixture is a database and a broker where row poisonRow of rows
// is refused for good: rows go in two transactions (the first holds the
// poison), keyed by two aggregates, to one single-partition topic, so that
// the order of every row is checked.
type refusedFixture struct {
	dsn     string
	cluster *kfake.Cluster
	brokers []string
	rows    int
	poison  int
	// poisonCommitted is the server's WAL position just after the
	// poison's transaction committed: a slot confirmed there or beyond has
	// passed it. lsnAfter is after the last transaction.
	poisonCommitted, lsnAfter pglogrepl.LSN
}

const poisonRow = 3

func newRefusedFixture(t *testing.T, how refusal) *refusedFixture {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	execAll(t, dsn, outbox.SchemaSQL, `ALTER TABLE outbox ADD COLUMN occurred_at timestamptz`)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	admin, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	limit := fmt.Sprint(maxMessageBytes)
	for topic, configs := range map[string]map[string]*string{"order.events": {"max.message.bytes": &limit}, deadLetters: nil} {
		if _, err := kadm.NewClient(admin).CreateTopic(ctx, 1, 1, configs, topic); err != nil {
			t.Fatal(err)
		}
	}
	if how.prepare != nil {
		how.prepare(t, cluster)
	}
	return &refusedFixture{dsn: dsn, cluster: cluster, brokers: cluster.ListenAddrs(), rows: 12, poison: poisonRow}
}

func (f *refusedFixture) key(n int) string { return fmt.Sprintf("o-%d", n%2) }

// write inserts the rows in two transactions, 0-5 (with the poison) and
// 6-11, and notes the WAL positions around them.
func (f *refusedFixture) write(t *testing.T, how refusal) {
	t.Helper()
	ctx := context.Background()
	conn := connect(t, f.dsn)
	defer conn.Close(ctx)
	for _, part := range [][2]int{{0, 6}, {6, f.rows}} {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for n := part[0]; n < part[1]; n++ {
			payload, occurredAt := string(stdValue(n)), any(nil)
			if n == f.poison {
				payload = how.payload
				if how.occurredAt != "" {
					occurredAt = how.occurredAt
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, occurred_at)
VALUES ($1, 'order', $2, 'Happened', $3, $4)`, uuidN(n), f.key(n), payload, occurredAt); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if part[0] <= f.poison && f.poison < part[1] {
			f.poisonCommitted = currentLSN(t, conn)
		}
	}
	f.lsnAfter = currentLSN(t, conn)
}

func currentLSN(t *testing.T, conn *pgx.Conn) pglogrepl.LSN {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// slotLSN is the slot's confirmed_flush_lsn; 0 while there is no slot.
func slotLSN(t *testing.T, dsn string) pglogrepl.LSN {
	t.Helper()
	ctx := context.Background()
	conn := connect(t, dsn)
	defer conn.Close(ctx)
	var s *string
	err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'exactly_outbox'`).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && s == nil {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(*s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// waitSlot waits until the CDC relay created its slot, so that rows
// written after come through the replication stream.
func waitSlot(t *testing.T, dsn string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); slotLSN(t, dsn) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the relay created no slot")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readAll returns every record of topic that a read_committed consumer
// sees, after n arrived and nothing more came.
func readAll(t *testing.T, brokers []string, topic string, n int) []*kgo.Record {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var recs []*kgo.Record
	deadline := time.Now().Add(30 * time.Second)
	for quiet := false; len(recs) < n || !quiet; {
		wait := 300 * time.Millisecond
		if len(recs) < n {
			wait = time.Until(deadline)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		fetches := client.PollFetches(ctx)
		cancel()
		got := fetches.Records()
		recs = append(recs, got...)
		quiet = len(got) == 0
		if len(recs) < n && time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d records arrived", topic, len(recs), n)
		}
	}
	return recs
}

func labelledCounter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	v, err := promsum.Sum(reg, name, label, value)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRowTheBrokerRefusesIsDeadLetteredAndTheRelayGoesOn: a row the broker
// refuses for good sits among good rows, in the same database transaction
// and Kafka batch as some. In both modes, with and without Kafka
// transactions, the good rows are published once each, in order; the
// refused row is on the dead-letter topic with the reason
// production-error and the broker's error; the table ends empty, and the
// CDC relay's slot confirms past the row. (CDC without transactions may
// publish a row that overtook the refused ones again after them, as the
// package documentation says; then the republished count explains every
// duplicate and each aggregate's last records are in order.)
func TestRowTheBrokerRefusesIsDeadLetteredAndTheRelayGoesOn(t *testing.T) {
	for _, how := range refusals() {
		for _, variant := range []struct {
			mode Mode
			// before: the rows are written before the relay starts
			// (ModeCDC: before its slot exists, so its backfill
			// publishes them).
			before bool
		}{{ModeCDC, false}, {ModeCDC, true}, {ModePoll, true}} {
			mode := variant.mode
			for _, transactional := range []bool{false, true} {
				name := string(mode)
				if mode == ModeCDC && variant.before {
					name += "-backfill"
				}
				if transactional {
					name += "-transactional"
				}
				t.Run(how.name+"/"+name, func(t *testing.T) {
					f := newRefusedFixture(t, how)
					reg := prometheus.NewRegistry()
					cfg := Config{DSN: f.dsn, Mode: mode, DeadLetterTopic: deadLetters, Router: Router{FieldEventTimestamp: "occurred_at"},
						StatusInterval: 50 * time.Millisecond, PollInterval: 20 * time.Millisecond, Registerer: reg,
						Kafka: []kgo.Opt{kgo.SeedBrokers(f.brokers...)}, Logger: slog.New(slog.DiscardHandler)}
					if transactional {
						cfg.TransactionalID = "relay-refused"
					}
					if variant.before {
						f.write(t, how) // one poll, or the backfill, takes them all
					}
					stop := startRelayStreaming(t, cfg)
					if !variant.before {
						f.write(t, how) // through the replication stream
					}
					dl := readAll(t, f.brokers, deadLetters, 1)
					waitTableEmpty(t, f.dsn, "outbox")
					if mode == ModeCDC {
						for deadline := time.Now().Add(30 * time.Second); slotLSN(t, f.dsn) < f.lsnAfter; time.Sleep(20 * time.Millisecond) {
							if time.Now().After(deadline) {
								t.Fatalf("slot confirmed %s, want past the rows' %s", slotLSN(t, f.dsn), f.lsnAfter)
							}
						}
					}
					stop()

					var want []string
					for n := range f.rows {
						if n != f.poison {
							want = append(want, uuidN(n))
						}
					}
					var got []string
					for _, rec := range readAll(t, f.brokers, "order.events", len(want)) {
						got = append(got, header(rec, "id"))
					}
					republished := counterValue(t, reg, "outbox_relay_republished_rows_total")
					if republished == 0 && !slices.Equal(got, want) {
						t.Errorf("published ids\n%q\nwant each good row once, in order\n%q", got, want)
					}
					if republished > 0 {
						// CDC without transactions: a record that overtook the
						// refused ones came again after them. Each aggregate's
						// last records are in order.
						if mode != ModeCDC || transactional {
							t.Errorf("outbox_relay_republished_rows_total = %v, want 0 in this mode", republished)
						}
						last := lastOccurrences(got)
						if len(got)-len(last) != int(republished) || !reflect.DeepEqual(perKey(f, last), perKey(f, want)) {
							t.Errorf("published ids\n%q\nwant each good row, and %v republished ones again, the last of each aggregate in order\n%q",
								got, republished, want)
						}
					}
					if len(dl) != 1 {
						t.Fatalf("%d dead letters, want 1", len(dl))
					}
					d := dl[0]
					if header(d, "id") != uuidN(f.poison) || string(d.Key) != f.key(f.poison) || string(d.Value) != how.payload ||
						header(d, "eventType") != "Happened" || header(d, wire.HeaderErrorReason) != ReasonProduction ||
						!strings.Contains(header(d, wire.HeaderErrorMessage), how.says) {
						t.Errorf("dead letter key %q value of %d bytes headers %q, want row %d's with reason %s saying %s",
							d.Key, len(d.Value), headerList(d), f.poison, ReasonProduction, how.says)
					}
					if n := counterValue(t, reg, "outbox_relay_refused_rows_total"); n != 1 {
						t.Errorf("outbox_relay_refused_rows_total = %v, want 1", n)
					}
					if n := labelledCounter(t, reg, "outbox_relay_dead_letters_total", "reason", ReasonProduction); n != 1 {
						t.Errorf("outbox_relay_dead_letters_total{reason=%s} = %v, want 1", ReasonProduction, n)
					}
					if n := counterValue(t, reg, "outbox_relay_rows_total"); n != float64(f.rows) {
						t.Errorf("outbox_relay_rows_total = %v, want %d (the dead letter is the refused row's record)", n, f.rows)
					}
				})
			}
		}
	}
}

// lastOccurrences is ids with each id kept where it last appears.
func lastOccurrences(ids []string) []string {
	var out []string
	for i, id := range ids {
		if !slices.Contains(ids[i+1:], id) {
			out = append(out, id)
		}
	}
	return out
}

// perKey groups ids by the aggregate of their row, in their order.
func perKey(f *refusedFixture, ids []string) map[string][]string {
	out := map[string][]string{}
	for _, id := range ids {
		var n int
		fmt.Sscanf(id[len(id)-12:], "%d", &n)
		out[f.key(n)] = append(out[f.key(n)], id)
	}
	return out
}

// TestRowTheBrokerRefusesWithoutADeadLetterTopicEndsRun: without a
// DeadLetterTopic a refused row is neither dropped nor retried forever:
// Run returns ErrRowRefused naming the row and the broker's error, the row
// stays in the table, and the CDC slot never confirms past it.
func TestRowTheBrokerRefusesWithoutADeadLetterTopicEndsRun(t *testing.T) {
	how := refusals()[0]
	for _, mode := range []Mode{ModeCDC, ModePoll} {
		for _, transactional := range []bool{false, true} {
			name := string(mode)
			if transactional {
				name += "-transactional"
			}
			t.Run(name, func(t *testing.T) {
				f := newRefusedFixture(t, how)
				reg := prometheus.NewRegistry()
				cfg := Config{DSN: f.dsn, Mode: mode, StatusInterval: 50 * time.Millisecond, PollInterval: 20 * time.Millisecond,
					Registerer: reg, Kafka: []kgo.Opt{kgo.SeedBrokers(f.brokers...)}, Logger: slog.New(slog.DiscardHandler)}
				if transactional {
					cfg.TransactionalID = "relay-refused"
				}
				if mode == ModePoll {
					f.write(t, how)
				}
				ended := runRelayToItsEnd(t, cfg)
				if mode == ModeCDC {
					f.write(t, how)
				}
				err := ended()
				if !errors.Is(err, ErrRowRefused) || !strings.Contains(err.Error(), uuidN(f.poison)) || !strings.Contains(err.Error(), how.says) {
					t.Fatalf("Run = %v, want ErrRowRefused naming row %s and %s", err, uuidN(f.poison), how.says)
				}
				conn := connect(t, f.dsn)
				defer conn.Close(context.Background())
				var left bool
				if err := conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM outbox WHERE id = $1)`, uuidN(f.poison)).Scan(&left); err != nil || !left {
					t.Errorf("refused row left in the table: %v (%v), want true", left, err)
				}
				if mode == ModeCDC {
					// The slot may move while idle with the WAL of other
					// databases on the server, up to the poison's
					// transaction, but never past its commit.
					if lsn := slotLSN(t, f.dsn); lsn >= f.poisonCommitted {
						t.Errorf("slot confirmed %s, past the refused row's transaction (committed by %s)", lsn, f.poisonCommitted)
					}
				}
				if n := counterValue(t, reg, "outbox_relay_refused_rows_total"); n != 1 {
					t.Errorf("outbox_relay_refused_rows_total = %v, want 1", n)
				}
			})
		}
	}
}

// TestRecordThatOvertookARefusedOneIsPublishedAgainAfterIt: without
// Kafka transactions a record produced just after franz-go failed the
// records of its partition can be acknowledged before those are
// published again. When a refused record of its aggregate then turns out
// good, the relay publishes the overtaking one again after it, so that the
// aggregate's last records are in order; an aggregate whose refused record
// was at fault keeps its records as they are.
func TestRecordThatOvertookARefusedOneIsPublishedAgainAfterIt(t *testing.T) {
	f := newRefusedFixture(t, refusals()[0])
	reg := prometheus.NewRegistry()
	r, err := New(Config{DSN: "host=/nonexistent", DeadLetterTopic: deadLetters, Registerer: reg,
		Kafka: []kgo.Opt{kgo.SeedBrokers(f.brokers...)}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.client.Close()
	rec := func(n int, key, value string) *pending {
		return &pending{id: uuidN(n), rec: &kgo.Record{Topic: "order.events", Key: []byte(key), Value: []byte(value),
			Headers: []kgo.RecordHeader{{Key: "id", Value: []byte(uuidN(n))}}}}
	}
	poison := fmt.Sprintf(`{"blob":%q}`, incompressible(3*maxMessageBytes))
	items := []*pending{
		rec(0, "a", "{}"),   // acknowledged before anything failed
		rec(1, "a", "{}"),   // refused with the poison's batch: good
		rec(2, "b", poison), // refused: at fault
		rec(3, "a", "{}"),   // overtook 1: published again after it
		rec(4, "b", "{}"),   // overtook 2, which is dead-lettered: left as is
		rec(5, "c", "{}"),   // no refused record of its aggregate
	}
	for _, n := range []int{1, 2} {
		items[n].err = kerr.MessageTooLarge
		items[n].suspect = true
	}
	again := afterRefusal(items)
	var ids []string
	for _, p := range again {
		ids = append(ids, p.id)
	}
	if want := []string{uuidN(1), uuidN(2), uuidN(3), uuidN(4)}; !slices.Equal(ids, want) {
		t.Fatalf("afterRefusal picked %q, want %q", ids, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.publishCarefully(ctx, again, false); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rec := range readAll(t, f.brokers, "order.events", 2) {
		got = append(got, header(rec, "id"))
	}
	if want := []string{uuidN(1), uuidN(3)}; !slices.Equal(got, want) {
		t.Errorf("published %q, want %q", got, want)
	}
	if dl := readAll(t, f.brokers, deadLetters, 1); header(dl[0], "id") != uuidN(2) {
		t.Errorf("dead letter of %s, want %s", header(dl[0], "id"), uuidN(2))
	}
	if !items[3].again || items[4].again || !items[2].deadLettered {
		t.Errorf("again %v %v, dead-lettered %v; want true false true", items[3].again, items[4].again, items[2].deadLettered)
	}
	if n := counterValue(t, reg, "outbox_relay_republished_rows_total"); n != 1 {
		t.Errorf("outbox_relay_republished_rows_total = %v, want 1", n)
	}
}

// TestTopicTheProducerMayNotWriteIsNotDeadLettered: TOPIC_AUTHORIZATION_FAILED
// is the configuration's fault, not the row's: every row of the topic would
// be refused alike until an ACL is granted. The relay retries its session
// meanwhile and publishes the rows once it may; nothing goes to the
// dead-letter topic.
func TestTopicTheProducerMayNotWriteIsNotDeadLettered(t *testing.T) {
	for _, mode := range []Mode{ModeCDC, ModePoll} {
		t.Run(string(mode), func(t *testing.T) {
			f := newRefusedFixture(t, refusal{payload: `{"n":"fine"}`})
			f.cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "order.events", Err: kerr.TopicAuthorizationFailed, Count: 2})
			reg := prometheus.NewRegistry()
			startRelayStreaming(t, Config{DSN: f.dsn, Mode: mode, DeadLetterTopic: deadLetters, StatusInterval: 50 * time.Millisecond,
				PollInterval: 20 * time.Millisecond, Registerer: reg, Kafka: []kgo.Opt{kgo.SeedBrokers(f.brokers...)},
				Logger: slog.New(slog.DiscardHandler)})
			f.write(t, refusal{payload: `{"n":"fine"}`})
			waitTableEmpty(t, f.dsn, "outbox")
			readAll(t, f.brokers, "order.events", f.rows)
			if n := counterValue(t, reg, "outbox_relay_session_restarts_total"); n == 0 {
				t.Error("no session restarted: the fault did not bite")
			}
			if n := counterValue(t, reg, "outbox_relay_refused_rows_total"); n != 0 {
				t.Errorf("outbox_relay_refused_rows_total = %v, want 0", n)
			}
			if n := labelledCounter(t, reg, "outbox_relay_dead_letters_total", "reason", ReasonProduction); n != 0 {
				t.Errorf("%v dead letters, want none", n)
			}
		})
	}
}

// TestDeadLetterTheDeadLetterTopicRefusesGoesWithoutItsValue: a row too
// large for its topic is likely too large for the dead-letter topic too;
// its dead letter then goes without the value, saying so, rather than
// stopping the relay.
func TestDeadLetterTheDeadLetterTopicRefusesGoesWithoutItsValue(t *testing.T) {
	f := newRefusedFixture(t, refusals()[0])
	admin, err := kgo.NewClient(kgo.SeedBrokers(f.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	limit := fmt.Sprint(maxMessageBytes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(admin).AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: &limit}}, deadLetters)
	if err == nil {
		_, err = resp.On(deadLetters, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{DSN: "host=/nonexistent", DeadLetterTopic: deadLetters,
		Kafka: []kgo.Opt{kgo.SeedBrokers(f.brokers...)}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.client.Close()
	big := &pending{id: uuidN(1), rec: &kgo.Record{Topic: "order.events", Key: []byte("a"), Value: []byte(incompressible(3 * maxMessageBytes)),
		Headers: []kgo.RecordHeader{{Key: "id", Value: []byte(uuidN(1))}}}}
	if refused, err := r.produceAll(ctx, []*pending{big}); err != nil || !refused {
		t.Fatalf("produceAll = %v, %v; want a refusal", refused, err)
	}
	if err := r.publishCarefully(ctx, afterRefusal([]*pending{big}), false); err != nil {
		t.Fatal(err)
	}
	dl := readAll(t, f.brokers, deadLetters, 1)[0]
	if dl.Value != nil || string(dl.Key) != "a" || header(dl, wire.HeaderErrorReason) != ReasonProduction ||
		!strings.Contains(header(dl, wire.HeaderErrorMessage), fmt.Sprintf("value of %d bytes dropped", 3*maxMessageBytes)) {
		t.Errorf("dead letter key %q value of %d bytes headers %q, want no value and a message saying it was dropped", dl.Key, len(dl.Value), headerList(dl))
	}
}
