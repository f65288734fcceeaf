// Package exposure holds the risk examples of the streams DSL: the exposure
// of each customer (orders re-keyed by customer through a repartition
// topic, summed in a table) with a high-exposure decision whose id is
// derived from its inputs, and suspicious-order counts per customer in
// 5-minute windows with a 2-minute grace.
package exposure

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
	"github.com/prometheus/client_golang/prometheus"
)

// The topics of the examples.
const (
	OrdersTopic     = "orders.submitted.v1"
	DecisionsTopic  = "risk.decisions.v1"
	SuspiciousTopic = "risk.suspicious-order-counts.v1"
)

// OrderSubmitted is the input, keyed by order id.
type OrderSubmitted struct {
	OrderID     string `json:"orderId"`
	CustomerID  string `json:"customerId"`
	AmountCents int64  `json:"amountCents"`
}

// RiskDecision is emitted once when a customer's exposure crosses the
// threshold.
type RiskDecision struct {
	DecisionID    string `json:"decisionId"`
	Kind          string `json:"kind"`
	CustomerID    string `json:"customerId"`
	ExposureCents int64  `json:"exposureCents"`
}

// Exposure is a customer's running total and the total before the last
// order, which tells when the threshold was crossed.
type Exposure struct {
	TotalCents    int64 `json:"totalCents"`
	PreviousCents int64 `json:"previousCents"`
}

// DecisionID derives a decision's id from its inputs alone, so a decision
// recomputed after a crash or a replay has the same id.
func DecisionID(customerID string, exposureCents int64) string {
	return fmt.Sprintf("risk-exposure:%s:%d", customerID, exposureCents)
}

// CustomerExposure sums each customer's order amounts (store
// "exposure-by-customer") and emits a HIGH_EXPOSURE decision when the sum
// first reaches thresholdCents. applicationID names the repartition topic.
func CustomerExposure(applicationID string, thresholdCents int64) (*exactly.Topology, error) {
	sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: applicationID})
	orders := dsl.Stream(sb, OrdersTopic, serde.String, serde.JSON[OrderSubmitted]())
	byCustomer := dsl.SelectKey(orders, func(_ string, o OrderSubmitted) string { return o.CustomerID }, serde.String)
	exposure := dsl.Aggregate(byCustomer.GroupByKey(), "exposure-by-customer",
		func() Exposure { return Exposure{} },
		func(_ string, o OrderSubmitted, e Exposure) Exposure {
			return Exposure{TotalCents: e.TotalCents + o.AmountCents, PreviousCents: e.TotalCents}
		}, serde.JSON[Exposure](), dsl.Materialized{Persistent: true})
	crossed := exposure.ToStream().Filter(func(_ string, e Exposure) bool {
		return e.PreviousCents < thresholdCents && e.TotalCents >= thresholdCents
	})
	dsl.MapValues(crossed, func(customer string, e Exposure) RiskDecision {
		return RiskDecision{DecisionID: DecisionID(customer, e.TotalCents), Kind: "HIGH_EXPOSURE", CustomerID: customer, ExposureCents: e.TotalCents}
	}, serde.JSON[RiskDecision]()).To(DecisionsTopic)
	return sb.Build()
}

// SuspiciousOrderCounts counts each customer's orders in 5-minute windows
// with a 2-minute grace (store "suspicious-order-counts") and emits each
// window's final count. Late orders are counted in dropped_records_total,
// registered with reg (nil: nowhere).
func SuspiciousOrderCounts(applicationID string, reg prometheus.Registerer) (*exactly.Topology, error) {
	sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: applicationID, Registerer: reg})
	orders := dsl.Stream(sb, OrdersTopic, serde.String, serde.JSON[OrderSubmitted]())
	byCustomer := dsl.GroupBy(orders, func(_ string, o OrderSubmitted) string { return o.CustomerID }, serde.String)
	windows := dsl.TumblingWindows(5*time.Minute, 2*time.Minute)
	windows.Emit = dsl.OnWindowClose
	dsl.WindowedCount(byCustomer, windows, "suspicious-order-counts", dsl.Materialized{Persistent: true}).To(SuspiciousTopic)
	return sb.Build()
}
