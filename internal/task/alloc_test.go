package task_test

import (
	"testing"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/serde"
)

// TestProcessAllocatesOnlyWhatTheSerdesDo checks that the task core adds no
// heap allocation of its own per record: a record through source and sink
// costs the two copies serde.Bytes makes (key and value) and a share of
// the growth of the output buffer.
func TestProcessAllocatesOnlyWhatTheSerdesDo(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[[]byte, []byte]{Topics: []string{"in"}, Keys: serde.Bytes, Values: serde.Bytes})
	exactly.AddSink(b, "out", exactly.Sink[[]byte, []byte]{Topic: "out", Keys: serde.Bytes, Values: serde.Bytes}, "in")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	tk, err := task.New(topo.Of(top), task.Config{ApplicationID: "app", StreamTime: task.UnknownTime})
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Initialize(); err != nil {
		t.Fatal(err)
	}
	rec := &topo.Raw{Topic: "in", Key: []byte("k"), Value: []byte("v"), Timestamp: 1000}
	allocs := testing.AllocsPerRun(5000, func() {
		rec.Offset++
		rec.Timestamp++
		if err := tk.Process(rec); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2.1 {
		t.Fatalf("%.2f allocations per record, want 2 (the serdes' copies)", allocs)
	}
}
