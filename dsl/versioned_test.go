package dsl_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/prometheus/client_golang/prometheus"
)

const priceHistory = 10 * time.Second

func versionedTopology(reg prometheus.Registerer) func(t *testing.T) *exactly.Topology {
	return func(t *testing.T) *exactly.Topology {
		sb := dsl.NewStreamsBuilder(dsl.Options{Registerer: reg})
		prices := dsl.VersionedTable(sb, "prices", serde.String, serde.Int64, "prices", priceHistory, dsl.Materialized{})
		orders := dsl.Stream(sb, "orders", serde.String, serde.String)
		dsl.LeftJoin(orders, prices, func(_ string, order string, price int64, found bool) string {
			if !found {
				return order + "@?"
			}
			return fmt.Sprint(order, "@", price)
		}, serde.String).To("priced")
		prices.ToStream().To("current-prices")
		top, err := sb.Build()
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
}

type versionedStep struct {
	price bool
	key   string
	value int64 // a price; -1: a tombstone
	order string
	ts    int64
}

// randomVersionedSteps mixes price updates and orders, both out of order
// on a 500 ms grid, some far behind stream time.
func randomVersionedSteps(rng *rand.Rand, n int) []versionedStep {
	out := make([]versionedStep, n)
	now := int64(100_000)
	for i := range out {
		now += 500 * rng.Int64N(3)
		ts := now - 500*rng.Int64N(12)
		if rng.IntN(15) == 0 {
			ts = now - 12_000 - 500*rng.Int64N(10)
		}
		s := versionedStep{key: fmt.Sprint("p", rng.IntN(3)), ts: ts}
		if rng.IntN(3) == 0 {
			s.price, s.value = true, rng.Int64N(100)
			if rng.IntN(6) == 0 {
				s.value = -1
			}
		} else {
			s.order = fmt.Sprint("o", i)
		}
		out[i] = s
	}
	return out
}

func pipeVersioned(d *testdriver.Driver, s versionedStep) error {
	if !s.price {
		return d.PipeBytes("orders", []byte(s.key), []byte(s.order), time.UnixMilli(s.ts))
	}
	var value []byte
	if s.value >= 0 {
		value, _ = serde.Int64.Serialize(s.value)
	}
	return d.PipeBytes("prices", []byte(s.key), value, time.UnixMilli(s.ts))
}

// TestTemporalJoinMatchesBruteForce: each order joins the price valid at
// its own timestamp (the latest update at or before it, a deletion
// meaning none), however late the order or the price update arrives,
// within the table's history; the table's current value follows only
// updates newer than it.
func TestTemporalJoinMatchesBruteForce(t *testing.T) {
	for seed := range uint64(8) {
		steps := randomVersionedSteps(rand.New(rand.NewPCG(seed, 120)), 300)
		m := prometheus.NewRegistry()
		d, err := testdriver.New(versionedTopology(m)(t), testdriver.Config{})
		if err != nil {
			t.Fatal(err)
		}
		type update struct{ ts, value int64 }
		history := map[string][]update{}
		latest := map[string]update{}
		priced, current := map[string][]string{}, map[string][]string{}
		st, dropped, lateOrders, historic := int64(-1<<62), 0, 0, 0
		for _, s := range steps {
			if err := pipeVersioned(d, s); err != nil {
				t.Fatal(err)
			}
			st = max(st, s.ts)
			horizon := st - priceHistory.Milliseconds()
			if s.price {
				if s.ts < horizon {
					dropped++
					continue
				}
				history[s.key] = append(history[s.key], update{s.ts, s.value})
				if l, ok := latest[s.key]; !ok || s.ts >= l.ts {
					if s.value >= 0 {
						current[s.key] = append(current[s.key], fmt.Sprint(s.value))
					}
					latest[s.key] = update{s.ts, s.value}
				}
				continue
			}
			valid := update{-1, -1}
			if s.ts >= horizon {
				for _, u := range history[s.key] {
					if u.ts <= s.ts && u.ts >= valid.ts {
						valid = u
					}
				}
			} else {
				lateOrders++
			}
			if l := latest[s.key]; valid.ts >= 0 && valid.ts < l.ts {
				historic++ // joined a value that is no longer the current one
			}
			if valid.value < 0 {
				priced[s.key] = append(priced[s.key], s.order+"@?")
			} else {
				priced[s.key] = append(priced[s.key], fmt.Sprint(s.order, "@", valid.value))
			}
		}
		if historic == 0 || lateOrders == 0 || dropped == 0 {
			t.Fatalf("seed %d: %d orders joined a past price, %d orders and %d updates were past the history: the input tests too little",
				seed, historic, lateOrders, dropped)
		}
		sameByKey(t, fmt.Sprint("seed ", seed, " priced"), recordsByKey(d, "priced", asString), priced)
		sameByKey(t, fmt.Sprint("seed ", seed, " current"), recordsByKey(d, "current-prices", asInt64), current)
		if got := lateDrops(t, m); got != dropped {
			t.Fatalf("seed %d: dropped %d updates, want %d", seed, got, dropped)
		}
		if n, _ := d.StoreEntries("prices"); n > 40 {
			t.Fatalf("seed %d: the versioned store keeps %d versions of 3 keys: old ones are not forgotten", seed, n)
		}
		d.Close()
	}
}

func TestTemporalJoinSurvivesCrashes(t *testing.T) {
	steps := randomVersionedSteps(rand.New(rand.NewPCG(13, 13)), 200)
	checkCrashEquivalence(t, crashCase{
		build:   versionedTopology(nil),
		steps:   len(steps),
		step:    func(d *testdriver.Driver, i int) error { return pipeVersioned(d, steps[i]) },
		outputs: []string{"priced", "current-prices"},
	}, 8)
}
