package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/internal/pgtest"
	"github.com/exactly-go/exactly/outbox"
	"github.com/exactly-go/exactly/outbox/relay"
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

// TestRelayRouterFlagsAreDebeziumsOptions: the router's flags, named after
// Debezium's options, reach relay.Router from the command line, the
// environment (dots as underscores) and a config file (the flag name as a
// key, flat or nested); --topic-replacement stays an alias of
// --route.topic.replacement.
func TestRelayRouterFlagsAreDebeziumsOptions(t *testing.T) {
	parse := func(t *testing.T, configFile string, args ...string) (relay.Router, error) {
		t.Helper()
		cmd := newRelayCommand()
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		if err := applyConfig(cmd, configFile); err != nil {
			t.Fatal(err)
		}
		return relayRouter(cmd.Flags())
	}
	defaults := relay.Router{RouteByField: "aggregate_type", RouteTopicRegex: relay.DefaultRouteTopicRegex, FieldEventID: "id", FieldEventKey: "aggregate_id", FieldEventPayload: "payload"}

	t.Run("defaults", func(t *testing.T) {
		got, err := parse(t, "")
		if err != nil || !reflect.DeepEqual(got, defaults) {
			t.Fatalf("got %+v, %v; want %+v", got, err, defaults)
		}
		// The defaults the flags show are ones the relay accepts.
		r, err := relay.New(relay.Config{DSN: "host=/nonexistent", Router: got})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r.Run(ctx) // closes its producer
	})
	t.Run("command line", func(t *testing.T) {
		got, err := parse(t, "", "--route.by.field", "aggregatetype", "--route.topic.regex", "(?<t>.*)", "--route.topic.replacement", "outbox.event.${t}",
			"--table.field.event.id", "event_id", "--table.field.event.key", "aggregateid", "--table.field.event.payload", "body",
			"--table.field.event.timestamp", "occurred_at", "--table.fields.additional.placement", "type:header:eventType,tenant:header",
			"--route.tombstone.on.empty.payload")
		want := relay.Router{RouteByField: "aggregatetype", RouteTopicRegex: "(?<t>.*)", RouteTopicReplacement: "outbox.event.${t}",
			FieldEventID: "event_id", FieldEventKey: "aggregateid", FieldEventPayload: "body", FieldEventTimestamp: "occurred_at",
			AdditionalFields:        []relay.AdditionalField{{Column: "type", Placement: relay.PlacementHeader, Alias: "eventType"}, {Column: "tenant", Placement: relay.PlacementHeader}},
			TombstoneOnEmptyPayload: true}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, %v; want %+v", got, err, want)
		}
	})
	t.Run("environment and config file", func(t *testing.T) {
		t.Setenv("EXACTLY_ROUTE_BY_FIELD", "tenant")
		t.Setenv("EXACTLY_ROUTE_TOMBSTONE_ON_EMPTY_PAYLOAD", "true")
		file := filepath.Join(t.TempDir(), "relay.yaml")
		yaml := "route.topic.replacement: tenant.${routedByValue}\ntable.fields.additional.placement: [\"type:header:eventType\"]\ntable:\n  field:\n    event:\n      key: k\n"
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := parse(t, file, "--table.field.event.payload", "body")
		want := defaults
		want.RouteByField, want.TombstoneOnEmptyPayload, want.RouteTopicReplacement = "tenant", true, "tenant.${routedByValue}"
		want.FieldEventKey, want.FieldEventPayload = "k", "body"
		want.AdditionalFields = []relay.AdditionalField{{Column: "type", Placement: relay.PlacementHeader, Alias: "eventType"}}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("got %+v, %v; want %+v", got, err, want)
		}
	})
	t.Run("topic-replacement alias", func(t *testing.T) {
		got, err := parse(t, "", "--topic-replacement", "${aggregate_type}.out")
		if err != nil || got.RouteTopicReplacement != "${aggregate_type}.out" {
			t.Fatalf("got %+v, %v", got, err)
		}
		if _, err := parse(t, "", "--topic-replacement", "a", "--route.topic.replacement", "b"); err == nil || !strings.Contains(err.Error(), "disagree") {
			t.Fatalf("two different replacements: err = %v", err)
		}
		if _, err := parse(t, "", "--topic-replacement", "a", "--route.topic.replacement", "a"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unsupported placement", func(t *testing.T) {
		got, err := parse(t, "", "--table.fields.additional.placement", "type:envelope:eventType")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := relay.New(relay.Config{DSN: "host=/nonexistent", Router: got}); err == nil || !strings.Contains(err.Error(), `placement "envelope" is not supported`) {
			t.Fatalf("relay.New: err = %v", err)
		}
		if _, err := parse(t, "", "--table.fields.additional.placement", "type"); err == nil || !strings.Contains(err.Error(), "--table.fields.additional.placement") {
			t.Fatalf("malformed placement: err = %v", err)
		}
	})
}
