package dsl_test

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/processors/dedup"
	"github.com/exactly-go/exactly/processors/reorder"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/exactly-go/exactly/testdriver"
)

// Suspicious-order counts: orders per customer in 5-minute windows, with a
// 2-minute grace for late orders, one final count per window.
func Example_windowedCount() {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	orders := dsl.Stream(sb, "orders", serde.String, serde.String) // key: customer id
	counts := dsl.WindowedCount(orders.GroupByKey(), dsl.TumblingWindows(5*time.Minute, 2*time.Minute),
		"orders-per-customer", dsl.WindowOptions{EmitFinal: true})
	counts.Filter(func(_ dsl.Windowed[string], n int64) bool { return n >= 3 }).To("suspicious-customers")
	topology, err := sb.Build()
	if err != nil {
		panic(err)
	}

	d, _ := testdriver.New(topology, testdriver.Config{})
	defer d.Close()
	in := testdriver.CreateInputTopic(d, "orders", serde.String, serde.String)
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, minute := range []int{0, 1, 2, 4, 3 /* late, within grace */, 9 /* closes 12:00–12:05 */} {
		in.PipeInput("c-1", "o", start.Add(time.Duration(minute)*time.Minute))
	}
	out := testdriver.CreateOutputTopic(d, "suspicious-customers", dsl.WindowedSerde(serde.String), serde.Int64)
	recs, _ := out.ReadRecords()
	for _, r := range recs {
		fmt.Println(r.Key.Key, r.Key.Start.UTC().Format("15:04"), r.Key.End.UTC().Format("15:04"), r.Value)
	}
	// Output:
	// c-1 12:00 12:05 5
}

// orderEvent is an event of an order that a producer may send twice and
// out of order.
type orderEvent struct {
	ID     string `json:"id"`
	Type   string `json:"type"` // "created", "item-added", "paid"
	Amount int64  `json:"amount"`
}

// totalProcessor is a Processor API node of the application's own: each
// order's running total, in a store it declares.
type totalProcessor struct {
	ctx    exactly.ProcessorContext[string, int64]
	totals store.KeyValueStore[string, int64]
}

func (p *totalProcessor) Init(ctx exactly.ProcessorContext[string, int64]) (err error) {
	p.ctx = ctx
	p.totals, err = exactly.GetKeyValueStore[string, int64](ctx, "order-totals")
	return err
}

func (p *totalProcessor) Process(rec exactly.Record[string, orderEvent]) error {
	total, _, err := p.totals.Get(rec.Key)
	if err != nil {
		return err
	}
	total += rec.Value.Amount
	p.ctx.Forward(exactly.Record[string, int64]{Key: rec.Key, Value: total})
	return p.totals.Put(rec.Key, total)
}

func (p *totalProcessor) Close() error { return nil }

// Both layers in one chain, with no intermediate topic: the DSL reads the
// orders, the ready dedup and reorder processors drop the retried send and
// hold the early item until its order is created, a custom processor keeps
// each order's total, and the DSL filters and writes the result.
func Example_mixingLayers() {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	orders := dsl.Stream(sb, "orders", serde.String, serde.JSON[orderEvent]())
	unique := dsl.Dedup(orders, "dedup", dedup.Options[string, orderEvent]{
		ID: func(_ string, e orderEvent) string { return e.ID },
	})
	ordered := dsl.Reorder(unique, "reorder", reorder.Options[string, orderEvent]{
		EventID: func(e orderEvent) string { return e.ID },
		Opens:   func(e orderEvent) bool { return e.Type == "created" },
	})
	ordered.DeadLetterTo("orders-dlq") // events that wait too long
	exactly.AddStore(sb.Builder(), exactly.Store[string, int64]{Name: "order-totals", Keys: serde.String, Values: serde.Int64})
	totals := dsl.ProcessValues(ordered, "total", func() exactly.Processor[string, orderEvent, string, int64] {
		return &totalProcessor{}
	}, serde.Int64, "order-totals")
	totals.Filter(func(_ string, total int64) bool { return total > 0 }).To("totals")
	topology, err := sb.Build()
	if err != nil {
		panic(err)
	}

	d, _ := testdriver.New(topology, testdriver.Config{})
	defer d.Close()
	in := testdriver.CreateInputTopic(d, "orders", serde.String, serde.JSON[orderEvent]())
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	in.PipeInput("o-1", orderEvent{ID: "e2", Type: "item-added", Amount: 30}, t0.Add(time.Second)) // waits
	in.PipeInput("o-1", orderEvent{ID: "e1", Type: "created"}, t0)                                 // releases both
	in.PipeInput("o-1", orderEvent{ID: "e2", Type: "item-added", Amount: 30}, t0.Add(time.Second)) // a retry: dropped
	in.PipeInput("o-1", orderEvent{ID: "e3", Type: "item-added", Amount: 12}, t0.Add(2*time.Second))
	recs, _ := testdriver.CreateOutputTopic(d, "totals", serde.String, serde.Int64).ReadRecords()
	for _, r := range recs {
		fmt.Println(r.Key, r.Value)
	}
	// Output:
	// o-1 30
	// o-1 42
}
