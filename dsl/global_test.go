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
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
)

type lineItem struct {
	Product string `json:"product"`
	Qty     int64  `json:"qty"`
}

func globalTopology(t *testing.T) *exactly.Topology {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	products := dsl.GlobalTable(sb, "products", serde.String, serde.String, "products", dsl.Materialized{})
	items := dsl.Stream(sb, "items", serde.String, serde.JSON[lineItem]())
	productOf := func(_ string, it lineItem) string { return it.Product }
	dsl.JoinGlobal(items, products, productOf, func(_ string, it lineItem, name string) string {
		return fmt.Sprint(it.Qty, "x", name)
	}, serde.String).To("named")
	dsl.LeftJoinGlobal(items, products, productOf, func(_ string, it lineItem, name string, found bool) string {
		if !found {
			name = "?"
		}
		return fmt.Sprint(it.Qty, "x", name)
	}, serde.String).To("named-left")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

type globalStep struct {
	product bool // a product update (else an item)
	key     string
	value   []byte // a product's name (nil: deleted) or an item
}

func randomGlobalSteps(rng *rand.Rand, n int) []globalStep {
	out := make([]globalStep, n)
	for i := range out {
		if rng.IntN(3) == 0 {
			s := globalStep{product: true, key: fmt.Sprint("p", rng.IntN(5))}
			if rng.IntN(4) != 0 {
				s.value = []byte(fmt.Sprint("name", i))
			}
			out[i] = s
			continue
		}
		out[i] = globalStep{key: fmt.Sprint("i", rng.IntN(10)),
			value: []byte(fmt.Sprintf(`{"product":"p%d","qty":%d}`, rng.IntN(5), i))}
	}
	return out
}

func pipeGlobalStep(d *testdriver.Driver, i int, s globalStep) error {
	topic := "items"
	if s.product {
		topic = "products"
	}
	return d.PipeBytes(topic, []byte(s.key), s.value, time.UnixMilli(int64(i)))
}

var globalPartitions = map[string]int32{"items": 2, "products": 3}

// TestGlobalTableJoinsMatchBruteForce: each item joins the product's name
// as of the moment it is processed, whichever partition of the products
// topic the product is in and whichever partition the item is in.
func TestGlobalTableJoinsMatchBruteForce(t *testing.T) {
	for seed := range uint64(8) {
		steps := randomGlobalSteps(rand.New(rand.NewPCG(seed, 80)), 300)
		d, err := testdriver.New(globalTopology(t), testdriver.Config{Partitions: globalPartitions})
		if err != nil {
			t.Fatal(err)
		}
		products := map[string]string{}
		inner, left := map[string][]string{}, map[string][]string{}
		for i, s := range steps {
			if err := pipeGlobalStep(d, i, s); err != nil {
				t.Fatal(err)
			}
			if s.product {
				if s.value == nil {
					delete(products, s.key)
				} else {
					products[s.key] = string(s.value)
				}
				continue
			}
			var product string
			var qty int64
			fmt.Sscanf(strings.NewReplacer(`{"product":"`, "", `","qty":`, " ", "}", "").Replace(string(s.value)), "%s %d", &product, &qty)
			name, ok := products[product]
			if ok {
				inner[s.key] = append(inner[s.key], fmt.Sprint(qty, "x", name))
			} else {
				name = "?"
			}
			left[s.key] = append(left[s.key], fmt.Sprint(qty, "x", name))
		}
		sameByKey(t, fmt.Sprint("seed ", seed, " inner"), recordsByKey(d, "named", asString), inner)
		sameByKey(t, fmt.Sprint("seed ", seed, " left"), recordsByKey(d, "named-left", asString), left)
		d.Close()
	}
}

// TestGlobalTableIsBootstrappedBeforeProcessing: after a restart the
// global store is read back from its topic before the first record, so
// the uncommitted items processed again join the products at once.
func TestGlobalTableIsBootstrappedBeforeProcessing(t *testing.T) {
	d, err := testdriver.New(globalTopology(t), testdriver.Config{Partitions: globalPartitions, ManualCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i, p := range []string{"p0", "p1", "p2", "p3"} {
		if err := d.PipeBytes("products", []byte(p), []byte("name-"+p), time.UnixMilli(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	items := testdriver.CreateInputTopic(d, "items", serde.String, serde.JSON[lineItem]())
	for i := range 4 {
		if err := items.PipeInput(fmt.Sprint("i", i), lineItem{Product: fmt.Sprint("p", i), Qty: 1}, time.UnixMilli(10)); err != nil {
			t.Fatal(err)
		}
	}
	d.Crash() // nothing committed: the items are processed again
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	got, _ := testdriver.CreateOutputTopic(d, "named", serde.String, serde.String).ReadKeyValuesToMap()
	if fmt.Sprint(got) != "map[i0:1xname-p0 i1:1xname-p1 i2:1xname-p2 i3:1xname-p3]" {
		t.Fatalf("joined after a restart: %v", got)
	}
	if n := len(d.TopicRecords("test-products-changelog", 0)); n != 0 {
		t.Fatalf("the global store wrote %d changelog records; its topic is its changelog", n)
	}
}

// TestGlobalTableJoinsSurviveCrashes: with products updated at commit
// boundaries (an item processed again after a crash then sees the same
// products as the first time), the committed results do not depend on
// crashes.
func TestGlobalTableJoinsSurviveCrashes(t *testing.T) {
	steps := randomGlobalSteps(rand.New(rand.NewPCG(4, 4)), 200)
	checkCrashEquivalence(t, crashCase{
		build: globalTopology,
		cfg:   testdriver.Config{Partitions: globalPartitions},
		steps: len(steps),
		step: func(d *testdriver.Driver, i int) error {
			if steps[i].product {
				if err := d.Commit(); err != nil {
					return err
				}
			}
			return pipeGlobalStep(d, i, steps[i])
		},
		outputs: []string{"named", "named-left"},
	}, 8)
}

func TestGlobalStoreIsReadOnly(t *testing.T) {
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, string]{Topics: []string{"in"}, Keys: serde.String, Values: serde.String})
	exactly.AddProcessor(b, "writer", exactly.ProcessorFunc[string, string, string, string](
		func(ctx exactly.ProcessorContext[string, string], rec exactly.Record[string, string]) error {
			kv, err := exactly.GetKeyValueStore[string, string](ctx, "ref")
			if err != nil {
				return err
			}
			return kv.Put(rec.Key, rec.Value)
		}).Supplier(), "in")
	exactly.AddGlobalStore(b, exactly.Store[string, string]{Name: "ref", Keys: serde.String, Values: serde.String}, "ref-topic", "writer")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	d, err := testdriver.New(top, testdriver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	err = testdriver.CreateInputTopic(d, "in", serde.String, serde.String).PipeInput("k", "v", time.UnixMilli(1))
	if !errors.Is(err, exactly.ErrReadOnlyStore) {
		t.Fatalf("a write to a global store gave %v, want ErrReadOnlyStore", err)
	}
}

func TestGlobalTopicReadBySourceIsRefused(t *testing.T) {
	sb := dsl.NewStreamsBuilder(dsl.Options{})
	dsl.GlobalTable(sb, "products", serde.String, serde.String, "products", dsl.Materialized{})
	dsl.Stream(sb, "products", serde.String, serde.String).To("out")
	_, err := sb.Build()
	if err == nil || !strings.Contains(err.Error(), `global store "products" reads topic "products"`) {
		t.Fatalf("Build error %v, want the shared topic named", err)
	}
}
