package dedup_test

import (
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/metrics"
	"github.com/exactly-go/exactly/processors/dedup"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/prometheus/client_golang/prometheus"
)

var t0 = time.UnixMilli(1732260000000)

// topology reads "events" whose values are "id:content", deduplicates them
// by id and writes the survivors to "out".
func topology(t *testing.T, opts dedup.Options[string, string]) *exactly.Topology {
	t.Helper()
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"events"}, Keys: serde.String, Values: serde.String})
	opts.ID = func(_, v string) string { id, _, _ := strings.Cut(v, ":"); return id }
	dedup.Add(b, "dedup", opts, "in")
	exactly.AddSink(b, "out", exactly.Sink[string, string]{Topic: "out", Keys: serde.String, Values: serde.String}, "dedup")
	exactly.AddDeadLetterSink(b, "dlq", "events-dlq", "in", "dedup")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func newDriver(t *testing.T, top *exactly.Topology, cfg testdriver.Config) *testdriver.Driver {
	t.Helper()
	d, err := testdriver.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// metricValue is the value of the series of the metric called name in reg
// whose processor label is processor.
func metricValue(t *testing.T, reg *prometheus.Registry, name, processor string) float64 {
	t.Helper()
	v, err := metrics.Sum(reg, name, "processor", processor)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func values(t *testing.T, d *testdriver.Driver, topic string) []string {
	t.Helper()
	recs, err := testdriver.CreateOutputTopic(d, topic, serde.String, serde.String).ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	var vs []string
	for _, r := range recs {
		vs = append(vs, r.Value)
	}
	return vs
}

func pipe(t *testing.T, in *testdriver.InputTopic[string, string], value string, ts time.Time) {
	t.Helper()
	if err := in.PipeInput("k", value, ts); err != nil {
		t.Fatal(err)
	}
}

func TestForwardsFirstCopyOnlyAndCountsDuplicatesAndConflictsApart(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := newDriver(t, topology(t, dedup.Options[string, string]{Registerer: reg}), testdriver.Config{})
	in := testdriver.CreateInputTopic(d, "events", serde.String, serde.String)
	for i, v := range []string{"a:1", "b:1", "a:1", "a:2", "c:1", "b:1", "a:1"} {
		pipe(t, in, v, t0.Add(time.Duration(i)*time.Second))
	}
	if got, want := strings.Join(values(t, d, "out"), " "), "a:1 b:1 c:1"; got != want {
		t.Fatalf("forwarded %q, want %q", got, want)
	}
	if s, c := metricValue(t, reg, "duplicates_skipped_total", "dedup"), metricValue(t, reg, "duplicates_conflicting_total", "dedup"); s != 4 || c != 1 {
		t.Fatalf("skipped %v conflicting %v, want 4 and 1", s, c)
	}
	if dl := values(t, d, "events-dlq"); len(dl) != 0 {
		t.Fatalf("conflicts dead-lettered without DeadLetterConflicts: %v", dl)
	}
}

func TestConflictingDuplicatesGoToTheDeadLetterSinkWhenAsked(t *testing.T) {
	d := newDriver(t, topology(t, dedup.Options[string, string]{DeadLetterConflicts: true}), testdriver.Config{})
	in := testdriver.CreateInputTopic(d, "events", serde.String, serde.String)
	pipe(t, in, "a:1", t0)
	pipe(t, in, "a:1", t0)
	pipe(t, in, "a:2", t0) // offset 2
	recs, err := testdriver.CreateOutputTopic(d, "events-dlq", serde.String, serde.String).ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Value != "a:2" {
		t.Fatalf("dead letters %+v, want only a:2", recs)
	}
	h := map[string]string{}
	for _, x := range recs[0].Headers {
		h[x.Key] = string(x.Value)
	}
	if h[exactly.HeaderErrorReason] != dedup.ReasonConflictingDuplicate || h[exactly.HeaderSourceOffset] != "2" {
		t.Fatalf("headers %v", h)
	}
}

// TestIDsAreForgottenAfterTheirTTLOfStreamTime shows both halves of the
// TTL: an id is recognised until TTL of stream time has passed since it was
// first seen, and the sweep then deletes it (a tombstone in the changelog).
func TestIDsAreForgottenAfterTheirTTLOfStreamTime(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := newDriver(t, topology(t, dedup.Options[string, string]{TTL: time.Hour, Registerer: reg}), testdriver.Config{})
	in := testdriver.CreateInputTopic(d, "events", serde.String, serde.String)
	pipe(t, in, "a:1", t0)
	pipe(t, in, "a:1", t0.Add(59*time.Minute)) // still remembered
	pipe(t, in, "b:1", t0.Add(2*time.Hour))    // stream time passes a's expiry; the sweep runs
	pipe(t, in, "a:1", t0.Add(2*time.Hour))    // forgotten: forwarded again
	if got, want := strings.Join(values(t, d, "out"), " "), "a:1 b:1 a:1"; got != want {
		t.Fatalf("forwarded %q, want %q", got, want)
	}
	if s := metricValue(t, reg, "duplicates_skipped_total", "dedup"); s != 1 {
		t.Fatalf("skipped %v, want 1", s)
	}
	changelog, err := testdriver.CreateOutputTopic(d, "test-dedup-store-changelog", serde.String, serde.Bytes).ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	var tombstones int
	for _, r := range changelog {
		if r.Key == "a" && r.Value == nil {
			tombstones++
		}
	}
	if tombstones != 1 {
		t.Fatalf("changelog %+v: want one tombstone for the swept id a", changelog)
	}
	kv, err := testdriver.KeyValueStore[string, []byte](d, "dedup-store", 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := kv.ApproximateNumEntries(); n != 2 {
		t.Fatalf("store holds %d ids, want 2 (b and the second a)", n)
	}
}

// TestTheDecisionCommitsWithTheTransaction shows that a crash before the
// commit forgets the id together with the output it guarded: the
// redelivered event is forwarded exactly once in the committed output.
func TestTheDecisionCommitsWithTheTransaction(t *testing.T) {
	d := newDriver(t, topology(t, dedup.Options[string, string]{}), testdriver.Config{ManualCommit: true})
	in := testdriver.CreateInputTopic(d, "events", serde.String, serde.String)
	pipe(t, in, "a:1", t0)
	pipe(t, in, "a:1", t0)
	d.Crash()
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	pipe(t, in, "a:1", t0)
	if err := d.CrashMidCommit(); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	pipe(t, in, "a:1", t0)
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := values(t, d, "out"); len(got) != 1 || got[0] != "a:1" {
		t.Fatalf("committed output %v, want a:1 once", got)
	}
}

func TestBuildRejectsOptionsWithoutAnID(t *testing.T) {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"events"}, Keys: serde.String, Values: serde.String})
	dedup.Add(b, "dedup", dedup.Options[string, string]{}, "in")
	if _, err := b.Build(); err == nil || !strings.Contains(err.Error(), `dedup "dedup": Options.ID is required`) {
		t.Fatalf("Build: %v, want an error naming the processor and Options.ID", err)
	}
}

// An application may build its topology more than once against one
// registry (a restart in a test, a second instance in one process): the
// processor's series are registered once and shared, and processors of
// other names keep series of their own.
func TestBuildingTwiceAgainstOneRegistrySharesTheSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	for range 2 {
		d := newDriver(t, topology(t, dedup.Options[string, string]{Registerer: reg}), testdriver.Config{})
		in := testdriver.CreateInputTopic(d, "events", serde.String, serde.String)
		pipe(t, in, "a:1", t0)
		pipe(t, in, "a:1", t0)
	}
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"events"}, Keys: serde.String, Values: serde.String})
	dedup.Add(b, "other", dedup.Options[string, string]{ID: func(_, v string) string { return v }, Registerer: reg}, "in")
	exactly.AddSink(b, "out", exactly.Sink[string, string]{Topic: "out", Keys: serde.String, Values: serde.String}, "other")
	if _, err := b.Build(); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, reg, "duplicates_skipped_total", "dedup"); got != 2 {
		t.Fatalf("dedup skipped %v over two builds, want 2 in one series", got)
	}
	families, _ := reg.Gather()
	for _, f := range families {
		if f.GetName() == "duplicates_skipped_total" && len(f.GetMetric()) != 2 {
			t.Fatalf("%d series of duplicates_skipped_total, want one per processor name", len(f.GetMetric()))
		}
	}
}
