package reorder_test

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/processors/reorder"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
)

// orderEvent is an event of an order; "created" must be applied before
// anything else of its order.
type orderEvent struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// A payment that overtakes its order's creation waits in the buffer until
// the order is created, then both go on in order.
func ExampleAdd() {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "orders", exactly.Source[string, orderEvent]{
		Topics: []string{"orders"}, Keys: serde.String, Values: serde.JSON[orderEvent](),
	})
	reorder.Add(b, "reorder", reorder.Options[string, orderEvent]{
		Keys:      serde.String,
		Values:    serde.JSON[orderEvent](),
		EventID:   func(e orderEvent) string { return e.ID },
		Opens:     func(e orderEvent) bool { return e.Type == "created" },
		BufferTTL: time.Hour, // an event still waiting an hour later is dead-lettered
	}, "orders")
	exactly.AddSink(b, "ordered", exactly.Sink[string, orderEvent]{
		Topic: "ordered", Keys: serde.String, Values: serde.JSON[orderEvent](),
	}, "reorder")
	exactly.AddDeadLetterSink(b, "expired", "orders-dlq", "reorder")
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
	in := testdriver.CreateInputTopic(driver, "orders", serde.String, serde.JSON[orderEvent]())
	out := testdriver.CreateOutputTopic(driver, "ordered", serde.String, serde.JSON[orderEvent]())
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	show := func(when string) {
		records, err := out.ReadRecords()
		if err != nil {
			fmt.Println(err)
		}
		for _, rec := range records {
			fmt.Println(when+":", rec.Key, rec.Value.Type)
		}
	}

	if err := in.PipeInput("order-1", orderEvent{ID: "e2", Type: "paid"}, t0.Add(time.Second)); err != nil {
		fmt.Println(err)
		return
	}
	show("after paid")
	if err := in.PipeInput("order-1", orderEvent{ID: "e1", Type: "created"}, t0); err != nil {
		fmt.Println(err)
		return
	}
	show("after created")
	// Output:
	// after created: order-1 created
	// after created: order-1 paid
}
