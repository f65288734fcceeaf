package inbox_test

import (
	"context"
	"encoding/json"
	"log"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/inbox"
)

// A payments consumer: each payment order is charged once, however often
// Kafka delivers it. The charge row and the event id commit together.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@127.0.0.1/payments")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := inbox.Migrate(ctx, pool); err != nil {
		log.Fatal(err)
	}
	in := inbox.New(pool, "payments", inbox.Options{})
	go in.RunRetention(ctx, 14*24*time.Hour, time.Hour, func(err error) { log.Print(err) })

	consumer, err := inbox.NewConsumer(inbox.ConsumerConfig{
		Inbox: in,
		EventID: func(r *kgo.Record) (string, error) {
			var order struct{ EventID string }
			err := json.Unmarshal(r.Value, &order)
			return order.EventID, err
		},
		Handler: func(ctx context.Context, tx pgx.Tx, r *kgo.Record) ([]byte, error) {
			_, err := tx.Exec(ctx, `INSERT INTO charges (order_id, body) VALUES ($1, $2)`, string(r.Key), r.Value)
			return nil, err
		},
		BatchSize: 100,
		Kafka: []kgo.Opt{
			kgo.SeedBrokers("127.0.0.1:9092"),
			kgo.ConsumerGroup("payments"),
			kgo.ConsumeTopics("payment-orders"),
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(consumer.Run(ctx))
}

// Process on its own, e.g. behind an HTTP endpoint that receives retried
// requests: a repeated request gets the first answer back.
func ExampleInbox_Process() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@127.0.0.1/payments")
	if err != nil {
		log.Fatal(err)
	}
	in := inbox.New(pool, "charge-api", inbox.Options{})
	result, err := in.Process(ctx, "request-42", func(ctx context.Context, tx pgx.Tx) ([]byte, error) {
		var chargeID string
		err := tx.QueryRow(ctx, `INSERT INTO charges (order_id) VALUES ('o-1') RETURNING id::text`).Scan(&chargeID)
		return []byte(chargeID), err
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("charge %s (repeated request: %v)", result.Response, result.Duplicate)
}
