package dsl_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/processors/dedup"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/exactly-go/exactly/testdriver"
)

type payment struct {
	ID     string `json:"id"`
	Amount int64  `json:"amount"`
}

// balance is a custom processor: the running balance of each account, in
// a store it declares itself.
type balance struct {
	ctx      exactly.ProcessorContext[string, int64]
	balances store.KeyValueStore[string, int64]
}

func (b *balance) Init(ctx exactly.ProcessorContext[string, int64]) (err error) {
	b.ctx = ctx
	b.balances, err = exactly.GetKeyValueStore[string, int64](ctx, "balances")
	return err
}

func (b *balance) Process(rec exactly.Record[string, payment]) error {
	n, _, err := b.balances.Get(rec.Key)
	if err != nil {
		return err
	}
	n += rec.Value.Amount
	if err := b.balances.Put(rec.Key, n); err != nil {
		return err
	}
	b.ctx.Forward(exactly.Record[string, int64]{Key: rec.Key, Value: n})
	return nil
}

func (b *balance) Close() error { return nil }

// mixedTopology: dedup (a ready processor) → balance (a custom one, keys
// kept) → a custom re-keying processor → Count (the DSL), which must
// repartition after it.
func mixedTopology(t *testing.T) *exactly.Topology {
	sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: "test"})
	payments := dsl.Stream(sb, "payments", serde.String, serde.JSON[payment]())
	unique := dsl.Dedup(payments, "dedup", dedup.Options[string, payment]{ID: func(_ string, p payment) string { return p.ID }})
	exactly.AddStore(sb.Builder(), exactly.Store[string, int64]{Name: "balances", Keys: serde.String, Values: serde.Int64})
	balances := dsl.ProcessValues(unique, "balance", func() exactly.Processor[string, payment, string, int64] { return &balance{} },
		serde.Int64, "balances")
	balances.To("balances")
	bySign := dsl.Process(balances, "", exactly.ProcessorFunc[string, int64, string, string](
		func(ctx exactly.ProcessorContext[string, string], rec exactly.Record[string, int64]) error {
			sign := "positive"
			if rec.Value < 0 {
				sign = "negative"
			}
			ctx.Forward(exactly.Record[string, string]{Key: sign, Value: rec.Key})
			return nil
		}).Supplier(), serde.String, serde.String)
	dsl.Count(bySign.GroupByKey(), "by-sign", dsl.Materialized{}).ToStream().To("sign-counts")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

type paymentEvent struct {
	account string
	p       payment
	ts      int64
}

func randomPayments(rng *rand.Rand, n int) []paymentEvent {
	var out []paymentEvent
	for i := range n {
		if i > 0 && rng.IntN(4) == 0 { // a retried send: same id, same account
			out = append(out, out[rng.IntN(len(out))])
			continue
		}
		out = append(out, paymentEvent{
			account: fmt.Sprint("acct-", rng.IntN(5)),
			p:       payment{ID: fmt.Sprint("p", i), Amount: rng.Int64N(200) - 100},
			ts:      int64(i) * 1000,
		})
	}
	return out
}

func TestProcessMidChainMatchesBruteForce(t *testing.T) {
	for seed := range uint64(8) {
		events := randomPayments(rand.New(rand.NewPCG(seed, 1)), 200)
		d, err := testdriver.New(mixedTopology(t), testdriver.Config{Partitions: map[string]int32{"payments": 2}})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		sums := map[string]int64{}
		wantBalances := map[string][]int64{}
		signs := map[string]int64{}
		in := testdriver.CreateInputTopic(d, "payments", serde.String, serde.JSON[payment]())
		for _, e := range events {
			if err := in.PipeInput(e.account, e.p, time.UnixMilli(e.ts)); err != nil {
				t.Fatal(err)
			}
			if seen[e.p.ID] {
				continue
			}
			seen[e.p.ID] = true
			sums[e.account] += e.p.Amount
			wantBalances[e.account] = append(wantBalances[e.account], sums[e.account])
			if sums[e.account] < 0 {
				signs["negative"]++
			} else {
				signs["positive"]++
			}
		}
		recs, err := testdriver.CreateOutputTopic(d, "balances", serde.String, serde.Int64).ReadRecords()
		if err != nil {
			t.Fatal(err)
		}
		gotBalances := map[string][]int64{}
		for _, r := range recs {
			gotBalances[r.Key] = append(gotBalances[r.Key], r.Value)
		}
		if fmt.Sprint(gotBalances) != fmt.Sprint(wantBalances) {
			t.Fatalf("seed %d: balances\n got %v\nwant %v", seed, gotBalances, wantBalances)
		}
		counts, err := testdriver.CreateOutputTopic(d, "sign-counts", serde.String, serde.Int64).ReadKeyValuesToMap()
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(counts) != fmt.Sprint(signs) {
			t.Fatalf("seed %d: counts by sign %v, want %v", seed, counts, signs)
		}
		d.Close()
	}
}

func TestProcessMidChainSurvivesCrashes(t *testing.T) {
	events := randomPayments(rand.New(rand.NewPCG(7, 7)), 150)
	checkCrashEquivalence(t, crashCase{
		build: mixedTopology,
		cfg:   testdriver.Config{Partitions: map[string]int32{"payments": 2}, PersistentInMemory: true},
		steps: len(events),
		step: func(d *testdriver.Driver, i int) error {
			e := events[i]
			return testdriver.CreateInputTopic(d, "payments", serde.String, serde.JSON[payment]()).PipeInput(e.account, e.p, time.UnixMilli(e.ts))
		},
		outputs: []string{"balances", "sign-counts"},
	}, 8)
}

func TestProcessValuesRefusesAChangedKey(t *testing.T) {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	in := dsl.Stream(sb, "in", serde.String, serde.String)
	dsl.ProcessValues(in, "upper", exactly.ProcessorFunc[string, string, string, string](
		func(ctx exactly.ProcessorContext[string, string], rec exactly.Record[string, string]) error {
			ctx.Forward(exactly.Record[string, string]{Key: strings.ToUpper(rec.Key), Value: rec.Value})
			return nil
		}).Supplier(), serde.String).To("out")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, testdriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	err = testdriver.CreateInputTopic(d, "in", serde.String, serde.String).PipeInput("k", "v", time.UnixMilli(1))
	var re *exactly.RecordError
	if !errors.As(err, &re) || re.Node != "upper" || !strings.Contains(err.Error(), "use Process") {
		t.Fatalf("error %v, want a record error of node upper saying to use Process", err)
	}
}

func TestReadyProcessorsMidChainReportOptionErrorsAtBuild(t *testing.T) {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	in := dsl.Stream(sb, "in", serde.String, serde.String)
	dsl.Dedup(in, "no-id", dedup.Options[string, string]{}).To("out")
	_, err := sb.Build()
	if err == nil || !strings.Contains(err.Error(), `dedup "no-id": Options.ID is required`) {
		t.Fatalf("Build error %v, want the dedup option named", err)
	}
}
