package dsl_test

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
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
