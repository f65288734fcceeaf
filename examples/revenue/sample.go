package revenue

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"
)

// Record is one input record of a sample.
type Record struct {
	Topic, Key string
	Value      any
	Timestamp  time.Time
}

// Bytes is the record's value as JSON.
func (r Record) Bytes() []byte {
	b, _ := json.Marshal(r.Value)
	return b
}

// SampleStart is when the sample's orders begin.
var SampleStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Sample is a deterministic input for the application: products and
// customers, then orders over six hours of event time from SampleStart, a
// little out of order, some naming an unknown customer or product; then
// Ticks, one order per category and country two days later, which move
// every task's stream time past the close of the real windows.
type Sample struct {
	Products  map[string]Product
	Customers map[string]Customer
	Orders    []Record
	Ticks     []Record
}

// NewSample draws a sample of n orders from seed.
func NewSample(seed uint64, n int) Sample {
	rng := rand.New(rand.NewPCG(seed, 1))
	s := Sample{Products: map[string]Product{}, Customers: map[string]Customer{}}
	categories, countries := []string{"books", "games", "tea"}, []string{"DE", "FR", "JP"}
	for i := range 12 {
		s.Products[fmt.Sprint("p", i)] = Product{Category: categories[i%3], UnitCents: 100 + int64(rng.IntN(900))}
	}
	for i := range 20 {
		s.Customers[fmt.Sprint("c", i)] = Customer{Country: countries[rng.IntN(3)]}
	}
	for i := range n {
		ts := SampleStart.Add(time.Duration(i) * 6 * time.Hour / time.Duration(n)).Add(-time.Duration(rng.IntN(300)) * time.Second)
		o := Order{CustomerID: fmt.Sprint("c", rng.IntN(22)), ProductID: fmt.Sprint("p", rng.IntN(13)), Quantity: 1 + int64(rng.IntN(3))}
		s.Orders = append(s.Orders, Record{OrdersTopic, fmt.Sprint("o", i), o, ts})
	}
	for _, cat := range categories {
		for _, country := range countries {
			p := slices.IndexFunc(slices.Sorted(maps.Keys(s.Products)), func(id string) bool { return s.Products[id].Category == cat })
			c := slices.IndexFunc(slices.Sorted(maps.Keys(s.Customers)), func(id string) bool { return s.Customers[id].Country == country })
			if p < 0 || c < 0 {
				continue
			}
			s.Ticks = append(s.Ticks, Record{OrdersTopic, fmt.Sprint("tick-", cat, "-", country),
				Order{CustomerID: slices.Sorted(maps.Keys(s.Customers))[c], ProductID: slices.Sorted(maps.Keys(s.Products))[p], Quantity: 1},
				SampleStart.Add(48 * time.Hour)})
		}
	}
	return s
}

// Tables are the sample's products and customers, as records.
func (s Sample) Tables() []Record {
	var out []Record
	for _, id := range slices.Sorted(maps.Keys(s.Products)) {
		out = append(out, Record{ProductsTopic, id, s.Products[id], SampleStart})
	}
	for _, id := range slices.Sorted(maps.Keys(s.Customers)) {
		out = append(out, Record{CustomersTopic, id, s.Customers[id], SampleStart})
	}
	return out
}

// Joined counts the orders whose customer and product exist: those that
// reach the revenue windows.
func (s Sample) Joined() int {
	n := 0
	for _, r := range s.Orders {
		o := r.Value.(Order)
		_, okC := s.Customers[o.CustomerID]
		_, okP := s.Products[o.ProductID]
		if okC && okP {
			n++
		}
	}
	return n
}

// Oracle is the revenue per group and hourly window (keys as WindowKey
// renders them), by brute force: every order whose customer and product
// exist counts in the window of its time.
func (s Sample) Oracle() map[string]int64 {
	out := map[string]int64{}
	for _, r := range s.Orders {
		o := r.Value.(Order)
		c, okC := s.Customers[o.CustomerID]
		p, okP := s.Products[o.ProductID]
		if !okC || !okP {
			continue
		}
		out[WindowKey(p.Category+"/"+c.Country, r.Timestamp.Truncate(time.Hour), time.Hour)] += o.Quantity * p.UnitCents
	}
	return out
}
