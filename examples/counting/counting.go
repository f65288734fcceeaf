// Package counting is the smallest stateful topology worth running on
// Kafka: it counts records per key in a logged store and emits, for every
// input, the input's value and its key's count after it. The runtime's
// crash tests, benchmarks and examples use it because its correct output is
// easy to state: every input exactly once, and per key the counts 1, 2, 3 …
package counting

import (
	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
)

// StoreName is the store holding each key's count.
const StoreName = "counts"

// Output is emitted for every input: the input's value (its id) and the
// count of its key after it.
type Output struct {
	ID    string `json:"id"`
	Count int64  `json:"count"`
}

type counter struct {
	ctx    exactly.ProcessorContext[string, Output]
	counts store.KeyValueStore[string, int64]
}

func (c *counter) Init(ctx exactly.ProcessorContext[string, Output]) (err error) {
	c.ctx = ctx
	c.counts, err = exactly.GetKeyValueStore[string, int64](ctx, StoreName)
	return err
}

func (c *counter) Process(rec exactly.Record[string, string]) error {
	n, _, err := c.counts.Get(rec.Key)
	if err != nil {
		return err
	}
	if err := c.counts.Put(rec.Key, n+1); err != nil {
		return err
	}
	c.ctx.Forward(exactly.Record[string, Output]{Key: rec.Key, Value: Output{ID: rec.Value, Count: n + 1}})
	return nil
}

func (c *counter) Close() error { return nil }

// Topology reads string keys and values from input and writes JSON Output
// records to output; persistent puts the store on disk (Pebble).
func Topology(input, output string, persistent bool) (*exactly.Topology, error) {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{input}, Keys: serde.String, Values: serde.String})
	exactly.AddProcessor(b, "count", func() exactly.Processor[string, string, string, Output] { return &counter{} }, "in")
	exactly.AddStore(b, exactly.Store[string, int64]{Name: StoreName, Keys: serde.String, Values: serde.Int64, Persistent: persistent}, "count")
	exactly.AddSink(b, "out", exactly.Sink[string, Output]{Topic: output, Keys: serde.String, Values: serde.JSON[Output]()}, "count")
	return b.Build()
}
