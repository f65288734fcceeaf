package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/exactly-go/exactly"
)

// restoreLogInterval is how often an instance logs the progress of the
// restores under way.
const restoreLogInterval = 2 * time.Second

// restoreLogger logs the restores of an instance's stores: a line per
// store partition under way at each tick, with offsets restored of the
// total, percent and rate, and one line when each is done.
type restoreLogger struct {
	log  *slog.Logger
	seen map[restoreID]restoreSeen
}

// restoreID names one restore: a store partition restored again later is
// another.
type restoreID struct {
	store     string
	partition int32
	started   time.Time
}

type restoreSeen struct {
	records int64
	at      time.Time
	done    bool
}

// run logs restores every interval until ctx ends.
func (l *restoreLogger) run(ctx context.Context, restores func() []exactly.RestoreProgress, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			l.report(restores(), now)
		}
	}
}

// report logs what changed since the last report.
func (l *restoreLogger) report(restores []exactly.RestoreProgress, now time.Time) {
	if l.seen == nil {
		l.seen = map[restoreID]restoreSeen{}
	}
	current := map[restoreID]bool{}
	for _, p := range restores {
		id := restoreID{p.Store, p.Partition, p.Started}
		current[id] = true
		last, ok := l.seen[id]
		if last.done {
			continue
		}
		if !ok {
			last = restoreSeen{at: p.Started}
		}
		restored, total := p.Position-p.StartOffset, p.EndOffset-p.StartOffset
		if p.Done() {
			took := p.Finished.Sub(p.Started)
			l.log.Info("restored store partition", "store", p.Store, "partition", p.Partition, "task", p.Task,
				"offsets", total, "records", p.Records, "took", took.Round(time.Millisecond), "records_per_second", perSecond(p.Records, took))
			l.seen[id] = restoreSeen{done: true}
			continue
		}
		l.log.Info("restoring store partition", "store", p.Store, "partition", p.Partition, "task", p.Task,
			"restored", fmt.Sprintf("%d/%d", restored, total), "percent", fmt.Sprintf("%.1f", 100*p.Fraction()),
			"records_per_second", perSecond(p.Records-last.records, now.Sub(last.at)))
		l.seen[id] = restoreSeen{records: p.Records, at: now}
	}
	for id := range l.seen {
		if !current[id] {
			delete(l.seen, id) // its task left this instance
		}
	}
}

func perSecond(n int64, d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(float64(n) / d.Seconds())
}
