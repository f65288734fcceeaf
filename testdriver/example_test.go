package testdriver_test

import (
	"fmt"
	"time"

	"github.com/exactly-go/exactly/examples/counting"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
)

// A crash loses everything since the last commit, as a killed instance on
// Kafka does: outputs, store writes and input offsets together. Restart
// rebuilds the stores from their changelogs and processes the uncommitted
// input again, so every input counts once.
func ExampleDriver_Crash() {
	// counting.Topology counts the records of each key in the store
	// "counts" and writes, for each input, its value and its key's count.
	topology, err := counting.Topology("input", "output", false)
	if err != nil {
		fmt.Println(err)
		return
	}
	driver, err := testdriver.New(topology, testdriver.Config{ManualCommit: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer driver.Close()
	input := testdriver.CreateInputTopic(driver, "input", serde.String, serde.String)
	output := testdriver.CreateOutputTopic(driver, "output", serde.String, serde.JSON[counting.Output]())
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	if err := input.PipeInput("k", "first", t0); err != nil {
		fmt.Println(err)
		return
	}
	if err := driver.Commit(); err != nil {
		fmt.Println(err)
		return
	}
	if err := input.PipeInput("k", "second", t0); err != nil {
		fmt.Println(err)
		return
	}
	driver.Crash() // "second" was processed, not committed: its effects are lost
	fmt.Println("committed before the restart:", output.QueueSize())

	if err := driver.Restart(); err != nil { // "second" is processed again
		fmt.Println(err)
		return
	}
	if err := driver.Commit(); err != nil {
		fmt.Println(err)
		return
	}
	records, err := output.ReadRecords()
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, rec := range records {
		fmt.Println(rec.Key, rec.Value.ID, rec.Value.Count)
	}
	counts, err := testdriver.KeyValueStore[string, int64](driver, counting.StoreName, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	n, _, err := counts.Get("k")
	fmt.Println("count of k:", n, err)
	// Output:
	// committed before the restart: 1
	// k first 1
	// k second 2
	// count of k: 2 <nil>
}
