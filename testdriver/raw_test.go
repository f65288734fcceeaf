package testdriver_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
)

// TestPipeRawKeepsKafkaOffsetsAcrossGapsAndRestarts pipes records whose
// offsets leave gaps (as transaction markers do in Kafka): dead letters
// name the original offsets, and a restart after a crash resumes after the
// last committed record, not at a slice index.
func TestPipeRawKeepsKafkaOffsetsAcrossGapsAndRestarts(t *testing.T) {
	d := newDriver(t, countingTopology(t, false, exactly.DeadLetterOnError), testdriver.Config{ManualCommit: true})
	pipe := func(offset int64, key, value string) {
		t.Helper()
		if err := d.PipeRaw(exactly.SourceRecord{Topic: "input", Offset: offset, Key: []byte(key), Value: []byte(value), Timestamp: time.UnixMilli(offset)}); err != nil {
			t.Fatal(err)
		}
	}
	pipe(0, "a", "v0")
	pipe(2, "a", "fail")
	pipe(5, "a", "v5")
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	pipe(9, "a", "v9") // uncommitted: processed again after the restart
	d.Crash()
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := d.PipeRaw(exactly.SourceRecord{Topic: "input", Offset: 9, Key: []byte("a")}); err == nil {
		t.Fatal("an offset at or below the partition's last was accepted")
	}

	var counts []int64
	for _, r := range d.TopicRecords("output", 0) {
		var c counted
		if err := json.Unmarshal(r.Value, &c); err != nil {
			t.Fatal(err)
		}
		counts = append(counts, c.Count)
	}
	if want := []int64{1, 2, 3}; !slices.Equal(counts, want) {
		t.Fatalf("counts %v, want %v: the restart did not resume after offset 5", counts, want)
	}
	dl := d.TopicRecords("input-dlq", 0)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	for _, h := range dl[0].Headers {
		if h.Key == "exactly.source.offset" && string(h.Value) != "2" {
			t.Fatalf("dead letter names offset %s, want 2", h.Value)
		}
	}
	if got := d.TopicRecords("output", 2); len(got) != 1 || got[0].Offset != 2 {
		t.Fatalf("TopicRecords from 2 returned %+v", got)
	}
	if st, ok := d.StreamTime(0, 0); !ok || st.UnixMilli() != 9 {
		t.Fatalf("stream time %v %v, want 9 ms", st, ok)
	}
}

// TestSubtopologiesLeavesOtherSubtopologiesInputUnprocessed runs only the
// downstream half of a two-step topology: what the upstream half would
// have read stays unprocessed, and the downstream half takes its input
// from whoever pipes it.
func TestSubtopologiesLeavesOtherSubtopologiesInputUnprocessed(t *testing.T) {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"input"}, Keys: serde.String, Values: serde.String})
	exactly.AddSink(b, "to-middle", exactly.Sink[string, string]{Topic: "middle", Keys: serde.String, Values: serde.String}, "in")
	exactly.AddSource(b, "from-middle", exactly.Source[string, string]{Topics: []string{"middle"}, Keys: serde.String, Values: serde.String})
	exactly.AddSink(b, "out", exactly.Sink[string, string]{Topic: "output", Keys: serde.String, Values: serde.String}, "from-middle")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testdriver.New(top, testdriver.Config{Subtopologies: []int{2}}); err == nil {
		t.Fatal("an unknown sub-topology was accepted")
	}
	d := newDriver(t, top, testdriver.Config{Subtopologies: []int{1}})
	if err := d.PipeBytes("input", []byte("k"), []byte("upstream"), time.UnixMilli(1)); err != nil {
		t.Fatal(err)
	}
	if err := d.PipeRaw(exactly.SourceRecord{Topic: "middle", Offset: 7, Key: []byte("k"), Value: []byte("replayed"), Timestamp: time.UnixMilli(2)}); err != nil {
		t.Fatal(err)
	}
	out := d.TopicRecords("output", 0)
	if len(out) != 1 || string(out[0].Value) != "replayed" {
		t.Fatalf("output %+v, want only the piped middle record", out)
	}
	if _, ok := d.StreamTime(0, 0); ok {
		t.Fatal("sub-topology 0 runs although only 1 was asked for")
	}
}

// TestWallClockPunctuatorsAreReported names the processors whose output
// depends on the wall clock.
func TestWallClockPunctuatorsAreReported(t *testing.T) {
	var fired []int64
	for _, tc := range []struct {
		typ  exactly.PunctuationType
		want []string
	}{{exactly.StreamTime, nil}, {exactly.WallClockTime, []string{"p"}}} {
		b := exactly.NewBuilder()
		exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"input"}, Keys: serde.String, Values: serde.String})
		exactly.AddProcessor(b, "p", func() exactly.Processor[string, string, string, string] {
			return &punctuated{typ: tc.typ, every: time.Second, fired: &fired}
		}, "in")
		top, _ := b.Build()
		d := newDriver(t, top, testdriver.Config{Partitions: map[string]int32{"input": 2}})
		if got := d.WallClockPunctuators(); !slices.Equal(got, tc.want) {
			t.Fatalf("%v punctuator: WallClockPunctuators() = %v, want %v", tc.typ, got, tc.want)
		}
	}
}

// TestDeadLettersOverTheRunnersBoundGoWithoutTheirValue dead-letters a
// record larger than the Kafka runner's bound: as the runner does, the
// dead letter keeps the key and drops the value, unless the bound is
// turned off.
func TestDeadLettersOverTheRunnersBoundGoWithoutTheirValue(t *testing.T) {
	big := bytes.Repeat([]byte{0xff}, 1<<20) // not UTF-8: a deserialization error
	for _, tc := range []struct {
		bound     int
		keepValue bool
	}{{0, false}, {-1, true}} {
		d := newDriver(t, countingTopology(t, false, exactly.DeadLetterOnError), testdriver.Config{DeadLetterMaxBytes: tc.bound})
		if err := d.PipeRaw(exactly.SourceRecord{Topic: "input", Key: []byte("k"), Value: big, Timestamp: time.UnixMilli(1)}); err != nil {
			t.Fatal(err)
		}
		dl := d.TopicRecords("input-dlq", 0)
		if len(dl) != 1 || string(dl[0].Key) != "k" || (dl[0].Value != nil) != tc.keepValue || rawHeader(dl[0].Headers, "exactly.error.reason") != "deserialization-error" {
			t.Fatalf("DeadLetterMaxBytes %d: dead letters %d, value kept %v, want kept %v", tc.bound, len(dl), len(dl) > 0 && dl[0].Value != nil, tc.keepValue)
		}
	}
}

func rawHeader(headers []exactly.Header, key string) string {
	for _, h := range headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
