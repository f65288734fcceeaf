package dsl_test

import (
	"context"
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
	windows := dsl.TumblingWindows(5*time.Minute, 2*time.Minute)
	windows.Emit = dsl.OnWindowClose
	counts := dsl.WindowedCount(orders.GroupByKey(), windows, "orders-per-customer", dsl.Materialized{})
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

// account is a row of a table of accounts, keyed by account id.
type account struct {
	Branch  string `json:"branch"`
	Balance int64  `json:"balance"`
}

// Deposits per branch from a table of accounts: an account that moves to
// another branch, or is closed (a tombstone), is taken out of its old
// branch's total by the subtractor.
func Example_tableAggregation() {
	sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: "bank"})
	accounts := dsl.Table(sb, "accounts", serde.String, serde.JSON[account](), "accounts", dsl.Materialized{})
	byBranch := dsl.TableGroupBy(accounts, func(_ string, a account) dsl.KeyValue[string, int64] {
		return dsl.KeyValue[string, int64]{Key: a.Branch, Value: a.Balance}
	}, serde.String, serde.Int64)
	deposits := dsl.AggregateTable(byBranch, "deposits-per-branch", func() int64 { return 0 },
		func(_ string, balance, total int64) int64 { return total + balance },
		func(_ string, balance, total int64) int64 { return total - balance },
		serde.Int64, dsl.Materialized{})
	deposits.ToStream().To("deposits")
	topology, err := sb.Build()
	if err != nil {
		panic(err)
	}

	d, _ := testdriver.New(topology, testdriver.Config{ApplicationID: "bank"})
	defer d.Close()
	in := testdriver.CreateInputTopic(d, "accounts", serde.String, serde.JSON[account]())
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	in.PipeInput("a-1", account{Branch: "north", Balance: 100}, t0)
	in.PipeInput("a-2", account{Branch: "north", Balance: 50}, t0)
	in.PipeInput("a-1", account{Branch: "south", Balance: 120}, t0) // moves: north 50, south 120
	d.PipeBytes("accounts", []byte("a-2"), nil, t0)                 // closed: north 0
	recs, _ := testdriver.CreateOutputTopic(d, "deposits", serde.String, serde.Int64).ReadRecords()
	for _, r := range recs {
		fmt.Println(r.Key, r.Value)
	}
	// Output:
	// north 100
	// north 150
	// north 50
	// south 120
	// north 0
}

// Customers joined with their (optional) loyalty status: a left join of
// two tables keeps every customer and follows changes on both sides,
// including a deletion.
func ExampleJoinTables() {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	customers := dsl.Table(sb, "customers", serde.String, serde.String, "customers", dsl.Materialized{})
	loyalty := dsl.Table(sb, "loyalty", serde.String, serde.String, "loyalty", dsl.Materialized{})
	profiles := dsl.JoinTables(customers, loyalty, dsl.JoinLeft, func(_ string, j dsl.Joined[string, string]) string {
		if !j.HasRight {
			return j.Left + " (no status)"
		}
		return j.Left + " (" + j.Right + ")"
	}, serde.String)
	profiles.Materialize("profiles", dsl.Materialized{}).To("profiles")
	topology, err := sb.Build()
	if err != nil {
		panic(err)
	}

	d, _ := testdriver.New(topology, testdriver.Config{})
	defer d.Close()
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	testdriver.CreateInputTopic(d, "customers", serde.String, serde.String).PipeInput("c-1", "Ada", t0)
	testdriver.CreateInputTopic(d, "loyalty", serde.String, serde.String).PipeInput("c-1", "gold", t0)
	d.PipeBytes("loyalty", []byte("c-1"), nil, t0)   // status revoked
	d.PipeBytes("customers", []byte("c-1"), nil, t0) // customer deleted: a tombstone
	for _, r := range d.TopicRecords("profiles", 0) {
		if r.Value == nil {
			fmt.Println(string(r.Key), "tombstone")
			continue
		}
		fmt.Println(string(r.Key), string(r.Value))
	}
	// Output:
	// c-1 Ada (no status)
	// c-1 Ada (gold)
	// c-1 Ada (no status)
	// c-1 tombstone
}

// orderRow is a row of a table of orders, referring to its customer.
type orderRow struct {
	Customer string `json:"customer"`
	Total    int64  `json:"total"`
}

// Orders enriched with their customer's name through a foreign key: the
// result follows a customer's rename and an order moved to another
// customer, with no need for the two tables to be co-partitioned.
func ExampleJoinOnForeignKey() {
	sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: "shop"})
	orders := dsl.Table(sb, "orders", serde.String, serde.JSON[orderRow](), "orders", dsl.Materialized{})
	customers := dsl.Table(sb, "customers", serde.String, serde.String, "customers", dsl.Materialized{})
	enriched := dsl.JoinOnForeignKey(orders, customers, dsl.JoinInner, "order-customer",
		func(o orderRow) string { return o.Customer },
		func(_ string, j dsl.Joined[orderRow, string]) string { return fmt.Sprint(j.Right, " ", j.Left.Total) },
		serde.String, dsl.Materialized{})
	enriched.ToStream().To("orders-enriched")
	topology, err := sb.Build()
	if err != nil {
		panic(err)
	}

	d, _ := testdriver.New(topology, testdriver.Config{ApplicationID: "shop",
		Partitions: map[string]int32{"orders": 2, "customers": 3}})
	defer d.Close()
	orderIn := testdriver.CreateInputTopic(d, "orders", serde.String, serde.JSON[orderRow]())
	customerIn := testdriver.CreateInputTopic(d, "customers", serde.String, serde.String)
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	customerIn.PipeInput("c-1", "Ada", t0)
	customerIn.PipeInput("c-2", "Grace", t0)
	orderIn.PipeInput("o-1", orderRow{Customer: "c-1", Total: 30}, t0)
	customerIn.PipeInput("c-1", "Ada L.", t0)                          // renamed
	orderIn.PipeInput("o-1", orderRow{Customer: "c-2", Total: 30}, t0) // moved
	recs, _ := testdriver.CreateOutputTopic(d, "orders-enriched", serde.String, serde.String).ReadRecords()
	for _, r := range recs {
		fmt.Println(r.Key, r.Value)
	}
	// Output:
	// o-1 Ada 30
	// o-1 Ada L. 30
	// o-1 Grace 30
}

// Payments in any currency converted with a global table of exchange
// rates: every instance holds all the rates, so the payments need not be
// keyed or partitioned by currency.
func ExampleJoinGlobal() {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	rates := dsl.GlobalTable(sb, "eur-rates", serde.String, serde.Int64, "eur-rates", dsl.Materialized{}) // cents of EUR per unit
	type payment struct {
		Currency string `json:"currency"`
		Amount   int64  `json:"amount"`
	}
	payments := dsl.Stream(sb, "payments", serde.String, serde.JSON[payment]()) // key: account
	dsl.JoinGlobal(payments, rates, func(_ string, p payment) string { return p.Currency },
		func(_ string, p payment, rate int64) int64 { return p.Amount * rate }, serde.Int64).To("payments-eur-cents")
	topology, err := sb.Build()
	if err != nil {
		panic(err)
	}

	d, _ := testdriver.New(topology, testdriver.Config{Partitions: map[string]int32{"eur-rates": 3, "payments": 2}})
	defer d.Close()
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	rateIn := testdriver.CreateInputTopic(d, "eur-rates", serde.String, serde.Int64)
	rateIn.PipeInput("USD", 92, t0)
	rateIn.PipeInput("GBP", 117, t0)
	in := testdriver.CreateInputTopic(d, "payments", serde.String, serde.JSON[payment]())
	in.PipeInput("acct-1", payment{Currency: "USD", Amount: 10}, t0)
	in.PipeInput("acct-2", payment{Currency: "GBP", Amount: 10}, t0)
	rateIn.PipeInput("USD", 95, t0) // applied at once on every instance
	in.PipeInput("acct-1", payment{Currency: "USD", Amount: 10}, t0)
	in.PipeInput("acct-3", payment{Currency: "CHF", Amount: 10}, t0) // no rate: dropped
	recs, _ := testdriver.CreateOutputTopic(d, "payments-eur-cents", serde.String, serde.Int64).ReadRecords()
	for _, r := range recs {
		fmt.Println(r.Key, r.Value)
	}
	// Output:
	// acct-1 920
	// acct-2 1170
	// acct-1 950
}

// Browsing sessions: clicks at most 5 minutes apart belong to one session;
// a click that extends a session or bridges two replaces them with one,
// and the table deletes the ones replaced.
func ExampleSessionCount() {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	clicks := dsl.Stream(sb, "clicks", serde.String, serde.String) // key: user
	sessions := dsl.SessionCount(clicks.GroupByKey(), dsl.SessionWindows{Gap: 5 * time.Minute, Grace: 5 * time.Minute},
		"click-sessions", dsl.Materialized{})
	sessions.Changes().To("session-changes")
	topology, err := sb.Build()
	if err != nil {
		panic(err)
	}

	d, _ := testdriver.New(topology, testdriver.Config{})
	defer d.Close()
	in := testdriver.CreateInputTopic(d, "clicks", serde.String, serde.String)
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, minute := range []int{0, 3, 12, 8 /* bridges 12:03 and 12:12 */} {
		in.PipeInput("u-1", "click", start.Add(time.Duration(minute)*time.Minute))
	}
	out := testdriver.CreateOutputTopic(d, "session-changes", dsl.WindowedSerde(serde.String), dsl.ChangeSerde(serde.Int64))
	recs, _ := out.ReadRecords()
	for _, r := range recs {
		window := r.Key.Start.UTC().Format("15:04") + "–" + r.Key.End.Add(-time.Millisecond).UTC().Format("15:04")
		if !r.Value.HasNew {
			fmt.Println(window, "deleted")
			continue
		}
		fmt.Println(window, r.Value.New)
	}
	// Output:
	// 12:00–12:00 1
	// 12:00–12:00 deleted
	// 12:00–12:03 2
	// 12:12–12:12 1
	// 12:00–12:03 deleted
	// 12:12–12:12 deleted
	// 12:00–12:12 4
}

// Sliding windows of 10 minutes: each set of a card's payments within 10
// minutes of each other is one window, so three payments in any 10
// minutes are found however the minutes fall on the clock.
func ExampleSlidingCount() {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	payments := dsl.Stream(sb, "payments", serde.String, serde.Int64) // key: card
	counts := dsl.SlidingCount(payments.GroupByKey(), dsl.SlidingWindows{TimeDifference: 10 * time.Minute, Grace: time.Minute},
		"payments-per-10-minutes", dsl.Materialized{})
	counts.ToStream().Filter(func(_ dsl.Windowed[string], n int64) bool { return n == 3 }).To("bursts")
	topology, err := sb.Build()
	if err != nil {
		panic(err)
	}

	d, _ := testdriver.New(topology, testdriver.Config{})
	defer d.Close()
	in := testdriver.CreateInputTopic(d, "payments", serde.String, serde.Int64)
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, minute := range []int{0, 7, 14, 16} {
		in.PipeInput("card-1", 100, start.Add(time.Duration(minute)*time.Minute))
	}
	recs, _ := testdriver.CreateOutputTopic(d, "bursts", dsl.WindowedSerde(serde.String), serde.Int64).ReadRecords()
	for _, r := range recs {
		fmt.Println(r.Key.Key, r.Key.Start.UTC().Format("15:04"), "to", r.Key.End.Add(-time.Millisecond).UTC().Format("15:04"), r.Value)
	}
	// Output:
	// card-1 12:06 to 12:16 3
}

// Hourly revenue per category, one final figure per hour: the windowed
// sum updates with every sale, and the suppression holds the updates back
// until the hour (and its grace for late sales) has passed.
func ExampleKTable_Suppress() {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	sales := dsl.Stream(sb, "sales", serde.String, serde.Int64) // key: category, value: cents
	revenue := dsl.WindowedAggregate(sales.GroupByKey(), dsl.TumblingWindows(time.Hour, 10*time.Minute), "revenue",
		func() int64 { return 0 }, func(_ string, cents, total int64) int64 { return total + cents }, serde.Int64, dsl.Materialized{})
	revenue.Suppress("hourly-revenue", dsl.UntilWindowCloses(dsl.BufferConfig{MaxRecords: 10_000})).
		ToStream().To("hourly-revenue")
	topology, err := sb.Build()
	if err != nil {
		panic(err)
	}

	d, _ := testdriver.New(topology, testdriver.Config{})
	defer d.Close()
	in := testdriver.CreateInputTopic(d, "sales", serde.String, serde.Int64)
	at := func(hhmm string) time.Time {
		t, _ := time.Parse("2006-01-02 15:04", "2026-01-01 "+hhmm)
		return t
	}
	in.PipeInput("books", 1200, at("12:05"))
	in.PipeInput("books", 800, at("12:40"))
	in.PipeInput("books", 500, at("13:02"))
	in.PipeInput("books", 300, at("12:55")) // late, within grace: still counted
	in.PipeInput("books", 100, at("13:11")) // closes 12:00–13:00
	recs, _ := testdriver.CreateOutputTopic(d, "hourly-revenue", dsl.WindowedSerde(serde.String), serde.Int64).ReadRecords()
	for _, r := range recs {
		fmt.Println(r.Key.Key, r.Key.Start.UTC().Format("15:04"), r.Value)
	}
	// Output:
	// books 12:00 2300
}

// Orders priced as of their own time: a versioned table of prices keeps
// each product's price history, so an order that arrives late joins the
// price that was valid when it was placed, not today's.
func ExampleVersionedTable() {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	prices := dsl.VersionedTable(sb, "prices", serde.String, serde.Int64, "price-history", 24*time.Hour, dsl.Materialized{})
	orders := dsl.Stream(sb, "orders", serde.String, serde.Int64) // key: product, value: quantity
	dsl.Join(orders, prices, func(_ string, qty, price int64) int64 { return qty * price }, serde.Int64).To("order-totals")
	topology, err := sb.Build()
	if err != nil {
		panic(err)
	}

	d, _ := testdriver.New(topology, testdriver.Config{})
	defer d.Close()
	at := func(hhmm string) time.Time {
		t, _ := time.Parse("2006-01-02 15:04", "2026-01-01 "+hhmm)
		return t
	}
	priceIn := testdriver.CreateInputTopic(d, "prices", serde.String, serde.Int64)
	orderIn := testdriver.CreateInputTopic(d, "orders", serde.String, serde.Int64)
	priceIn.PipeInput("tea", 400, at("09:00"))
	priceIn.PipeInput("tea", 450, at("12:00"))
	orderIn.PipeInput("tea", 2, at("12:30"))
	orderIn.PipeInput("tea", 2, at("11:59")) // placed before the price rise, arriving late
	recs, _ := testdriver.CreateOutputTopic(d, "order-totals", serde.String, serde.Int64).ReadRecords()
	for _, r := range recs {
		fmt.Println(r.Timestamp.UTC().Format("15:04"), r.Value)
	}
	// Output:
	// 12:30 900
	// 11:59 800
}

// Interactive queries of a running instance: a customer's clicks per
// minute over the last hour, their sessions of today, and a price as it
// was this morning. Each query reads the committed state of the partitions
// this instance holds; exactly.KeyMetadata names the instance holding a
// key, to which a handler routes the query.
func ExampleQueryWindows() {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	clicks := dsl.Stream(sb, "clicks", serde.String, serde.String).GroupByKey() // key: customer id
	perMinute := dsl.TumblingWindows(time.Minute, 10*time.Second)
	dsl.WindowedCount(clicks, perMinute, "clicks-per-minute", dsl.Materialized{})
	dsl.SessionCount(clicks, dsl.SessionWindows{Gap: 30 * time.Minute, Grace: time.Hour}, "click-sessions", dsl.Materialized{})
	dsl.VersionedTable(sb, "prices", serde.String, serde.Int64, "price-history", 24*time.Hour, dsl.Materialized{})
	topology, err := sb.Build()
	if err != nil {
		panic(err)
	}
	app, err := exactly.New(topology, exactly.Config{Brokers: []string{"127.0.0.1:9092"}, ApplicationID: "clicks"})
	if err != nil {
		panic(err)
	}
	go app.Run(context.Background())
	<-app.Ready()

	ctx, now := context.Background(), time.Now()
	minutes, err := dsl.QueryWindows[string, int64](ctx, app, "clicks-per-minute", serde.String, perMinute, "c-1", now.Add(-time.Hour), now)
	if err != nil {
		panic(err) // a *exactly.NotLocalError names the instance to ask
	}
	for _, m := range minutes {
		fmt.Println(m.Key.Start.Format("15:04"), m.Value)
	}
	sessions, _ := dsl.QuerySessions[string, int64](ctx, app, "click-sessions", serde.String, "c-1", now.Truncate(24*time.Hour), now)
	for _, s := range sessions {
		fmt.Println(s.Key.Start.Format("15:04"), "to", s.Key.End.Format("15:04"), s.Value)
	}
	price, since, found, _ := dsl.QueryAsOf(ctx, app, "price-history", serde.String, serde.Int64, "tea", now.Add(-6*time.Hour))
	fmt.Println(price, since, found)
}
