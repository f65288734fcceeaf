package dsl_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
)

// TestDescribeNamesEveryInternalTopic: the description of a topology
// (exactly describe prints it) and the lists the runtime creates topics
// from name the internal topics the DSL's operators add: a foreign-key
// join's subscription and response topics, the changelogs of a
// suppression's buffer, of a versioned table's history, of the windowed
// aggregations' and the stream join's stores; a global store has none.
func TestDescribeNamesEveryInternalTopic(t *testing.T) {
	sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: "app"})
	orders := dsl.Table(sb, "orders", serde.String, serde.String, "orders", dsl.Materialized{})
	customers := dsl.Table(sb, "customers", serde.String, serde.String, "customers", dsl.Materialized{})
	dsl.JoinOnForeignKey(orders, customers, dsl.JoinLeft, "order-customer", func(customer string) string { return customer },
		func(_ string, j dsl.Joined[string, string]) string { return j.Right }, serde.String, dsl.Materialized{})
	prices := dsl.VersionedTable(sb, "prices", serde.String, serde.Int64, "price-history", time.Hour, dsl.Materialized{Persistent: true})
	clicks := dsl.Stream(sb, "clicks", serde.String, serde.Int64)
	dsl.Join(clicks, prices, func(_ string, n, price int64) int64 { return n * price }, serde.Int64).To("priced")
	grouped := clicks.GroupByKey()
	dsl.SessionCount(grouped, dsl.SessionWindows{Gap: time.Minute, Emit: dsl.OnWindowClose}, "sessions", dsl.Materialized{})
	dsl.SlidingCount(grouped, dsl.SlidingWindows{TimeDifference: time.Minute}, "sliding", dsl.Materialized{})
	dsl.WindowedCount(grouped, dsl.TumblingWindows(time.Minute, 0), "per-minute", dsl.Materialized{}).
		Suppress("final", dsl.UntilWindowCloses(dsl.BufferConfig{})).ToStream().To("final-counts")
	dsl.JoinStreams(clicks, dsl.Stream(sb, "views", serde.String, serde.Int64), dsl.JoinWindows{TimeDifference: time.Second}, dsl.JoinInner,
		"click-view", func(_ string, j dsl.Joined[int64, int64]) int64 { return j.Left + j.Right }, serde.Int64, dsl.Materialized{}).To("pairs")
	dsl.GlobalTable(sb, "products", serde.String, serde.String, "products", dsl.Materialized{Persistent: true})
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	description := top.Describe("app")
	internal := []string{dsl.SubscriptionTopic("app", "order-customer"), dsl.ResponseTopic("app", "order-customer")}
	changelogs := []string{"app-order-customer-changelog", "app-order-customer-subscriptions-changelog", "app-price-history-changelog",
		"app-sessions-changelog", "app-sessions-closing-changelog", "app-sliding-changelog", "app-sliding-closing-changelog",
		"app-per-minute-changelog", "app-per-minute-closing-changelog", "app-final-buffer-changelog", "app-final-buffer-index-changelog",
		"app-click-view-left-changelog", "app-click-view-right-changelog", "app-click-view-closing-changelog"}
	for _, topic := range append(slices.Clone(internal), changelogs...) {
		if !strings.Contains(description, topic) {
			t.Errorf("the description lacks %s:\n%s", topic, description)
		}
	}
	for _, topic := range internal {
		if !slices.Contains(top.RepartitionTopics(), topic) {
			t.Errorf("RepartitionTopics %v lacks %s: the runtime would not create it", top.RepartitionTopics(), topic)
		}
	}
	for _, topic := range changelogs {
		if !slices.Contains(top.ChangelogTopics("app"), topic) {
			t.Errorf("ChangelogTopics lacks %s: the runtime would not create it", topic)
		}
	}
	if slices.Contains(top.ChangelogTopics("app"), "app-products-changelog") {
		t.Error("the global store has a changelog: its topic is its changelog")
	}
	if !strings.Contains(description, "Global store: products (persistent, topic: products") {
		t.Errorf("the description does not show the persistent global store:\n%s", description)
	}
}
