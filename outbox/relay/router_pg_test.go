package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/internal/pgtest"
	"github.com/exactly-go/exactly/internal/wire"
	"github.com/exactly-go/exactly/outbox"
)

// wantRecord is a record a router test expects. A nil key or value must
// arrive nil (a tombstone); headers are "key=value", or "key~part" for a
// value that contains part, in the record's order.
type wantRecord struct {
	topic      string
	key, value []byte
	headers    []string
	timestamp  time.Time // zero: not checked
}

const deadLetters = "outbox-dlq"

// dead is the dead letter of a row that could not be routed.
func dead(key, value []byte, id, eventType, why string) wantRecord {
	h := []string{"id=" + id}
	if eventType != "" {
		h = append(h, "eventType="+eventType)
	}
	return wantRecord{topic: deadLetters, key: key, value: value,
		headers: append(h, wire.HeaderErrorReason+"="+ReasonUnroutable, wire.HeaderErrorMessage+"~"+why)}
}

// stdInsert inserts into the standard outbox table, plus extra columns.
func stdInsert(n int, aggregateType, aggregateID string, extra ...string) string {
	cols, vals := "", ""
	for i := 0; i+1 < len(extra); i += 2 {
		cols += ", " + extra[i]
		vals += ", " + extra[i+1]
	}
	return fmt.Sprintf(`INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, headers%s)
VALUES ('%s', %s, '%s', 'Happened', '{"n":%d}', '{"trace":"t%d"}'%s)`, cols, uuidN(n), aggregateType, aggregateID, n, n, vals)
}

func uuidN(n int) string { return fmt.Sprintf("00000000-0000-7000-8000-%012d", n) }

func stdHeaders(n int, extra ...string) []string {
	return append([]string{"id=" + uuidN(n), "eventType=Happened", fmt.Sprintf("trace=t%d", n)}, extra...)
}

func stdValue(n int) []byte { return fmt.Appendf(nil, `{"n":%d}`, n) }

// nullablePayloadTable is an outbox whose payload may be NULL, as
// tombstones need.
const nullablePayloadTable = `CREATE TABLE events (
    id uuid PRIMARY KEY, aggregate_type text NOT NULL, aggregate_id text NOT NULL,
    event_type text NOT NULL, payload text, created_at timestamptz NOT NULL DEFAULT clock_timestamp())`

func eventsInsert(n int, payload string) string {
	return fmt.Sprintf(`INSERT INTO events (id, aggregate_type, aggregate_id, event_type, payload) VALUES ('%s', 'order', 'o-%d', 'Happened', %s)`, uuidN(n), n, payload)
}

type routerCase struct {
	name    string
	schema  []string // statements creating the table
	table   string   // default "outbox"
	router  Router
	rows    []string // inserts, one transaction each: the first half before the relay starts, the rest after
	want    []wantRecord
	cdcOnly bool
}

func routerCases() []routerCase {
	shown := time.Date(2021, 3, 4, 5, 6, 7, 891000000, time.UTC)
	return []routerCase{
		{
			name:   "route.by.field",
			schema: []string{outbox.SchemaSQL, `ALTER TABLE outbox ADD COLUMN tenant text`},
			router: Router{RouteByField: "tenant", RouteTopicReplacement: "${routedByValue}.events"},
			rows: []string{
				stdInsert(1, "'order'", "o-1", "tenant", "'acme'"),
				stdInsert(2, "'order'", "o-2", "tenant", "NULL"),
				stdInsert(3, "'order'", "o-3", "tenant", "'globex'"),
				stdInsert(4, "'order'", "o-4", "tenant", "'acme'"),
			},
			want: []wantRecord{
				{topic: "acme.events", key: []byte("o-1"), value: stdValue(1), headers: stdHeaders(1)},
				dead([]byte("o-2"), stdValue(2), uuidN(2), "Happened", "route-by column tenant is NULL"),
				{topic: "globex.events", key: []byte("o-3"), value: stdValue(3), headers: stdHeaders(3)},
				{topic: "acme.events", key: []byte("o-4"), value: stdValue(4), headers: stdHeaders(4)},
			},
		},
		{
			name:   "route.topic.regex",
			schema: []string{outbox.SchemaSQL},
			router: Router{RouteTopicRegex: `(?<domain>[a-z]+)_(?<kind>[a-z]+)`, RouteTopicReplacement: "${kind}.${domain}.v1"},
			rows: []string{
				stdInsert(1, "'shop_order'", "o-1"),
				stdInsert(2, "'payment'", "p-2"), // no match: the value is the topic, as Debezium
				stdInsert(3, "'shop_order'", "o-3"),
				stdInsert(4, "'not valid'", "x-4"),
			},
			want: []wantRecord{
				{topic: "order.shop.v1", key: []byte("o-1"), value: stdValue(1), headers: stdHeaders(1)},
				{topic: "payment", key: []byte("p-2"), value: stdValue(2), headers: stdHeaders(2)},
				{topic: "order.shop.v1", key: []byte("o-3"), value: stdValue(3), headers: stdHeaders(3)},
				dead([]byte("x-4"), stdValue(4), uuidN(4), "Happened", `routes to "not valid", which is not a valid topic name`),
			},
		},
		{
			name: "table.field.event.id,key,payload",
			schema: []string{`CREATE TABLE events (seq bigserial PRIMARY KEY, event_uuid text, aggregate_type text NOT NULL,
    partition_key text, body bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp())`},
			table:  "events",
			router: Router{FieldEventID: "event_uuid", FieldEventKey: "partition_key", FieldEventPayload: "body"},
			rows: []string{
				`INSERT INTO events (event_uuid, aggregate_type, partition_key, body) VALUES ('e-1', 'order', 'k-1', '\x00ff0a')`,
				`INSERT INTO events (event_uuid, aggregate_type, partition_key, body) VALUES ('e-2', 'order', NULL, '\x')`,
				`INSERT INTO events (event_uuid, aggregate_type, partition_key, body) VALUES (NULL, 'order', 'k-3', '\x01')`,
				`INSERT INTO events (event_uuid, aggregate_type, partition_key, body) VALUES ('e-4', 'order', 'k-4', '\x7b7d')`,
			},
			want: []wantRecord{
				{topic: "order.events", key: []byte("k-1"), value: []byte{0, 0xff, 0x0a}, headers: []string{"id=e-1"}},
				{topic: "order.events", key: nil, value: []byte{}, headers: []string{"id=e-2"}},
				{topic: deadLetters, key: []byte("k-3"), value: []byte{1}, headers: []string{"id=", wire.HeaderErrorReason + "=" + ReasonUnroutable, wire.HeaderErrorMessage + "~event id column event_uuid is NULL"}},
				{topic: "order.events", key: []byte("k-4"), value: []byte("{}"), headers: []string{"id=e-4"}},
			},
		},
		{
			// The database's own date style and time zone must not change
			// what the relay reads.
			name: "table.field.event.timestamp",
			schema: []string{outbox.SchemaSQL, `ALTER TABLE outbox ADD COLUMN occurred_at timestamptz`,
				`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET DateStyle = %L', current_database(), 'SQL, DMY');
    EXECUTE format('ALTER DATABASE %I SET TimeZone = %L', current_database(), 'Asia/Kolkata'); END $$`},
			router: Router{FieldEventTimestamp: "occurred_at"},
			rows: []string{
				stdInsert(1, "'order'", "o-1", "occurred_at", "'2021-03-04 05:06:07.891+00'"),
				stdInsert(2, "'order'", "o-2", "occurred_at", "'2021-03-04 12:06:07.891+07'"),
				stdInsert(3, "'order'", "o-3", "occurred_at", "'infinity'"),
				stdInsert(4, "'order'", "o-4", "occurred_at", "'2021-03-04 05:06:07.891+00'"),
			},
			want: []wantRecord{
				{topic: "order.events", key: []byte("o-1"), value: stdValue(1), headers: stdHeaders(1), timestamp: shown},
				{topic: "order.events", key: []byte("o-2"), value: stdValue(2), headers: stdHeaders(2), timestamp: shown},
				dead([]byte("o-3"), stdValue(3), uuidN(3), "Happened", `column occurred_at: "infinity" is not a time`),
				{topic: "order.events", key: []byte("o-4"), value: stdValue(4), headers: stdHeaders(4), timestamp: shown},
			},
		},
		{
			name:   "table.field.event.timestamp without time zone and in milliseconds",
			schema: []string{outbox.SchemaSQL, `ALTER TABLE outbox ADD COLUMN local_at timestamp, ADD COLUMN ms bigint`},
			router: Router{FieldEventTimestamp: "local_at", RouteByField: "aggregate_type", AdditionalFields: []AdditionalField{{Column: "ms", Placement: PlacementHeader}}},
			rows: []string{
				stdInsert(1, "'order'", "o-1", "local_at", "'2021-03-04 05:06:07.891'", "ms", "1"),
				stdInsert(2, "'order'", "o-2", "local_at", "'2021-03-04 05:06:07.891'", "ms", "2"),
			},
			want: []wantRecord{
				{topic: "order.events", key: []byte("o-1"), value: stdValue(1), headers: stdHeaders(1, "ms=1"), timestamp: shown},
				{topic: "order.events", key: []byte("o-2"), value: stdValue(2), headers: stdHeaders(2, "ms=2"), timestamp: shown},
			},
		},
		{
			name:   "table.fields.additional.placement",
			schema: []string{outbox.SchemaSQL, `ALTER TABLE outbox ADD COLUMN tenant text`},
			router: Router{AdditionalFields: []AdditionalField{{Column: "event_type", Placement: PlacementHeader, Alias: "type"}, {Column: "tenant", Placement: PlacementHeader}}},
			rows: []string{
				stdInsert(1, "'order'", "o-1", "tenant", "'acme'"),
				stdInsert(2, "'order'", "o-2", "tenant", "NULL"),
			},
			want: []wantRecord{
				{topic: "order.events", key: []byte("o-1"), value: stdValue(1), headers: stdHeaders(1, "type=Happened", "tenant=acme")},
				{topic: "order.events", key: []byte("o-2"), value: stdValue(2), headers: stdHeaders(2, "type=Happened", "tenant=")},
			},
		},
		{
			name:   "route.tombstone.on.empty.payload",
			schema: []string{nullablePayloadTable},
			table:  "events",
			router: Router{TombstoneOnEmptyPayload: true},
			rows:   []string{eventsInsert(1, `'{"a":1}'`), eventsInsert(2, "NULL"), eventsInsert(3, "''"), eventsInsert(4, "'  '")},
			want: []wantRecord{
				{topic: "order.events", key: []byte("o-1"), value: []byte(`{"a":1}`), headers: []string{"id=" + uuidN(1), "eventType=Happened"}},
				{topic: "order.events", key: []byte("o-2"), value: nil, headers: []string{"id=" + uuidN(2), "eventType=Happened"}},
				{topic: "order.events", key: []byte("o-3"), value: nil, headers: []string{"id=" + uuidN(3), "eventType=Happened"}},
				{topic: "order.events", key: []byte("o-4"), value: nil, headers: []string{"id=" + uuidN(4), "eventType=Happened"}},
			},
		},
		{
			name:   "NULL payload without route.tombstone.on.empty.payload",
			schema: []string{nullablePayloadTable},
			table:  "events",
			rows:   []string{eventsInsert(1, `'{"a":1}'`), eventsInsert(2, "NULL"), eventsInsert(3, "''"), eventsInsert(4, `'{"a":4}'`)},
			want: []wantRecord{
				{topic: "order.events", key: []byte("o-1"), value: []byte(`{"a":1}`), headers: []string{"id=" + uuidN(1), "eventType=Happened"}},
				dead([]byte("o-2"), nil, uuidN(2), "Happened", "payload column payload is NULL"),
				{topic: "order.events", key: []byte("o-3"), value: []byte{}, headers: []string{"id=" + uuidN(3), "eventType=Happened"}},
				{topic: "order.events", key: []byte("o-4"), value: []byte(`{"a":4}`), headers: []string{"id=" + uuidN(4), "eventType=Happened"}},
			},
		},
		{
			// Debezium's own outbox table, which has no created_at: the
			// CDC relay's backfill reads it in primary key order.
			name: "a Debezium outbox table",
			schema: []string{`CREATE TABLE outboxevent (id uuid PRIMARY KEY, aggregatetype varchar(255) NOT NULL,
    aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload jsonb)`},
			table: "outboxevent",
			router: Router{RouteByField: "aggregatetype", RouteTopicReplacement: "outbox.event.${routedByValue}", FieldEventKey: "aggregateid",
				AdditionalFields: []AdditionalField{{Column: "type", Placement: PlacementHeader, Alias: "eventType"}}},
			rows: []string{
				fmt.Sprintf(`INSERT INTO outboxevent VALUES ('%s', 'order', '1', 'OrderCreated', '{"id": 1}')`, uuidN(1)),
				fmt.Sprintf(`INSERT INTO outboxevent VALUES ('%s', 'order', '1', 'OrderShipped', '{"id": 1}')`, uuidN(2)),
				fmt.Sprintf(`INSERT INTO outboxevent VALUES ('%s', 'order', '1', 'OrderClosed', '{"id": 1}')`, uuidN(3)),
			},
			want: []wantRecord{
				{topic: "outbox.event.order", key: []byte("1"), value: []byte(`{"id": 1}`), headers: []string{"id=" + uuidN(1), "eventType=OrderCreated"}},
				{topic: "outbox.event.order", key: []byte("1"), value: []byte(`{"id": 1}`), headers: []string{"id=" + uuidN(2), "eventType=OrderShipped"}},
				{topic: "outbox.event.order", key: []byte("1"), value: []byte(`{"id": 1}`), headers: []string{"id=" + uuidN(3), "eventType=OrderClosed"}},
			},
			cdcOnly: true,
		},
	}
}

// TestRouterOptionsShapeTheRecordsInBothModes: for each option, rows
// written before the relay starts (CDC: its backfill) and after (CDC: the
// replication stream) arrive routed, keyed, valued, stamped and headed as
// the option says, unroutable ones as dead letters, and the table is
// emptied.
func TestRouterOptionsShapeTheRecordsInBothModes(t *testing.T) {
	for _, tc := range routerCases() {
		for _, mode := range []Mode{ModeCDC, ModePoll} {
			if tc.cdcOnly && mode != ModeCDC {
				continue
			}
			t.Run(tc.name+"/"+string(mode), func(t *testing.T) {
				ctx := context.Background()
				dsn := pgtest.NewDatabase(t)
				execAll(t, dsn, tc.schema...)
				var topics []string
				for _, w := range tc.want {
					if !slices.Contains(topics, w.topic) {
						topics = append(topics, w.topic)
					}
				}
				cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, append(topics, deadLetters)...))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(cluster.Close)
				table := tc.table
				if table == "" {
					table = "outbox"
				}
				half := len(tc.rows) / 2
				execAll(t, dsn, tc.rows[:half]...)
				startRelay(t, Config{DSN: dsn, Mode: mode, Table: table, Router: tc.router, DeadLetterTopic: deadLetters,
					StatusInterval: 50 * time.Millisecond, PollInterval: 20 * time.Millisecond, Kafka: []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}})
				execAll(t, dsn, tc.rows[half:]...)

				got := collect(ctx, t, cluster.ListenAddrs(), topics, len(tc.want))
				for topic, recs := range got {
					var want []wantRecord
					for _, w := range tc.want {
						if w.topic == topic {
							want = append(want, w)
						}
					}
					if len(recs) != len(want) {
						t.Errorf("topic %s: %d records, want %d", topic, len(recs), len(want))
						continue
					}
					for i, rec := range recs {
						if problem := want[i].mismatch(rec); problem != "" {
							t.Errorf("topic %s record %d: %s", topic, i, problem)
						}
					}
				}
				waitTableEmpty(t, dsn, table)
			})
		}
	}
}

func (w wantRecord) mismatch(rec *kgo.Record) string {
	sameBytes := func(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }
	switch {
	case !sameBytes(rec.Key, w.key):
		return fmt.Sprintf("key %q (nil %v), want %q (nil %v)", rec.Key, rec.Key == nil, w.key, w.key == nil)
	case !sameBytes(rec.Value, w.value):
		return fmt.Sprintf("value %q (nil %v), want %q (nil %v)", rec.Value, rec.Value == nil, w.value, w.value == nil)
	case !w.timestamp.IsZero() && !rec.Timestamp.Equal(w.timestamp):
		return fmt.Sprintf("timestamp %v, want %v", rec.Timestamp.UTC(), w.timestamp)
	case len(rec.Headers) != len(w.headers):
		return fmt.Sprintf("headers %q, want %q", headerList(rec), w.headers)
	}
	for i, h := range rec.Headers {
		want := w.headers[i]
		if key, part, ok := strings.Cut(want, "~"); ok && h.Key == key && strings.Contains(string(h.Value), part) {
			continue
		}
		if h.Key+"="+string(h.Value) != want {
			return fmt.Sprintf("headers %q, want %q", headerList(rec), w.headers)
		}
	}
	return ""
}

// collect reads topics and the dead letters until n records arrived, and
// returns them by topic.
func collect(ctx context.Context, t *testing.T, brokers, topics []string, n int) map[string][]*kgo.Record {
	t.Helper()
	client, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(append(topics, deadLetters)...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	got := map[string][]*kgo.Record{}
	total := 0
	for total < n {
		fetches := client.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d records arrived: %v", total, n, got)
		}
		fetches.EachRecord(func(rec *kgo.Record) {
			got[rec.Topic] = append(got[rec.Topic], rec)
			total++
		})
	}
	return got
}

func execAll(t *testing.T, dsn string, statements ...string) {
	t.Helper()
	ctx := context.Background()
	conn := connect(t, dsn)
	defer conn.Close(ctx)
	for _, sql := range statements {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

func waitTableEmpty(t *testing.T, dsn, table string) {
	t.Helper()
	ctx := context.Background()
	conn := connect(t, dsn)
	defer conn.Close(ctx)
	for deadline := time.Now().Add(30 * time.Second); ; {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d relayed rows left in %s", n, table)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestColumnTheTableLacksStopsTheRelayAtStart: a column the options name
// that the table lacks, or of a type the option cannot use, ends Run with
// ErrTableColumns naming the column and the option, in both modes, before
// anything is published or created.
func TestColumnTheTableLacksStopsTheRelayAtStart(t *testing.T) {
	cases := []struct {
		name   string
		router Router
		schema []string
		modes  []Mode
		want   []string
	}{
		{"key", Router{FieldEventKey: "partition_key"}, nil, nil, []string{`"partition_key"`, "table.field.event.key"}},
		{"route by and payload", Router{RouteByField: "tenant", RouteTopicReplacement: "${routedByValue}", FieldEventPayload: "body"}, nil, nil,
			[]string{`"tenant" (Router.RouteByField (route.by.field))`, `"body" (Router.FieldEventPayload (table.field.event.payload))`}},
		{"additional field", Router{AdditionalFields: []AdditionalField{{Column: "tenant", Placement: PlacementHeader}}}, nil, nil, []string{`"tenant"`, "table.fields.additional.placement"}},
		{"timestamp of no time type", Router{FieldEventTimestamp: "event_type"}, nil, nil, []string{`"event_type" is of type text, which is no time`}},
		{"poll without created_at", Router{}, []string{`ALTER TABLE outbox DROP COLUMN created_at`}, []Mode{ModePoll}, []string{`"created_at"`}},
	}
	for _, tc := range cases {
		modes := tc.modes
		if modes == nil {
			modes = []Mode{ModeCDC, ModePoll}
		}
		for _, mode := range modes {
			t.Run(tc.name+"/"+string(mode), func(t *testing.T) {
				dsn := pgtest.NewDatabase(t)
				execAll(t, dsn, append([]string{outbox.SchemaSQL}, tc.schema...)...)
				r, err := New(Config{DSN: dsn, Mode: mode, Router: tc.router, Kafka: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				err = r.Run(ctx)
				if !errors.Is(err, ErrTableColumns) {
					t.Fatalf("Run = %v, want ErrTableColumns", err)
				}
				for _, want := range tc.want {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
				var publications int
				conn := connect(t, dsn)
				defer conn.Close(context.Background())
				if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_publication`).Scan(&publications); err != nil || publications != 0 {
					t.Errorf("publications after a refused start: %d (%v), want 0", publications, err)
				}
			})
		}
	}
}

// TestCDCRowsOfATableThatLostAColumnAreDeadLettered: a column the router
// needs, dropped while the CDC relay runs, makes the rows written after
// unroutable (the replication stream has them without it): they go to the
// dead-letter topic with the reason, and the relay goes on.
func TestCDCRowsOfATableThatLostAColumnAreDeadLettered(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	execAll(t, dsn, outbox.SchemaSQL, `ALTER TABLE outbox ADD COLUMN tenant text`)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "order.events", deadLetters))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	startRelay(t, Config{DSN: dsn, Router: Router{AdditionalFields: []AdditionalField{{Column: "tenant", Placement: PlacementHeader}}},
		DeadLetterTopic: deadLetters, StatusInterval: 50 * time.Millisecond, Kafka: []kgo.Opt{kgo.SeedBrokers(cluster.ListenAddrs()...)}})
	execAll(t, dsn, stdInsert(1, "'order'", "o-1", "tenant", "'acme'"))
	collect(ctx, t, cluster.ListenAddrs(), []string{"order.events"}, 1)
	execAll(t, dsn, `ALTER TABLE outbox DROP COLUMN tenant`, stdInsert(2, "'order'", "o-2"))
	got := collect(ctx, t, cluster.ListenAddrs(), []string{"order.events"}, 2)
	want := dead([]byte("o-2"), stdValue(2), uuidN(2), "Happened", `has no column "tenant"`)
	if len(got[deadLetters]) != 1 {
		t.Fatalf("dead letters %v, want row 2's", got[deadLetters])
	}
	if problem := want.mismatch(got[deadLetters][0]); problem != "" {
		t.Fatal(problem)
	}
	waitTableEmpty(t, dsn, "outbox")
}
