package exposure_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/examples/exposure"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
)

const app = "risk"

// TestEachCustomerCrossesOnceWithADeterministicDecision runs random orders
// of random customers over three partitions (re-keyed through the
// repartition topic), with crashes at random points. Each customer whose
// total reaches the threshold is decided exactly once, at a total within
// one order of it, with the id derived from that total. (Which order
// tips it depends on how the partitions interleave, as in any re-keying.)
func TestEachCustomerCrossesOnceWithADeterministicDecision(t *testing.T) {
	const threshold = 10_000
	top, err := exposure.CustomerExposure(app, threshold)
	if err != nil {
		t.Fatal(err)
	}
	repartition := top.RepartitionTopics()
	if len(repartition) != 1 {
		t.Fatalf("repartition topics %v, want one in:\n%s", repartition, top.Describe(app))
	}
	for seed := range uint64(5) {
		rng := rand.New(rand.NewPCG(seed, 9))
		d, err := testdriver.New(top, testdriver.Config{ApplicationID: app, PersistentInMemory: true,
			Partitions: map[string]int32{exposure.OrdersTopic: 3, repartition[0]: 3}})
		if err != nil {
			t.Fatal(err)
		}
		in := testdriver.CreateInputTopic(d, exposure.OrdersTopic, serde.String, serde.JSON[exposure.OrderSubmitted]())
		totals := map[string]int64{}
		want := map[string]string{}
		run, err := d.RunWithCrashes(testdriver.CrashSchedule{Seed: seed, Crash: 0.05}, 300, func(i int) error {
			o := exposure.OrderSubmitted{OrderID: fmt.Sprint("o", i), CustomerID: fmt.Sprint("c", rng.IntN(10)), AmountCents: rng.Int64N(600)}
			before := totals[o.CustomerID]
			totals[o.CustomerID] += o.AmountCents
			if before < threshold && totals[o.CustomerID] >= threshold {
				want[o.CustomerID] = exposure.DecisionID(o.CustomerID, totals[o.CustomerID])
			}
			return in.PipeInput(o.OrderID, o, time.UnixMilli(int64(i)))
		})
		if err != nil {
			t.Fatal(err)
		}
		if run.Crashes+run.MidCommitCrashes == 0 {
			t.Fatalf("seed %d: no crash (%v)", seed, run)
		}
		recs, err := testdriver.CreateOutputTopic(d, exposure.DecisionsTopic, serde.String, serde.JSON[exposure.RiskDecision]()).ReadRecords()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, r := range recs {
			if got[r.Key] {
				t.Fatalf("seed %d: customer %s decided twice", seed, r.Key)
			}
			got[r.Key] = true
			e := r.Value.ExposureCents
			if _, ok := want[r.Key]; !ok || e < threshold || e >= threshold+600 || r.Value.DecisionID != exposure.DecisionID(r.Key, e) {
				t.Fatalf("seed %d: unexpected decision %+v", seed, r.Value)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("seed %d: %d customers decided, want %d (%v)", seed, len(got), len(want), want)
		}
		d.Close()
	}
}

func TestSuspiciousCountsDescribeTheirRepartitionAndStores(t *testing.T) {
	top, err := exposure.SuspiciousOrderCounts(app, dsl.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	desc := top.Describe(app)
	for _, want := range []string{"-repartition", "suspicious-order-counts (persistent, changelog risk-suspicious-order-counts-changelog)", "Sub-topology: 1"} {
		if !strings.Contains(desc, want) {
			t.Errorf("Describe lacks %q:\n%s", want, desc)
		}
	}
}
