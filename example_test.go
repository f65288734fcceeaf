package exactly_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/exactly-go/exactly/testdriver"
)

// wordCounter counts the records of each key in the store "counts" and
// forwards the key's new count.
type wordCounter struct {
	ctx    exactly.ProcessorContext[string, int64]
	counts store.KeyValueStore[string, int64]
}

func (c *wordCounter) Init(ctx exactly.ProcessorContext[string, int64]) (err error) {
	c.ctx = ctx
	c.counts, err = exactly.GetKeyValueStore[string, int64](ctx, "counts")
	return err
}

func (c *wordCounter) Process(rec exactly.Record[string, string]) error {
	n, _, err := c.counts.Get(rec.Key)
	if err != nil {
		return err
	}
	if err := c.counts.Put(rec.Key, n+1); err != nil {
		return err
	}
	c.ctx.Forward(exactly.Record[string, int64]{Key: rec.Key, Value: n + 1})
	return nil
}

func (c *wordCounter) Close() error { return nil }

// wordCount reads words as keys from "words" and writes each word's running
// count to "counts".
func wordCount() (*exactly.Topology, error) {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "words", exactly.Source[string, string]{
		Topics: []string{"words"}, Keys: serde.String, Values: serde.String,
	})
	exactly.AddProcessor(b, "count", func() exactly.Processor[string, string, string, int64] {
		return &wordCounter{}
	}, "words")
	exactly.AddStore(b, exactly.Store[string, int64]{Name: "counts", Keys: serde.String, Values: serde.Int64}, "count")
	exactly.AddSink(b, "out", exactly.Sink[string, int64]{Topic: "counts", Keys: serde.String, Values: serde.Int64}, "count")
	return b.Build()
}

// A topology is built once and tested with the test driver, which needs no
// broker; the same topology runs on Kafka with New.
func Example() {
	topology, err := wordCount()
	if err != nil {
		fmt.Println(err)
		return
	}
	driver, err := testdriver.New(topology, testdriver.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer driver.Close()

	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	words := testdriver.CreateInputTopic(driver, "words", serde.String, serde.String)
	counts := testdriver.CreateOutputTopic(driver, "counts", serde.String, serde.Int64)
	for _, w := range []string{"to", "be", "or", "not", "to", "be"} {
		if err := words.PipeInput(w, "", t0); err != nil {
			fmt.Println(err)
			return
		}
	}
	out, err := counts.ReadRecords()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, rec := range out {
		fmt.Println(rec.Key, rec.Value)
	}
	// Output:
	// to 1
	// be 1
	// or 1
	// not 1
	// to 2
	// be 2
}

// An instance runs until it is told to stop; start more with the same
// ApplicationID (and each its own StateDir) to share the partitions.
func ExampleNew() {
	topology, err := wordCount()
	if err != nil {
		fmt.Println(err)
		return
	}
	app, err := exactly.New(topology, exactly.Config{
		Brokers:       []string{"127.0.0.1:9092"},
		ApplicationID: "word-count",
		StateDir:      "/var/lib/word-count",
		Logger:        slog.Default(),
	})
	if err != nil {
		fmt.Println(err) // a *ConfigError saying what to change
		return
	}
	// SIGTERM and SIGINT stop Run cleanly: what was processed is committed.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := app.Run(ctx); errors.Is(err, exactly.ErrStateDirLocked) {
		fmt.Println("another instance uses this StateDir:", err)
	} else if err != nil {
		fmt.Println(err)
	}
}

// Records that fail go, with their original bytes, to a dead-letter sink
// instead of stopping the task; the headers say why and where they came
// from.
func ExampleBuilder_OnProcessingError() {
	b := exactly.NewBuilder()
	b.OnDeserializationError(exactly.DeadLetterOnError)
	b.OnProcessingError(exactly.DeadLetterOnError)
	exactly.AddSource(b, "amounts", exactly.Source[string, int64]{
		Topics: []string{"amounts"}, Keys: serde.String, Values: serde.Int64,
	})
	exactly.AddProcessor(b, "check", exactly.ProcessorFunc[string, int64, string, int64](
		func(ctx exactly.ProcessorContext[string, int64], rec exactly.Record[string, int64]) error {
			if rec.Value < 0 {
				return fmt.Errorf("negative amount %d", rec.Value)
			}
			ctx.Forward(rec)
			return nil
		}).Supplier(), "amounts")
	exactly.AddSink(b, "accepted", exactly.Sink[string, int64]{Topic: "accepted", Keys: serde.String, Values: serde.Int64}, "check")
	exactly.AddDeadLetterSink(b, "rejected", "amounts-dlq", "amounts", "check")
	topology, err := b.Build()
	if err != nil {
		fmt.Println(err)
		return
	}
	driver, err := testdriver.New(topology, testdriver.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer driver.Close()

	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	amounts := testdriver.CreateInputTopic(driver, "amounts", serde.String, serde.Int64)
	for _, v := range []int64{10, -5, 7} {
		if err := amounts.PipeInput("acct-1", v, t0); err != nil {
			fmt.Println(err)
			return
		}
	}
	if err := driver.PipeBytes("amounts", []byte("acct-2"), []byte("not a number"), t0); err != nil {
		fmt.Println(err)
		return
	}

	accepted, _ := testdriver.CreateOutputTopic(driver, "accepted", serde.String, serde.Int64).ReadRecords()
	for _, rec := range accepted {
		fmt.Println("accepted", rec.Key, rec.Value)
	}
	for _, dl := range driver.TopicRecords("amounts-dlq", 0) {
		fmt.Println("dead letter", string(dl.Key), "at offset", headerValue(dl, exactly.HeaderSourceOffset)+":", headerValue(dl, exactly.HeaderErrorReason))
	}
	// Output:
	// accepted acct-1 10
	// accepted acct-1 7
	// dead letter acct-1 at offset 1: processing-error
	// dead letter acct-2 at offset 3: deserialization-error
}

// headerValue returns the value of the header key of rec.
func headerValue(rec exactly.SourceRecord, key string) string {
	for _, h := range rec.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
