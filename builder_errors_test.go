package exactly_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/processors/dedup"
	"github.com/exactly-go/exactly/processors/reorder"
	"github.com/exactly-go/exactly/serde"
)

// Mistakes made through extensions (ready processors, the DSL) are
// recorded on the builder, so one Build names all of them, with the core
// builder's own.
func TestBuildReportsEveryExtensionMistakeAtOnce(t *testing.T) {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	clicks := dsl.Stream(sb, "clicks", serde.String, serde.String)
	dsl.WindowedCount(clicks.GroupByKey(), dsl.TumblingWindows(0, time.Second), "per-window", dsl.Materialized{}).To("counts")
	b := sb.Builder()
	dedup.Add(b, "dedup", dedup.Options[string, string]{}, clicks.Node())
	reorder.Add(b, "reorder", reorder.Options[string, string]{Keys: serde.String, Values: serde.String}, "dedup")
	exactly.AddSink(b, "out", exactly.Sink[string, string]{Topic: "out"}, "reorder")

	_, err := sb.Build()
	if err == nil {
		t.Fatal("Build accepted a topology with four mistakes")
	}
	for _, want := range []string{
		`windowed aggregate "per-window": window size must be at least 1ms`,
		`dedup "dedup": Options.ID is required`,
		`reorder "reorder": Options.EventID is required`,
		`reorder "reorder": set at least one of Options.Opens, Options.Ready and Options.Sequence`,
		`sink "out" needs key and value serdes`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Build error lacks %q:\n%v", want, err)
		}
	}
}

func TestAddErrorIgnoresNil(t *testing.T) {
	b := exactly.NewBuilder()
	b.AddError(nil)
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"in"}, Keys: serde.String, Values: serde.String})
	exactly.AddSink(b, "out", exactly.Sink[string, string]{Topic: "out", Keys: serde.String, Values: serde.String}, "in")
	if _, err := b.Build(); err != nil {
		t.Fatalf("Build: %v", err)
	}
	mistake := errors.New("processor \"x\": wrong")
	b.AddError(mistake)
	if _, err := b.Build(); !errors.Is(err, mistake) {
		t.Fatalf("Build: %v, want the recorded error", err)
	}
}
