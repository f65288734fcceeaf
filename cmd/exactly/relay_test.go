package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/internal/pgtest"
	"github.com/exactly-go/exactly/outbox"
)

// TestRelayCommandTakesDSNFromEnvAndModeFromConfigFile runs `exactly relay`
// with the DSN in EXACTLY_DSN and the mode in a config file, and checks an
// outbox row arrives in Kafka.
func TestRelayCommandTakesDSNFromEnvAndModeFromConfigFile(t *testing.T) {
	for _, mode := range []string{"cdc", "poll"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			cluster := pgtest.Start(t) // its own cluster: removed with the test
			dsn := cluster.NewDatabase(t)
			broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "order.events"))
			if err != nil {
				t.Fatal(err)
			}
			defer broker.Close()
			configFile := filepath.Join(t.TempDir(), "relay.yaml")
			if err := os.WriteFile(configFile, []byte("mode: "+mode+"\nstatus-interval: 100ms\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Setenv("EXACTLY_DSN", dsn)

			runCtx, cancel := context.WithCancel(ctx)
			root := newRootCommand()
			root.SetArgs([]string{"relay", "--config", configFile, "--brokers", broker.ListenAddrs()[0], "--migrate"})
			done := make(chan error, 1)
			go func() { done <- root.ExecuteContext(runCtx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("exactly relay: %v", err)
				}
			}()

			// --migrate creates the table; wait for it, then write.
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var id string
			for deadline := time.Now().Add(30 * time.Second); ; {
				id, err = outbox.Write(ctx, conn, outbox.Event{AggregateType: "order", AggregateID: "o-1", EventType: "OrderCreated", Payload: []byte(`{"orderId":"o-1"}`)})
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("write to the outbox: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}

			consumer, err := kgo.NewClient(kgo.SeedBrokers(broker.ListenAddrs()...), kgo.ConsumeTopics("order.events"),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				t.Fatal(err)
			}
			defer consumer.Close()
			pollCtx, pollCancel := context.WithTimeout(ctx, 60*time.Second)
			defer pollCancel()
			for {
				fetches := consumer.PollFetches(pollCtx)
				if err := pollCtx.Err(); err != nil {
					t.Fatalf("no record relayed: %v", err)
				}
				for _, rec := range fetches.Records() {
					if string(rec.Key) == "o-1" && string(rec.Headers[0].Value) == id {
						return
					}
				}
				if errs := fetches.Errors(); len(errs) > 0 && !errors.Is(errs[0].Err, context.DeadlineExceeded) {
					t.Logf("fetch: %v", errs[0].Err)
				}
			}
		})
	}
}

func TestRelayCommandWithoutDSNSaysWhatToDo(t *testing.T) {
	t.Setenv("EXACTLY_DSN", "")
	root := newRootCommand()
	root.SetArgs([]string{"relay"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "EXACTLY_DSN") {
		t.Fatalf("err = %v, want a hint about --dsn / EXACTLY_DSN", err)
	}
}
