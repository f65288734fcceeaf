package outbox_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5"

	"github.com/exactly-go/exactly/outbox"
)

// The order row and its event commit together; the relay publishes the
// event to topic "order.events" with key "o-1".
func ExampleWrite() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, "postgres://app@127.0.0.1/shop")
	if err != nil {
		log.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id, customer_id) VALUES ('o-1', 'c-1')`); err != nil {
			return err
		}
		_, err := outbox.Write(ctx, tx, outbox.Event{
			AggregateType: "order",
			AggregateID:   "o-1",
			EventType:     "OrderCreated",
			Payload:       []byte(`{"orderId":"o-1","customerId":"c-1"}`),
			Headers:       map[string]string{"traceId": "t-1"},
		})
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}
