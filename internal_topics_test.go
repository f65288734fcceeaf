package exactly_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
)

// TestInternalTopicsNameEveryIntermediateAndChangelogTopic lists the
// topics a topology both writes and reads, and the changelogs of its
// logged stores only.
func TestInternalTopicsNameEveryIntermediateAndChangelogTopic(t *testing.T) {
	b := exactly.NewBuilder()
	source(b, "in", "input")
	sink(b, "to-middle", "middle", "in")
	sink(b, "to-output", "output", "in")
	source(b, "from-middle", "middle")
	exactly.AddProcessor(b, "p", passThrough, "from-middle")
	sink(b, "to-end", "end", "p")
	exactly.AddStore(b, exactly.Store[string, string]{Name: "kept", Keys: serde.String, Values: serde.String}, "p")
	exactly.AddStore(b, exactly.Store[string, string]{Name: "scratch", Keys: serde.String, Values: serde.String, DisableChangelog: true}, "p")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	if got := top.RepartitionTopics(); !slices.Equal(got, []string{"middle"}) {
		t.Errorf("RepartitionTopics() = %v, want [middle]", got)
	}
	if got := top.ChangelogTopics("app"); !slices.Equal(got, []string{"app-kept-changelog"}) {
		t.Errorf("ChangelogTopics(app) = %v, want [app-kept-changelog]", got)
	}
	if got := top.SourceTopics(); !slices.Equal(got, []string{"input", "middle"}) {
		t.Errorf("SourceTopics() = %v, want [input middle]", got)
	}

	sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: "risk"})
	byCustomer := dsl.SelectKey(dsl.Stream(sb, "orders", serde.String, serde.Int64), func(k string, _ int64) string { return k }, serde.String)
	dsl.Count(byCustomer.GroupByKey(), "counts", dsl.Materialized{}).ToStream().To("counted")
	top, err = sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	got := top.RepartitionTopics()
	if len(got) != 1 || !strings.HasPrefix(got[0], "risk-") || !strings.HasSuffix(got[0], "-repartition") {
		t.Errorf("RepartitionTopics() = %v, want the DSL's one repartition topic", got)
	}
}
