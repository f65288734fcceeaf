package sideeffect_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/processors/sideeffect"
	"github.com/exactly-go/exactly/serde"
)

// A processor that notifies a webhook once per shipment: the key is derived
// from the shipment id, sent as Idempotency-Key, recorded with the output.
func ExampleAdd() {
	type shipment struct {
		ID       string `json:"id"`
		Tracking string `json:"tracking"`
	}
	b := exactly.NewBuilder()
	exactly.AddSource(b, "shipments", exactly.Source[string, shipment]{Topics: []string{"shipments"}, Keys: serde.String, Values: serde.JSON[shipment]()})
	sideeffect.Add(b, "notify", sideeffect.Options[string, shipment, string]{
		IdempotencyKey: func(_ string, s shipment) string { return sideeffect.KeyFrom("shipment-notification", s.ID) },
		Call: func(ctx context.Context, key, _ string, s shipment) (string, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://127.0.0.1:9/notify?tracking="+s.Tracking, nil)
			if err != nil {
				return "", sideeffect.Permanent("bad-request", err)
			}
			req.Header.Set("Idempotency-Key", key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return "", err // transient: retried with the same key
			}
			resp.Body.Close()
			if resp.StatusCode >= 400 && resp.StatusCode < 500 {
				return "", sideeffect.Permanent("rejected", fmt.Errorf("webhook answered %s", resp.Status))
			}
			if resp.StatusCode != http.StatusOK {
				return "", fmt.Errorf("webhook answered %s", resp.Status)
			}
			return "notified", nil
		},
		Concurrency: 8,
		Keys:        serde.String,
		Values:      serde.JSON[shipment](),
	}, "shipments")
	exactly.AddSink(b, "notified", exactly.Sink[string, string]{Topic: "shipments-notified", Keys: serde.String, Values: serde.String}, "notify")
	exactly.AddDeadLetterSink(b, "dlq", "shipments-dlq", "notify")
	if _, err := b.Build(); err != nil {
		panic(err)
	}
	fmt.Println(sideeffect.KeyFrom("shipment-notification", "s-1"))
	// Output: 19f997a4-b147-8637-ad5f-c0c06699c0e6
}
