package relay

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// textRow decodes a row whose columns are all text; a column missing from
// values is NULL.
func textRow(rt *router, values map[string]string) row {
	return rt.decode(make([]uint32, len(rt.columns)), func(i int) ([]byte, error) {
		if v, ok := values[rt.columns[i]]; ok {
			return []byte(v), nil
		}
		return nil, nil
	})
}

func headerList(rec *kgo.Record) []string {
	var hs []string
	for _, h := range rec.Headers {
		hs = append(hs, h.Key+"="+string(h.Value))
	}
	return hs
}

func TestRouterRejectsWhatItCannotDoAtNew(t *testing.T) {
	cases := []struct {
		name        string
		router      Router
		replacement string // Config.TopicReplacement
		want        string
	}{
		{"regex that does not compile", Router{RouteTopicRegex: "(?<x>"}, "", "route.topic.regex"},
		{"replacement naming a group the regex has not", Router{RouteTopicRegex: "(?<type>.*)", RouteTopicReplacement: "${typo}.events"}, "", `refers to group "typo"`},
		{"replacement naming a group number past the regex's", Router{RouteTopicRegex: "(a)(b)", RouteTopicReplacement: "${3}"}, "", "refers to group 3"},
		{"aggregate_type while routing by another column", Router{RouteByField: "tenant"}, "", "write ${routedByValue}"},
		{"envelope placement", Router{AdditionalFields: []AdditionalField{{Column: "type", Placement: "envelope"}}}, "", `placement "envelope" is not supported`},
		{"partition placement", Router{AdditionalFields: []AdditionalField{{Column: "p", Placement: "partition"}}}, "", `placement "partition" is not supported`},
		{"additional field without column", Router{AdditionalFields: []AdditionalField{{Placement: PlacementHeader}}}, "", "has no column"},
		{"old and new replacement disagree", Router{RouteTopicReplacement: "a.${routedByValue}"}, "b.${aggregate_type}", "disagree"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{DSN: "host=/nonexistent", Router: tc.router, TopicReplacement: tc.replacement})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParseAdditionalFieldsReadsDebeziumSyntax(t *testing.T) {
	got, err := ParseAdditionalFields(" type:header:eventType, tenant:header ,")
	if err != nil {
		t.Fatal(err)
	}
	want := []AdditionalField{{Column: "type", Placement: PlacementHeader, Alias: "eventType"}, {Column: "tenant", Placement: PlacementHeader}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"type", "a:header:b:c"} {
		if _, err := ParseAdditionalFields(bad); err == nil {
			t.Errorf("ParseAdditionalFields(%q) accepted it", bad)
		}
	}
}

func TestRouteTopicRegexAndReplacementAsDebezium(t *testing.T) {
	cases := []struct {
		name               string
		regex, replacement string
		value, want        string
	}{
		{"default", "", "", "order", "order.events"},
		{"debezium default", "", "outbox.event.${routedByValue}", "order", "outbox.event.order"},
		{"java named groups", `(?<domain>[a-z]+)_(?<kind>[a-z]+)`, "${kind}.${domain}.v1", "shop_order", "order.shop.v1"},
		{"go named groups and numbers", `(?P<domain>[a-z]+)_([a-z]+)`, "${2}.${domain}", "shop_order", "order.shop"},
		{"whole value and dollar", `[a-z]+`, "${0}.$$", "order", "order.$"},
		{"no match keeps the value, as RegexRouter", `(?<domain>[a-z]+)_(?<kind>[a-z]+)`, "${kind}.${domain}.v1", "payment", "payment"},
		{"the regex matches the whole value only", `order`, "orders", "order_2", "order_2"},
		{"aggregate_type beside a group", `(?<routedByValue>.*)`, "${aggregate_type}-${routedByValue}", "x", "x-x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rt, err := newRouter(Router{RouteTopicRegex: tc.regex, RouteTopicReplacement: tc.replacement}, "")
			if err != nil {
				t.Fatal(err)
			}
			if got := rt.topicFor(tc.value); got != tc.want {
				t.Fatalf("topic of %q = %q, want %q", tc.value, got, tc.want)
			}
		})
	}
}

func TestRouterRecordFromDecodedRow(t *testing.T) {
	rt, err := newRouter(Router{
		FieldEventTimestamp: "occurred_at",
		AdditionalFields:    []AdditionalField{{Column: "tenant", Placement: PlacementHeader, Alias: "x-tenant"}, {Column: "aggregate_id", Placement: PlacementHeader}},
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	full := map[string]string{"id": "e1", "aggregate_type": "order", "aggregate_id": "o-1", "event_type": "Created", "payload": `{"a":1}`,
		"headers": `{"trace":"t1"}`, "occurred_at": "1700000000123", "tenant": "acme"}
	rec, err := rt.record(textRow(rt, full))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Topic != "order.events" || string(rec.Key) != "o-1" || string(rec.Value) != `{"a":1}` || !rec.Timestamp.Equal(time.UnixMilli(1700000000123)) {
		t.Errorf("record %s key %s value %s at %v", rec.Topic, rec.Key, rec.Value, rec.Timestamp)
	}
	if got := strings.Join(headerList(rec), ","); got != "id=e1,eventType=Created,trace=t1,x-tenant=acme,aggregate_id=o-1" {
		t.Errorf("headers %s", got)
	}

	without := func(cols ...string) map[string]string {
		m := map[string]string{}
		for k, v := range full {
			if !slices.Contains(cols, k) {
				m[k] = v
			}
		}
		return m
	}
	rec, err = rt.record(textRow(rt, without("aggregate_id", "occurred_at", "event_type")))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Key != nil || !rec.Timestamp.IsZero() || slices.ContainsFunc(rec.Headers, func(h kgo.RecordHeader) bool { return h.Key == "eventType" }) {
		t.Errorf("NULL key, timestamp and event type: record key %q, timestamp %v, headers %v", rec.Key, rec.Timestamp, headerList(rec))
	}
	for _, tc := range []struct {
		values map[string]string
		want   string
	}{
		{without("aggregate_type"), "route-by column aggregate_type is NULL"},
		{without("id"), "event id column id is NULL"},
		{without("payload"), "payload column payload is NULL"},
		{map[string]string{"id": "e1", "aggregate_type": "order", "payload": "{}", "occurred_at": "soon"}, "column occurred_at"},
	} {
		if _, err := rt.record(textRow(rt, tc.values)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("row %v: err = %v, want %q", tc.values, err, tc.want)
		}
	}
}

func TestTombstoneOnEmptyPayload(t *testing.T) {
	rt, err := newRouter(Router{TombstoneOnEmptyPayload: true}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, payload := range []*string{nil, new(""), new(" \n")} {
		values := map[string]string{"id": "e", "aggregate_type": "order", "aggregate_id": "o"}
		if payload != nil {
			values["payload"] = *payload
		}
		rec, err := rt.record(textRow(rt, values))
		if err != nil || rec.Value != nil {
			t.Errorf("payload %v: record %v, err %v; want a nil value", payload, rec, err)
		}
	}
	off, err := newRouter(Router{}, "")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := off.record(textRow(off, map[string]string{"id": "e", "aggregate_type": "order", "payload": ""}))
	if err != nil || rec.Value == nil || len(rec.Value) != 0 {
		t.Errorf("empty payload without the option: record %v, err %v; want an empty, non-nil value", rec, err)
	}
}

func TestParseTimeReadsTheColumnTypes(t *testing.T) {
	want := time.Date(2021, 3, 4, 5, 6, 7, 891000000, time.UTC)
	for _, tc := range []struct {
		text string
		oid  uint32
	}{
		{"2021-03-04 05:06:07.891+00", oidTimestamptz},
		{"2021-03-04 10:36:07.891+05:30", oidTimestamptz},
		{"2021-03-04 05:06:07.891", oidTimestamp},
		{"1614834367891", 20},
	} {
		got, err := parseTime(tc.text, tc.oid)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", tc.text, got, err, want)
		}
	}
	for _, bad := range []string{"infinity", "2021-03-04 05:06:07 BC", "1969-12-31 23:59:59+00", "2262-04-12 00:00:00+00", "9999-12-31 00:00:00+00"} {
		if _, err := parseTime(bad, oidTimestamptz); err == nil {
			t.Errorf("parseTime(%q) accepted it", bad)
		}
	}
	if _, err := parseTime("-1", 20); err == nil {
		t.Error("parseTime accepted -1 ms")
	}
	if _, err := parseTime("9223372036855", 20); err == nil {
		t.Error("parseTime accepted a time after 2262")
	}
	if _, err := parseTime("2262-04-11 00:00:00+00", oidTimestamptz); err != nil {
		t.Errorf("parseTime refused a time before 2262-04-11T23:47:16Z: %v", err)
	}
	if _, err := decodeValue([]byte(`\x00ff`), oidBytea); err != nil {
		t.Error(err)
	}
	if _, err := decodeValue([]byte(`abc`), oidBytea); err == nil {
		t.Error("bytea not in hex form accepted")
	}
}

// BenchmarkRouterRecord measures decoding one row of the default outbox
// and building its record, the per-row work both modes share.
func BenchmarkRouterRecord(b *testing.B) {
	rt, err := newRouter(Router{}, "")
	if err != nil {
		b.Fatal(err)
	}
	values := map[string][]byte{"id": []byte("00000000-0000-7000-8000-000000000001"), "aggregate_type": []byte("order"), "aggregate_id": []byte("order-42"),
		"event_type": []byte("OrderCreated"), "payload": []byte(`{"orderId":"order-42","amount":1250,"currency":"EUR"}`), "headers": []byte(`{"traceId":"t-1"}`)}
	cells := make([][]byte, len(rt.columns))
	for i, c := range rt.columns {
		cells[i] = values[c]
	}
	types := make([]uint32, len(rt.columns))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rt.record(rt.decode(types, func(i int) ([]byte, error) { return cells[i], nil })); err != nil {
			b.Fatal(err)
		}
	}
}
