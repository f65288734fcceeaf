package revenue_test

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/exactly-go/exactly/examples/revenue"
	"github.com/exactly-go/exactly/testdriver"
)

// testOptions give a grace longer than the sample's six hours of event
// time: partitions progress unevenly (a task restarted after a crash),
// which must not make an order late; the ticks two days later close the
// windows.
var testOptions = revenue.Options{Grace: 24 * time.Hour}

func decodeRevenue(t *testing.T, key, value []byte, got map[string]int64) {
	t.Helper()
	if len(value) != 8 {
		t.Fatalf("revenue %q of %q is not 8 bytes", value, key)
	}
	if _, dup := got[string(key)]; dup {
		t.Fatalf("window %s emitted twice", key)
	}
	got[string(key)] = int64(binary.BigEndian.Uint64(value))
}

func TestRevenueMatchesTheOracleDespiteCrashes(t *testing.T) {
	for seed := range uint64(3) {
		sample := revenue.NewSample(seed, 300)
		top, err := revenue.Topology(testOptions)
		if err != nil {
			t.Fatal(err)
		}
		d, err := testdriver.New(top, testdriver.Config{ApplicationID: "revenue", PersistentInMemory: true,
			Partitions: map[string]int32{revenue.ProductsTopic: 3, revenue.CustomersTopic: 2, revenue.OrdersTopic: 3}})
		if err != nil {
			t.Fatal(err)
		}
		// The ticks come once every order has gone all the way through (a
		// run with crashes ends with a drain): partitions progress
		// unevenly, and a tick that overtook an order would make it late.
		var run testdriver.CrashRun
		for phase, steps := range [][]revenue.Record{append(sample.Tables(), sample.Orders...), sample.Ticks} {
			r, err := d.RunWithCrashes(testdriver.CrashSchedule{Seed: seed + 10*uint64(phase)}, len(steps), func(i int) error {
				r := steps[i]
				return d.PipeBytes(r.Topic, []byte(r.Key), r.Bytes(), r.Timestamp)
			})
			if err != nil {
				t.Fatal(err)
			}
			run.Steps, run.Crashes, run.MidCommitCrashes = run.Steps+r.Steps, run.Crashes+r.Crashes, run.MidCommitCrashes+r.MidCommitCrashes
		}
		if run.Crashes+run.MidCommitCrashes == 0 {
			t.Fatalf("seed %d: no crash in %v", seed, run)
		}
		got := map[string]int64{}
		for _, r := range d.TopicRecords(revenue.RevenueTopic, 0) {
			decodeRevenue(t, r.Key, r.Value, got)
		}
		if want := sample.Oracle(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("seed %d (%v): hourly revenue\n got %v\nwant %v", seed, run, got, want)
		}
		d.Close()
	}
}
