// Command revenue computes the final revenue of every product category per
// customer country and hour, exactly once, from three topics:
//
//   - products (key product id, JSON Product): a global table, held whole
//     by every instance, so orders need not be partitioned by product;
//   - customers (key customer id, JSON Customer): a table;
//   - orders (key order id, JSON Order, event time = record timestamp): a
//     table of orders, each naming its customer and product.
//
// Each order is enriched with its customer through a foreign-key join
// (orders and customers need not be co-partitioned), then with its
// product through the global table; its revenue (quantity × unit price)
// is summed per "category/country" in hourly windows with a grace period
// for late orders, and a suppression emits each window's sum once, when
// the window has closed, to hourly-revenue (key "category/country@start-end"
// in epoch milliseconds, readable by any consumer; value an 8-byte
// big-endian number of cents).
//
// Windows close on stream time, which each task keeps for its own
// partitions; when partitions progress unevenly (an instance killed and
// its tasks restored elsewhere), the grace period must cover the skew, or
// the orders of a lagging partition come too late for their window.
//
// Its tests check the topology against a brute-force oracle in the test
// driver, with crashes; the command in cmd/revenue runs an instance, and
// its test runs three instance processes under SIGKILLs against an
// in-process broker.
//
//	go run ./cmd/exactly broker --topic products --topic customers --topic orders &
//	go run ./examples/revenue/cmd/revenue -brokers 127.0.0.1:9092 -produce
//	go run ./examples/revenue/cmd/revenue -brokers 127.0.0.1:9092
package revenue

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
)

// The topics of the application.
const (
	ProductsTopic  = "products"
	CustomersTopic = "customers"
	OrdersTopic    = "orders"
	RevenueTopic   = "hourly-revenue"
)

// Product is a row of the products topic.
type Product struct {
	Category  string `json:"category"`
	UnitCents int64  `json:"unitCents"`
}

// Customer is a row of the customers topic.
type Customer struct {
	Country string `json:"country"`
}

// Order is a row of the orders topic; its record timestamp is when it was
// placed.
type Order struct {
	CustomerID string `json:"customerId"`
	ProductID  string `json:"productId"`
	Quantity   int64  `json:"quantity"`
}

// sale is an order enriched with its customer's country.
type sale struct {
	Order   Order  `json:"order"`
	Country string `json:"country"`
}

// Options configure the topology.
type Options struct {
	// ApplicationID names the internal topics; default "revenue".
	ApplicationID string
	// Window is the size of the revenue windows; default one hour.
	Window time.Duration
	// Grace is how late an order still counts; default ten minutes.
	Grace time.Duration
	// Persistent keeps the stores in Pebble.
	Persistent bool
}

// WithDefaults fills the zero fields with their defaults.
func (o Options) WithDefaults() Options {
	if o.ApplicationID == "" {
		o.ApplicationID = "revenue"
	}
	if o.Window == 0 {
		o.Window = time.Hour
	}
	if o.Grace == 0 {
		o.Grace = 10 * time.Minute
	}
	return o
}

// Topology builds the application.
func Topology(o Options) (*exactly.Topology, error) {
	o = o.WithDefaults()
	sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: o.ApplicationID})
	m := dsl.Materialized{Persistent: o.Persistent}
	products := dsl.GlobalTable(sb, ProductsTopic, serde.String, serde.JSON[Product](), "products", m)
	customers := dsl.Table(sb, CustomersTopic, serde.String, serde.JSON[Customer](), "customers", m)
	orders := dsl.Table(sb, OrdersTopic, serde.String, serde.JSON[Order](), "orders", m)
	sales := dsl.JoinOnForeignKey(orders, customers, dsl.JoinInner, "order-customer", func(o Order) string { return o.CustomerID },
		func(_ string, j dsl.Joined[Order, Customer]) sale {
			return sale{Order: j.Left, Country: j.Right.Country}
		},
		serde.JSON[sale](), m)
	type line struct {
		Group string `json:"group"`
		Cents int64  `json:"cents"`
	}
	lines := dsl.JoinGlobal(sales.ToStream(), products, func(_ string, s sale) string { return s.Order.ProductID },
		func(_ string, s sale, p Product) line {
			return line{Group: p.Category + "/" + s.Country, Cents: s.Order.Quantity * p.UnitCents}
		}, serde.JSON[line]())
	byGroup := dsl.GroupBy(lines, func(_ string, l line) string { return l.Group }, serde.String)
	revenue := dsl.WindowedAggregate(byGroup, dsl.TumblingWindows(o.Window, o.Grace), "revenue",
		func() int64 { return 0 }, func(_ string, l line, total int64) int64 { return total + l.Cents }, serde.Int64,
		m)
	revenue.Suppress("final-revenue", dsl.UntilWindowCloses(dsl.BufferConfig{MaxRecords: 100_000})).ToStream().
		ToWith(RevenueTopic, dsl.Produced[dsl.Windowed[string], int64]{Keys: dsl.ReadableWindowedSerde(serde.String)})
	return sb.Build()
}

// WindowKey renders a window of a group as the output's keys do.
func WindowKey(group string, start time.Time, size time.Duration) string {
	return fmt.Sprintf("%s@%d-%d", group, start.UnixMilli(), start.Add(size).UnixMilli())
}
