package dedup_test

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/processors/dedup"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
)

// payment is an event that a producer may send more than once.
type payment struct {
	ID     string `json:"id"`
	Amount int64  `json:"amount"`
}

// A producer that retries sends the same payment twice; only the first copy
// goes on.
func ExampleAdd() {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "payments", exactly.Source[string, payment]{
		Topics: []string{"payments"}, Keys: serde.String, Values: serde.JSON[payment](),
	})
	dedup.Add(b, "dedup", dedup.Options[string, payment]{
		ID:  func(_ string, p payment) string { return p.ID },
		TTL: 24 * time.Hour, // a copy arriving a day later is no longer recognised
	}, "payments")
	exactly.AddSink(b, "unique", exactly.Sink[string, payment]{
		Topic: "unique-payments", Keys: serde.String, Values: serde.JSON[payment](),
	}, "dedup")
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
	in := testdriver.CreateInputTopic(driver, "payments", serde.String, serde.JSON[payment]())
	out := testdriver.CreateOutputTopic(driver, "unique-payments", serde.String, serde.JSON[payment]())
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, p := range []payment{{"p1", 10}, {"p2", 20}, {"p1", 10}, {"p3", 30}} {
		if err := in.PipeInput("acct-1", p, t0.Add(time.Duration(i)*time.Second)); err != nil {
			fmt.Println(err)
			return
		}
	}
	records, err := out.ReadRecords()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, rec := range records {
		fmt.Println(rec.Value.ID, rec.Value.Amount)
	}
	// Output:
	// p1 10
	// p2 20
	// p3 30
}
