package chaos

import (
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/examples/orders"
)

// OrdersInput is the input of a run of the orders application: the events
// of n orders (about 11 each) for topic, as orders.Generate makes them
// with orders.DefaultGenerateOptions: duplicates, events out of order,
// orders whose creation never comes, malformed records. Equal arguments
// give equal records.
func OrdersInput(topic string, seed uint64, n int, partitions int32) []*kgo.Record {
	gen := orders.Generate(orders.DefaultGenerateOptions(seed, n, partitions))
	out := make([]*kgo.Record, len(gen))
	for i, r := range gen {
		out[i] = &kgo.Record{Topic: topic, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
	}
	return out
}

// KeyedInput is n string records for topic: record i has the key
// "k<i mod keys>" and the value "r<i>", the input examples/counting
// counts.
func KeyedInput(topic string, n, keys int) []*kgo.Record {
	keys = max(keys, 1)
	start := time.UnixMilli(1732260000000)
	out := make([]*kgo.Record, n)
	for i := range out {
		out[i] = &kgo.Record{
			Topic:     topic,
			Key:       []byte("k" + strconv.Itoa(i%keys)),
			Value:     []byte("r" + strconv.Itoa(i)),
			Timestamp: start.Add(time.Duration(i) * time.Millisecond),
		}
	}
	return out
}
