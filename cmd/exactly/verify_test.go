package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestVerifyReplayPassesARunOfOrdersAndFailsOnAForgedProjection runs
// `exactly run orders` over good and bad events (a null key among them),
// stops it, and runs `exactly verify --replay`: the audit and the replay
// pass. A projection committed by a foreign producer then fails both,
// with exit status 1, naming the record.
func TestVerifyReplayPassesARunOfOrdersAndFailsOnAForgedProjection(t *testing.T) {
	brokers := newBroker(t).ListenAddrs()
	c := testRunOrdersConfig(t, brokers, 3)
	base, stop := startRunOrders(t, c)
	waitReady(t, base)

	const ts = 1732260000000
	var recs []*kgo.Record
	for i := range 40 {
		id := fmt.Sprintf("o-%d", i%13)
		typ, payload := "OrderCreated", fmt.Sprintf(`{"orderId":%q,"customerId":"c-1","createdAt":%d}`, id, ts+i)
		if i >= 13 {
			typ, payload = "OrderUpdated", fmt.Sprintf(`{"orderId":%q,"items":[{"sku":"s-%d","quantity":1,"priceCents":100}],"updatedAt":%d}`, id, i, ts+i)
		}
		value := fmt.Sprintf(`{"metadata":{"eventId":"e-%d","timestamp":%d},"type":%q,"payload":%s}`, i, ts+int64(i), typ, payload)
		recs = append(recs, &kgo.Record{Topic: c.InputTopic, Key: []byte(id), Value: []byte(value)})
	}
	recs = append(recs,
		&kgo.Record{Topic: c.InputTopic, Key: []byte("o-1"), Value: []byte(`{"metadata": {`)},
		&kgo.Record{Topic: c.InputTopic, Value: []byte(`{"type":"OrderCreated"}`)}, // no key
	)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	pctx, pcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer pcancel()
	if err := cl.ProduceSync(pctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	waitFor(t, 30*time.Second, "the group to consume every event", func() bool {
		offs, err := adm.FetchOffsets(pctx, c.ApplicationID)
		var sum int64
		if err == nil {
			offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
		}
		return sum >= int64(len(recs))
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	verifyCmd := func(args ...string) (string, error) {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(append([]string{"verify", "--brokers", strings.Join(brokers, ","), "--timeout", "30s"}, args...))
		err := root.Execute()
		return out.String(), err
	}
	out, err := verifyCmd("--replay")
	t.Logf("\n%s", out)
	if err != nil {
		t.Fatalf("verify --replay of an honest run: %v", err)
	}
	for _, want := range []string{"PASS  nothing lost", `replay of "orders"`, "PASS  output order-projections", "PASS  dead letters order-events-dlq", "compacted"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	tx, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("forger"), kgo.TransactionTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := tx.ProduceSync(pctx, &kgo.Record{Topic: c.OutputTopic, Key: []byte("o-4"), Value: []byte(`{"orderId":"o-4","status":"SHIPPED"}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := tx.EndTransaction(pctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	out, err = verifyCmd("--replay")
	t.Logf("\n%s", out)
	var exit *exitError
	if !errors.As(err, &exit) || exit.code != 1 || !strings.Contains(out, `unexpected order-projections/`) || !strings.Contains(out, `key "o-4"`) {
		t.Fatalf("a forged projection: err %v, want exit status 1 naming the record", err)
	}

	if _, err := verifyCmd("--replay", "--topology", "payments"); err == nil || !strings.Contains(err.Error(), "cannot be verified by replay") {
		t.Errorf("--topology payments: %v, want a refusal saying why", err)
	}
	if _, err := verifyCmd("--topology", "exposure"); err == nil || !strings.Contains(err.Error(), "add --replay") {
		t.Errorf("--topology exposure without --replay: %v, want a hint to add --replay", err)
	}
}
