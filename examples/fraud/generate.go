package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"
)

// SampleRecord is one record of a generated card-transactions stream.
type SampleRecord struct {
	Key, Value []byte
	Timestamp  time.Time
}

// Generate returns n sample records over 40 cards, starting at start and
// about a second apart, reproducible from seed. Most transactions are
// ordinary; some cards burst (velocity alerts), some are used abroad
// (travel alerts), some records arrive late in event time, and about one
// in a hundred is broken JSON or an invalid transaction.
func Generate(seed uint64, n int, start time.Time) []SampleRecord {
	rng := rand.New(rand.NewPCG(seed, 0x6672617564))
	countries := []string{"DE", "FR", "NL", "US", "JP", "BR"}
	const cards = 40
	now := start.UnixMilli()
	out := make([]SampleRecord, 0, n)
	add := func(t Transaction) {
		v, _ := json.Marshal(t)
		out = append(out, SampleRecord{Key: []byte(t.CardID), Value: v, Timestamp: time.UnixMilli(t.Time)})
	}
	for i := 0; len(out) < n; i++ {
		now += rng.Int64N(2000)
		card := rng.IntN(cards)
		t := Transaction{
			TransactionID: fmt.Sprintf("tx-%d-%d", seed, i),
			CardID:        fmt.Sprintf("card-%02d", card),
			AmountCents:   100 + rng.Int64N(20_000),
			Merchant:      fmt.Sprintf("merchant-%d", rng.IntN(25)),
			Country:       countries[card%3], // each card has a home country
			Time:          now,
		}
		switch x := rng.Float64(); {
		case x < 0.005:
			out = append(out, SampleRecord{Key: []byte(t.CardID), Value: []byte(`{"transactionId":`), Timestamp: time.UnixMilli(now)})
			continue
		case x < 0.01:
			t.AmountCents = 0
		case x < 0.04:
			t.Country = countries[3+rng.IntN(3)] // abroad
		case x < 0.09:
			t.Time = now - rng.Int64N(30_000) // late
		case x < 0.11:
			// A burst: the card is used again and again within seconds.
			for j := range 5 + rng.IntN(3) {
				b := t
				b.TransactionID = fmt.Sprintf("%s-burst-%d", t.TransactionID, j)
				b.Time = now + int64(j)*rng.Int64N(5000)
				add(b)
			}
			continue
		}
		add(t)
	}
	return out[:n]
}
