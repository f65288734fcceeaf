package exactly_test

import (
	"strings"
	"testing"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
)

func passThrough() exactly.Processor[string, string, string, string] {
	return exactly.ProcessorFunc[string, string, string, string](
		func(ctx exactly.ProcessorContext[string, string], rec exactly.Record[string, string]) error {
			ctx.Forward(rec)
			return nil
		}).Supplier()()
}

func source(b *exactly.Builder, name, topic string) {
	exactly.AddSource(b, name, exactly.Source[string, string]{Topics: []string{topic}, Keys: serde.String, Values: serde.String})
}

func sink(b *exactly.Builder, name, topic string, parents ...string) {
	exactly.AddSink(b, name, exactly.Sink[string, string]{Topic: topic, Keys: serde.String, Values: serde.String}, parents...)
}

func TestBuildRejectsBrokenTopologiesNamingTheCulprit(t *testing.T) {
	cases := []struct {
		name  string
		build func(b *exactly.Builder)
		want  []string
	}{
		{"unknown parent", func(b *exactly.Builder) {
			source(b, "src", "in")
			exactly.AddProcessor(b, "p", passThrough, "nope")
		}, []string{`"p"`, `unknown parent "nope"`}},
		{"cycle", func(b *exactly.Builder) {
			source(b, "src", "in")
			exactly.AddProcessor(b, "a", passThrough, "src", "c")
			exactly.AddProcessor(b, "b", passThrough, "a")
			exactly.AddProcessor(b, "c", passThrough, "b")
		}, []string{"cycle", "a -> b -> c -> a"}},
		{"unknown store", func(b *exactly.Builder) {
			source(b, "src", "in")
			exactly.AddProcessor(b, "p", passThrough, "src")
			b.Connect("p", "counts")
		}, []string{`processor "p"`, `unknown store "counts"`}},
		{"store on unknown processor", func(b *exactly.Builder) {
			source(b, "src", "in")
			exactly.AddStore(b, exactly.Store[string, int64]{Name: "counts", Keys: serde.String, Values: serde.Int64}, "ghost")
		}, []string{`store "counts"`, `unknown processor "ghost"`}},
		{"duplicate name", func(b *exactly.Builder) {
			source(b, "src", "in")
			exactly.AddProcessor(b, "src", passThrough, "src")
		}, []string{`duplicate node name "src"`}},
		{"sink without parent", func(b *exactly.Builder) {
			source(b, "src", "in")
			sink(b, "out", "out-topic")
		}, []string{`sink "out" has no parent`}},
		{"type mismatch", func(b *exactly.Builder) {
			source(b, "src", "in")
			exactly.AddSink(b, "out", exactly.Sink[string, int64]{Topic: "o", Keys: serde.String, Values: serde.Int64}, "src")
		}, []string{`"src" forwards Record[string, string]`, `child "out" takes Record[string, int64]`}},
		{"dead letters without a sink", func(b *exactly.Builder) {
			b.OnDeserializationError(exactly.DeadLetterOnError)
			source(b, "src", "in")
			sink(b, "out", "o", "src")
		}, []string{`source "src" has no dead-letter sink`}},
		{"child of a sink", func(b *exactly.Builder) {
			source(b, "src", "in")
			sink(b, "out", "o", "src")
			exactly.AddProcessor(b, "p", passThrough, "out")
		}, []string{`parent "out"`, "cannot have children"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := exactly.NewBuilder()
			tc.build(b)
			_, err := b.Build()
			if err == nil {
				t.Fatal("Build succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestDescribeListsNodesStoresAndConnections(t *testing.T) {
	b := exactly.NewBuilder()
	b.OnProcessingError(exactly.DeadLetterOnError)
	source(b, "events", "order-events")
	exactly.AddProcessor(b, "dedup", passThrough, "events")
	exactly.AddStore(b, exactly.Store[string, int64]{Name: "seen", Keys: serde.String, Values: serde.Int64, Persistent: true}, "dedup")
	sink(b, "out", "order-projections", "dedup")
	exactly.AddDeadLetterSink(b, "dlq", "order-events-dlq", "events", "dedup")
	source(b, "other", "other-topic")
	sink(b, "other-out", "other-out", "other")
	exactly.AddDeadLetterSink(b, "other-dlq", "other-dlq", "other")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	got := top.Describe("app")
	for _, want := range []string{
		"Sub-topology: 0",
		"Source: events (topics: [order-events])\n      --> dedup, dlq\n",
		"Processor: dedup (stores: [seen])\n      --> out, dlq\n      <-- events\n",
		"Sink: out (topic: order-projections)\n      --> none\n      <-- dedup\n",
		"Dead-letter sink: dlq (topic: order-events-dlq)",
		"      <-- events, dedup\n",
		"Store: seen (persistent, changelog app-seen-changelog)",
		"Sub-topology: 1",
		"Source: other (topics: [other-topic])",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Describe lacks %q:\n%s", want, got)
		}
	}
}
