package dsl_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
)

type fkOrder struct {
	Customer string `json:"customer"`
	Amount   int64  `json:"amount"`
}

func fkTopology(kind dsl.JoinKind) func(t *testing.T) *exactly.Topology {
	return func(t *testing.T) *exactly.Topology {
		sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: "test"})
		orders := dsl.Table(sb, "orders", serde.String, serde.JSON[fkOrder](), "orders-store", dsl.Materialized{})
		customers := dsl.Table(sb, "customers", serde.String, serde.String, "customers-store", dsl.Materialized{})
		enriched := dsl.JoinOnForeignKey(orders, customers, kind, "order-customer", func(o fkOrder) string { return o.Customer },
			func(order string, j dsl.Joined[fkOrder, string]) string {
				name := "?"
				if j.HasRight {
					name = j.Right
				}
				return fmt.Sprint(order, ":", j.Left.Amount, "@", name)
			}, serde.String, dsl.Materialized{})
		enriched.To("enriched")
		enriched.Changes().To("enriched-changes")
		top, err := sb.Build()
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
}

type fkUpdate struct {
	topic, key string
	value      []byte // nil: a tombstone
}

func randomFKUpdates(rng *rand.Rand, n int) []fkUpdate {
	out := make([]fkUpdate, n)
	for i := range out {
		if rng.IntN(3) == 0 {
			u := fkUpdate{topic: "customers", key: fmt.Sprint("c", rng.IntN(4))}
			if rng.IntN(4) != 0 {
				u.value = []byte(fmt.Sprint("name", i))
			}
			out[i] = u
			continue
		}
		u := fkUpdate{topic: "orders", key: fmt.Sprint("o", rng.IntN(8))}
		if rng.IntN(5) != 0 {
			u.value, _ = json.Marshal(fkOrder{Customer: fmt.Sprint("c", rng.IntN(4)), Amount: int64(i)})
		}
		out[i] = u
	}
	return out
}

func pipeFK(d *testdriver.Driver, i int, u fkUpdate) error {
	return d.PipeBytes(u.topic, []byte(u.key), u.value, time.UnixMilli(int64(i)*10))
}

var fkPartitions = map[string]int32{"orders": 2, "customers": 3}

// TestForeignKeyJoinMatchesBruteForce checks, after random updates and
// deletions on both sides (foreign keys moving between customers,
// customers deleted and re-created), that the result table equals the
// join recomputed from scratch, and that each result change carries as
// its old value the result emitted before it.
func TestForeignKeyJoinMatchesBruteForce(t *testing.T) {
	changes := dsl.ChangeSerde(serde.String)
	for _, kind := range []dsl.JoinKind{dsl.JoinInner, dsl.JoinLeft} {
		joined := 0
		for seed := range uint64(8) {
			updates := randomFKUpdates(rand.New(rand.NewPCG(seed, 60+uint64(kind))), 300)
			d, err := testdriver.New(fkTopology(kind)(t), testdriver.Config{Partitions: fkPartitions})
			if err != nil {
				t.Fatal(err)
			}
			orders, customers := map[string]fkOrder{}, map[string]string{}
			for i, u := range updates {
				if err := pipeFK(d, i, u); err != nil {
					t.Fatal(err)
				}
				switch {
				case u.topic == "customers" && u.value == nil:
					delete(customers, u.key)
				case u.topic == "customers":
					customers[u.key] = string(u.value)
				case u.value == nil:
					delete(orders, u.key)
				default:
					var o fkOrder
					json.Unmarshal(u.value, &o)
					orders[u.key] = o
				}
			}
			want := map[string]string{}
			for k, o := range orders {
				name, ok := customers[o.Customer]
				switch {
				case ok:
					want[k] = fmt.Sprint(k, ":", o.Amount, "@", name)
				case kind == dsl.JoinLeft:
					want[k] = fmt.Sprint(k, ":", o.Amount, "@?")
				}
			}
			got := map[string]string{}
			for k, vs := range recordsByKey(d, "enriched", asString) {
				if last := vs[len(vs)-1]; last != "<nil>" {
					got[k] = last
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("kind %d seed %d: result topic\n got %v\nwant %v", kind, seed, got, want)
			}
			stored := map[string]string{}
			for p := range int32(2) {
				kv, err := testdriver.KeyValueStore[string, string](d, "order-customer", p)
				if err != nil {
					t.Fatal(err)
				}
				it, _ := kv.All()
				for it.Next() {
					stored[it.Key()] = it.Value()
				}
				it.Close()
			}
			if fmt.Sprint(stored) != fmt.Sprint(want) {
				t.Fatalf("kind %d seed %d: result store\n got %v\nwant %v", kind, seed, stored, want)
			}
			for k, cs := range recordsByKey(d, "enriched-changes", asString) {
				prev, had := "", false
				for _, raw := range cs {
					c, err := changes.Deserialize([]byte(raw))
					if err != nil {
						t.Fatal(err)
					}
					if c.HasOld != had || c.Old != prev {
						t.Fatalf("kind %d seed %d key %s: change %+v after %q/%v", kind, seed, k, c, prev, had)
					}
					prev, had = c.New, c.HasNew
				}
			}
			joined += len(want)
			d.Close()
		}
		if joined < 8 {
			t.Fatalf("kind %d: %d results in all, too few to check", kind, joined)
		}
	}
}

func TestForeignKeyJoinSurvivesCrashes(t *testing.T) {
	updates := randomFKUpdates(rand.New(rand.NewPCG(9, 9)), 200)
	checkCrashEquivalence(t, crashCase{
		build:  fkTopology(dsl.JoinLeft),
		cfg:    testdriver.Config{Partitions: fkPartitions},
		steps:  len(updates),
		step:   func(d *testdriver.Driver, i int) error { return pipeFK(d, i, updates[i]) },
		tables: []string{"enriched"},
	}, 8)
}

func TestForeignKeyJoinTopicsArePartitionedLikeTheirTables(t *testing.T) {
	top := fkTopology(dsl.JoinInner)(t)
	d, err := testdriver.New(top, testdriver.Config{Partitions: fkPartitions})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i, u := range randomFKUpdates(rand.New(rand.NewPCG(1, 1)), 100) {
		if err := pipeFK(d, i, u); err != nil {
			t.Fatal(err)
		}
	}
	max := map[string]int32{}
	for _, topic := range []string{dsl.SubscriptionTopic("test", "order-customer"), dsl.ResponseTopic("test", "order-customer")} {
		for _, r := range d.TopicRecords(topic, 0) {
			max[topic] = maxOf(max[topic], r.Partition+1)
		}
	}
	if max["test-order-customer-subscription-registration-topic"] != 3 || max["test-order-customer-subscription-response-topic"] != 2 {
		t.Fatalf("partitions used %v: want 3 for subscriptions (as customers), 2 for responses (as orders)", max)
	}
	desc := top.Describe("test")
	for _, want := range []string{"test-order-customer-subscription-registration-topic", "test-order-customer-subscription-response-topic", "test-order-customer-subscriptions-changelog"} {
		if !strings.Contains(desc, want) {
			t.Fatalf("Describe does not name %s:\n%s", want, desc)
		}
	}
}

func maxOf(a, b int32) int32 {
	if a > b {
		return a
	}
	return b
}
