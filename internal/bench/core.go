package bench

import (
	"fmt"
	"runtime"
	"syscall"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
)

// coreStats are the counts of one run of the task core over an input.
type coreStats struct {
	// Records is the number of input records processed.
	Records int
	// Outputs counts output and dead-letter records; Changelog counts
	// changelog records, in total and per store.
	Outputs, Changelog int
	ChangelogByStore   map[string]int
	// Commits is the number of commits of each task.
	Commits int
	// Elapsed is the time from the first record to the last commit, CPU
	// the CPU time the process used meanwhile (less sensitive than
	// Elapsed to other load on the machine); Allocs and Bytes are the heap
	// allocations over that time.
	Elapsed, CPU  time.Duration
	Allocs, Bytes uint64
}

// ChangelogPerInput is the number of changelog records produced per input
// record.
func (s coreStats) ChangelogPerInput() float64 {
	if s.Records == 0 {
		return 0
	}
	return float64(s.Changelog) / float64(s.Records)
}

// coreRun drives the task core of top's first sub-topology over records of
// topic without a broker, the way the Kafka runner does: one task per
// partition, in-memory stores, every task committed after each
// commitEvery records (and at the end). Checkpoints are the count of
// changelog records so far; nothing is produced anywhere. It measures the
// processing the runtime does per record, apart from the broker.
func coreRun(top *exactly.Topology, topic string, records []topo.Raw, partitions int32, commitEvery int) (coreStats, error) {
	t := topo.Of(top)
	stats := coreStats{ChangelogByStore: map[string]int{}}
	tasks := make([]*task.Task, partitions)
	for p := range partitions {
		tk, err := task.New(t, task.Config{ApplicationID: "core", ID: topo.TaskID{Partition: p}, StreamTime: task.UnknownTime})
		if err != nil {
			return stats, err
		}
		if err := tk.Initialize(); err != nil {
			return stats, err
		}
		tasks[p] = tk
	}
	offsets := map[string]int64{}
	commit := func() error {
		stats.Commits++
		for _, tk := range tasks {
			c := tk.PrepareCommit()
			stats.Outputs += len(c.Outputs)
			checkpoints := map[string]int64{}
			for _, sc := range c.Changelogs {
				stats.Changelog += len(sc.Changes)
				stats.ChangelogByStore[sc.Store] += len(sc.Changes)
				offsets[fmt.Sprint(tk.ID(), sc.Store)] += int64(len(sc.Changes))
				checkpoints[sc.Store] = offsets[fmt.Sprint(tk.ID(), sc.Store)]
			}
			if err := tk.CompleteCommit(checkpoints); err != nil {
				return err
			}
		}
		return nil
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start, startCPU := time.Now(), cpuTime()
	for i := range records {
		raw := &records[i]
		if raw.Topic != topic || raw.Partition < 0 || raw.Partition >= partitions {
			return stats, fmt.Errorf("record %d: %s/%d is not an input partition", i, raw.Topic, raw.Partition)
		}
		if err := tasks[raw.Partition].Process(raw); err != nil {
			return stats, err
		}
		stats.Records++
		if commitEvery > 0 && stats.Records%commitEvery == 0 {
			if err := commit(); err != nil {
				return stats, err
			}
		}
	}
	if err := commit(); err != nil {
		return stats, err
	}
	stats.Elapsed, stats.CPU = time.Since(start), cpuTime()-startCPU
	runtime.ReadMemStats(&after)
	stats.Allocs, stats.Bytes = after.Mallocs-before.Mallocs, after.TotalAlloc-before.TotalAlloc
	for _, tk := range tasks {
		if err := tk.Close(); err != nil {
			return stats, err
		}
	}
	return stats, nil
}

// cpuTime is the user and system CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ordersRaw is the generated order stream of ordersInput as the task core
// reads it.
func ordersRaw(n int) []topo.Raw {
	in := orders.Generate(orders.DefaultGenerateOptions(42, n, partitions))
	out := make([]topo.Raw, len(in))
	for i, r := range in {
		out[i] = topo.Raw{Topic: orders.DefaultInputTopic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp.UnixMilli()}
	}
	return out
}
