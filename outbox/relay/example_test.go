package relay_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/outbox/relay"
)

func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	r, err := relay.New(relay.Config{
		DSN:        "postgres://relay@127.0.0.1/shop",
		Kafka:      []kgo.Opt{kgo.SeedBrokers("127.0.0.1:9092")},
		Registerer: prometheus.NewRegistry(),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := r.Run(ctx); err != context.Canceled {
		log.Fatal(err)
	}
}
