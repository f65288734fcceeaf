package feed

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestPacedSpreadsTheStreamAndWaitsWhileTheGateIsHeld: every record is
// acknowledged, the stream takes its duration, and a hold puts it off by
// as long.
func TestPacedSpreadsTheStreamAndWaitsWhileTheGateIsHeld(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	records := make([]*kgo.Record, 200)
	for i := range records {
		records[i] = &kgo.Record{Topic: "in", Key: []byte(strconv.Itoa(i % 7)), Value: []byte(strconv.Itoa(i))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var gate Gate
	gate.Hold()
	go func() {
		time.Sleep(400 * time.Millisecond)
		gate.Release()
	}()
	start := time.Now()
	retried, err := Paced(ctx, cl, records, 400*time.Millisecond, 10, &gate)
	took := time.Since(start)
	if err != nil || retried != 0 {
		t.Fatalf("Paced: %d retried, %v; want 0 and no error", retried, err)
	}
	if took < 800*time.Millisecond {
		t.Fatalf("stream of 400ms held for 400ms took %s; want at least 800ms", took)
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "in")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	if n != int64(len(records)) {
		t.Fatalf("%d records in the topic; want %d", n, len(records))
	}
}
