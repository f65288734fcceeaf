package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRunOrdersDeadLettersBadInputAndKeepsGoing sends every kind of bad
// record through `exactly run orders` and checks each lands in the
// dead-letter topic with its reason while the instance keeps projecting.
func TestRunOrdersDeadLettersBadInputAndKeepsGoing(t *testing.T) {
	brokers := newBroker(t).ListenAddrs()
	c := testRunOrdersConfig(t, brokers, 1)

	// Room for a 2 MB record on the input and dead-letter topics.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerBatchMaxBytes(8<<20), kgo.DefaultProduceTopic(c.InputTopic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	big := "8388608"
	for _, topic := range []string{c.InputTopic, c.DLQTopic} {
		if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, -1, map[string]*string{"max.message.bytes": &big}, topic); err != nil {
			t.Fatal(err)
		}
	}

	base, _ := startRunOrders(t, c)
	waitReady(t, base)

	const ts = 1732260000000
	created := func(id, eventID string, at int64) string {
		return fmt.Sprintf(`{"metadata":{"eventId":%q,"timestamp":%d},"type":"OrderCreated","payload":{"orderId":%q,"customerId":"c-1","createdAt":%d}}`, eventID, at, id, at)
	}
	bad := []struct {
		name       string
		key, value []byte
		reason     string // "" accepts any reason
	}{
		{"malformed JSON", []byte("o-1"), []byte(`{"metadata": {`), "malformed"},
		{"unknown type", []byte("o-1"), []byte(`{"metadata":{"eventId":"x-2","timestamp":1732260000000},"type":"OrderCancelled","payload":{"orderId":"o-1"}}`), "unknown-event-type"},
		{"missing event id", []byte("o-1"), []byte(`{"metadata":{"timestamp":1732260000000},"type":"OrderCreated","payload":{"orderId":"o-1","customerId":"c","createdAt":1}}`), "missing-field"},
		{"missing order id", []byte("o-1"), []byte(`{"metadata":{"eventId":"x-4","timestamp":1732260000000},"type":"OrderCreated","payload":{"customerId":"c","createdAt":1}}`), "missing-field"},
		{"wrong field type", []byte("o-1"), []byte(`{"metadata":{"eventId":"x-5","timestamp":"yesterday"},"type":"OrderCreated","payload":{"orderId":"o-1"}}`), ""},
		{"invalid UTF-8", []byte("o-1"), []byte("{\"metadata\":{\"eventId\":\"\xff\xfe\"}}"), ""},
		{"null key", nil, []byte(created("o-7", "x-7", ts)), ""},
		{"2 MB value", []byte("o-1"), bytes.Repeat([]byte("x"), 2<<20), ""},
		{"far past", []byte("o-9"), []byte(created("o-9", "x-9", 1000)), "invalid-timestamp"},
		{"far future", []byte("o-10"), []byte(created("o-10", "x-10", 9_999_999_999_999)), "invalid-timestamp"},
	}
	var recs []*kgo.Record
	for _, b := range bad {
		recs = append(recs, &kgo.Record{Key: b.key, Value: b.value})
	}
	recs = append(recs, &kgo.Record{Key: []byte("o-ok"), Value: []byte(created("o-ok", "e-ok", ts))})
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the good order after the bad records to be projected", func() bool {
		s, _ := get(t, base+"/orders/o-ok")
		return s == http.StatusOK
	})

	dlq, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(c.DLQTopic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxPartitionBytes(16<<20), kgo.FetchMaxBytes(32<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer dlq.Close()
	got := map[string]string{} // source offset -> reason
	values := map[string][]byte{}
	for deadline := time.Now().Add(20 * time.Second); len(got) < len(bad) && time.Now().Before(deadline); {
		pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
		dlq.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			h := map[string]string{}
			for _, x := range r.Headers {
				h[x.Key] = string(x.Value)
			}
			got[h["exactly.source.offset"]] = h["exactly.error.reason"]
			values[h["exactly.source.offset"]] = r.Value
		})
		pcancel()
	}
	for i, b := range bad {
		off := fmt.Sprint(i)
		reason, ok := got[off]
		switch {
		case !ok:
			t.Errorf("%s (offset %d) is not in the dead-letter topic", b.name, i)
		case reason == "" || (b.reason != "" && reason != b.reason):
			t.Errorf("%s: reason %q, want %q", b.name, reason, b.reason)
		case len(b.value) > 900_000 && values[off] != nil:
			t.Errorf("%s: a dead letter over the size bound kept its value", b.name)
		case len(b.value) <= 900_000 && !bytes.Equal(values[off], b.value):
			t.Errorf("%s: the dead letter does not carry the original value", b.name)
		default:
			t.Logf("%-17s -> %s", b.name, reason)
		}
	}
	if s, body := get(t, base+"/healthz"); s != http.StatusOK || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz after bad input: %d %s", s, body)
	}
}
