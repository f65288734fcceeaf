package kafka

import (
	"cmp"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/exactly-go/exactly/internal/topo"
)

// RestoreProgress is where the restore of one store partition stands: the
// latest restore of each store partition of the tasks this instance holds,
// under way or finished.
type RestoreProgress struct {
	Store     string
	Partition int32
	Task      topo.TaskID
	// Global marks the bootstrap of a global store, which no task holds
	// (Task is then the zero value).
	Global bool
	// StartOffset is the store's checkpoint when the restore began,
	// EndOffset the changelog offset it restores up to, and Position the
	// offset after the last changelog record it has read; Position reaches
	// EndOffset when the restore is done. Offsets, not records: aborted
	// transactions, their markers and compaction leave gaps.
	StartOffset, EndOffset, Position int64
	// Records counts the changelog records read so far.
	Records int64
	// Started is when the restore began; Finished when it reached
	// EndOffset, zero while it is under way.
	Started, Finished time.Time
}

// restoreKey names a store partition.
type restoreKey struct {
	store     string
	partition int32
}

// restoreBoard holds the progress of the restores of the tasks this
// instance holds, for Runner.Restores. Workers write it once per fetch.
type restoreBoard struct {
	mu       sync.Mutex
	restores map[restoreKey]*RestoreProgress
}

// begin records the start of the restore of one store partition of task id.
func (b *restoreBoard) begin(id topo.TaskID, pos *changelogPosition, now time.Time) {
	b.add(&RestoreProgress{Task: id}, pos, now)
}

// beginGlobal records the start of the bootstrap of one partition of a
// global store.
func (b *restoreBoard) beginGlobal(pos *changelogPosition, now time.Time) {
	b.add(&RestoreProgress{Global: true}, pos, now)
}

func (b *restoreBoard) add(p *RestoreProgress, pos *changelogPosition, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.restores == nil {
		b.restores = map[restoreKey]*RestoreProgress{}
	}
	p.Store, p.Partition = pos.store, pos.partition
	p.StartOffset, p.EndOffset, p.Position, p.Started = pos.applied, pos.end, pos.read, now
	b.restores[restoreKey{pos.store, pos.partition}] = p
}

// advance records how far pos has read; at its end the restore is
// finished.
func (b *restoreBoard) advance(pos *changelogPosition, records int64, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.restores[restoreKey{pos.store, pos.partition}]
	if p == nil {
		return
	}
	p.Position, p.Records = min(pos.read, pos.end), records
	if pos.read >= pos.end && p.Finished.IsZero() {
		p.Position, p.Finished = pos.end, now
	}
}

// finish marks pos's restore as done.
func (b *restoreBoard) finish(pos *changelogPosition, records int64, now time.Time) {
	pos.read = max(pos.read, pos.end)
	b.advance(pos, records, now)
}

// progress records how far pos has read, and whether it is done: the
// progress callback of readToEnd.
func (b *restoreBoard) progress(pos *changelogPosition, done bool) {
	if done {
		b.finish(pos, pos.records, time.Now())
	} else {
		b.advance(pos, pos.records, time.Now())
	}
}

// forget drops the restores of task id: it closed, or its restore failed.
func (b *restoreBoard) forget(id topo.TaskID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	maps.DeleteFunc(b.restores, func(_ restoreKey, p *RestoreProgress) bool { return !p.Global && p.Task == id })
}

// list returns copies of the restores, by store and partition.
func (b *restoreBoard) list() []RestoreProgress {
	b.mu.Lock()
	out := make([]RestoreProgress, 0, len(b.restores))
	for _, p := range b.restores {
		out = append(out, *p)
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(a, b RestoreProgress) int {
		return cmp.Or(cmp.Compare(a.Store, b.Store), cmp.Compare(a.Partition, b.Partition))
	})
	return out
}

// Restores returns the latest restore of each store partition of the tasks
// this instance's workers hold, and the bootstrap of each partition of its
// global stores, under way or finished, by store and partition. A store
// partition with nothing to restore has none.
func (r *Runner) Restores() []RestoreProgress { return r.restores.list() }
