package verify

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/kafka"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/testdriver"
)

// replayCommitEvery is how many records the replay feeds a task between
// commits of the driver; commits bound the driver's write buffers and do
// not change what a deterministic task produces.
const replayCommitEvery = 1000

// replaySubtopology replays one sub-topology task by task and keeps what
// it produced. A sub-topology that cannot be replayed faithfully is
// described in rs and produces nothing; only failures to read from the
// cluster are returned.
func (r *replayRun) replaySubtopology(ctx context.Context, sub *topo.Subtopology, rs *SubtopologyReplay) error {
	if len(sub.SourceTopics) > 1 {
		r.notReplayable(sub, rs, "it reads %s together; the runtime interleaves co-partitioned topics in the order their records arrive, which Kafka does not keep",
			strings.Join(sub.SourceTopics, " and "))
		return nil
	}
	input := sub.SourceTopics[0]
	committed, lost := r.committedOffsets(input)
	if lost != "" {
		r.notReplayable(sub, rs, "%s; the replay needs all the committed input", lost)
		return nil
	}
	d, err := testdriver.New(r.topology, testdriver.Config{
		ApplicationID: r.cfg.applicationID,
		Partitions:    maps.Clone(r.partitions),
		ManualCommit:  true,
		Subtopologies: []int{sub.ID},
	})
	if err != nil {
		r.replayFailed(sub, rs, "start the replay: %v", err)
		return nil
	}
	defer d.Close()
	if r.usesWallClock(d, sub, rs) {
		return nil
	}
	ranges := map[int32]offsetRange{}
	for p, e := range r.ends[input] {
		ranges[p] = offsetRange{from: e.start, to: e.stable}
	}
	recs, err := readRanges(ctx, r.clientOpts, input, ranges, true)
	if err != nil {
		return err
	}
	byPartition := map[int32][]exactly.SourceRecord{}
	for _, k := range recs {
		if k.Offset >= committed[k.Partition] {
			rs.Unconsumed++
			continue
		}
		byPartition[k.Partition] = append(byPartition[k.Partition], sourceRecord(k))
	}
	if err := r.feed(ctx, d, sub, byPartition, rs); err != nil || rs.Err != "" || r.usesWallClock(d, sub, rs) {
		return err
	}
	r.keepChangelogs(d, sub)
	return nil
}

func (r *replayRun) notReplayable(sub *topo.Subtopology, rs *SubtopologyReplay, format string, args ...any) {
	rs.NotReplayable = fmt.Sprintf(format, args...)
	r.outcome[sub.ID] = fmt.Sprintf("sub-topology %d is not replayable", sub.ID)
}

func (r *replayRun) replayFailed(sub *topo.Subtopology, rs *SubtopologyReplay, format string, args ...any) {
	rs.Err = fmt.Sprintf(format, args...)
	r.outcome[sub.ID] = fmt.Sprintf("the replay of sub-topology %d failed", sub.ID)
}

// usesWallClock reports (and records) whether a processor of the
// sub-topology has scheduled a wall-clock punctuator.
func (r *replayRun) usesWallClock(d *testdriver.Driver, sub *topo.Subtopology, rs *SubtopologyReplay) bool {
	nodes := d.WallClockPunctuators()
	if len(nodes) > 0 {
		r.notReplayable(sub, rs, "processor %s schedules wall-clock punctuators, whose effects depend on when the clock ticked during the run", strings.Join(nodes, ", "))
	}
	return len(nodes) > 0
}

// committedOffsets returns, per partition of input, the group's committed
// offset (the log start where it has none), or why the committed input is
// not whole.
func (r *replayRun) committedOffsets(input string) (map[int32]int64, string) {
	committed := map[int32]int64{}
	for p := int32(0); p < r.partitions[input]; p++ {
		e := r.ends[input][p]
		at, consumed := e.start, false
		if o, ok := r.group.Lookup(input, p); ok && o.Err == nil && o.At >= 0 {
			at, consumed = min(o.At, e.stable), o.At > 0
		}
		if e.start > 0 && consumed {
			return nil, fmt.Sprintf("records of %s/%d before offset %d were deleted (retention or DeleteRecords)", input, p, e.start)
		}
		committed[p] = at
	}
	return committed, ""
}

// feed replays each partition's committed records through a fresh task,
// in offset order, and keeps what each task produced.
func (r *replayRun) feed(ctx context.Context, d *testdriver.Driver, sub *topo.Subtopology, byPartition map[int32][]exactly.SourceRecord, rs *SubtopologyReplay) error {
	seen := map[string]int{}
	for p := range max(r.partitions[sub.SourceTopics[0]], 1) {
		task := exactly.TaskID{Subtopology: sub.ID, Partition: p}
		for i, rec := range byPartition[p] {
			if err := d.PipeRaw(rec); err != nil {
				r.replayFailed(sub, rs, "task %s failed on the committed record %s/%d@%d: %v", task, rec.Topic, rec.Partition, rec.Offset, err)
				return nil
			}
			rs.Records++
			if (i+1)%replayCommitEvery == 0 {
				if err := d.Commit(); err != nil {
					r.replayFailed(sub, rs, "task %s: commit: %v", task, err)
					return nil
				}
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("replay sub-topology %d: %w", sub.ID, err)
			}
		}
		if err := d.Commit(); err != nil {
			r.replayFailed(sub, rs, "task %s: commit: %v", task, err)
			return nil
		}
		rs.Tasks++
		for _, t := range sub.SinkTopics {
			for _, out := range d.TopicRecords(t, seen[t]) {
				seen[t]++
				r.replayed[t] = append(r.replayed[t], &Record{
					Topic: out.Topic, Partition: out.Partition, Offset: out.Offset, Key: out.Key, Value: out.Value,
					Headers: out.Headers, Timestamp: out.Timestamp, ProducerID: -1, Task: task,
				})
			}
		}
		r.checkStreamTime(d, sub.SourceTopics[0], task)
	}
	return nil
}

// keepChangelogs keeps the final table of each logged store of the
// replayed sub-topology.
func (r *replayRun) keepChangelogs(d *testdriver.Driver, sub *topo.Subtopology) {
	for _, name := range sub.Stores {
		if spec, _ := r.top.Store(name); !spec.Logged {
			continue
		}
		topic := topo.ChangelogTopic(r.cfg.applicationID, name)
		table := map[int32]map[string]*Record{}
		for _, c := range d.TopicRecords(topic, 0) {
			applyChange(table, &Record{Topic: topic, Partition: c.Partition, Offset: c.Offset, Key: c.Key, Value: c.Value, ProducerID: -1,
				Task: exactly.TaskID{Subtopology: sub.ID, Partition: c.Partition}})
		}
		r.tables[topic] = table
	}
}

// applyChange applies a changelog record to a table: the last value per
// key, a null value (tombstone) deleting it.
func applyChange(table map[int32]map[string]*Record, rec *Record) {
	part := table[rec.Partition]
	if part == nil {
		part = map[string]*Record{}
		table[rec.Partition] = part
	}
	if rec.Value == nil {
		delete(part, string(rec.Key))
		return
	}
	part[string(rec.Key)] = rec
}

// checkStreamTime compares the stream time the run committed with the
// input offset of a task (which a restarted task resumes from) with the
// stream time the replay reached.
func (r *replayRun) checkStreamTime(d *testdriver.Driver, input string, task exactly.TaskID) {
	o, ok := r.group.Lookup(input, task.Partition)
	if !ok || o.Err != nil || o.Metadata == "" {
		return
	}
	committed, ok := kafka.StreamTimeFromMetadata(o.Metadata)
	if !ok {
		return
	}
	r.streamTasks++
	replayed, ok := d.StreamTime(task.Subtopology, task.Partition)
	switch {
	case !ok:
		r.streamTimes = append(r.streamTimes, fmt.Sprintf("%s/%d: committed %d ms, the replay saw no record", input, task.Partition, committed))
	case replayed.UnixMilli() != committed:
		r.streamTimes = append(r.streamTimes, fmt.Sprintf("%s/%d: committed %d ms, the replay's %d ms", input, task.Partition, committed, replayed.UnixMilli()))
	}
}

// skipReason says why topic cannot be compared: a sub-topology writing it
// was not replayed in full.
func (r *replayRun) skipReason(writers []int) string {
	for _, id := range writers {
		if why := r.outcome[id]; why != "" {
			return why
		}
	}
	return ""
}

// compareOutputs compares every topic the topology writes with the replay.
func (r *replayRun) compareOutputs(ctx context.Context) error {
	for _, topic := range slices.Sorted(maps.Keys(r.writers)) {
		tc := TopicComparison{Topic: topic, Role: r.role(topic), Compacted: r.compacted[topic]}
		if why := r.skipReason(r.writers[topic]); why != "" {
			tc.Skipped = why
			r.rep.Topics = append(r.rep.Topics, tc)
			continue
		}
		var got []*Record
		if pe := r.ends[topic]; pe != nil {
			recs, err := readTopic(ctx, r.clientOpts, topic, pe, true)
			if err != nil {
				return err
			}
			all, err := readTopic(ctx, r.clientOpts, topic, pe, false)
			if err != nil {
				return err
			}
			r.rep.AbortedHidden += len(all) - len(recs)
			for _, k := range recs {
				got = append(got, committedRecord(k))
			}
			for _, p := range slices.Sorted(maps.Keys(pe)) {
				if e := pe[p]; e.start > 0 {
					r.note("%s/%d starts at offset %d: the records before it were deleted, and what the replay produces there shows as missing", topic, p, e.start)
				}
			}
		}
		want := r.replayed[topic]
		tc.Committed, tc.Replayed = len(got), len(want)
		r.compareRecords(&tc, want, got)
		r.rep.Topics = append(r.rep.Topics, tc)
	}
	return nil
}

// compareRecords groups want and got per partition and key and records the
// differences.
func (r *replayRun) compareRecords(tc *TopicComparison, want, got []*Record) {
	type group struct {
		want, got []side
		tasks     map[exactly.TaskID]bool
	}
	groups := map[groupKey]*group{}
	at := func(k groupKey) *group {
		g := groups[k]
		if g == nil {
			g = &group{tasks: map[exactly.TaskID]bool{}}
			groups[k] = g
		}
		return g
	}
	for _, w := range want {
		g := at(groupOf(w))
		g.want = append(g.want, side{rec: w, id: identity(w, r.cfg.ignoreHeaders)})
		g.tasks[w.Task] = true
	}
	for _, c := range got {
		g := at(groupOf(c))
		g.got = append(g.got, side{rec: c, id: identity(c, r.cfg.ignoreHeaders)})
	}
	var found tally
	for _, k := range slices.SortedFunc(maps.Keys(groups), compareGroupKeys) {
		g := groups[k]
		var findings []finding
		ordered := !k.null && len(g.tasks) <= 1
		if ordered {
			findings = diffOrdered(g.want, g.got)
		} else {
			findings = diffMultiset(g.want, g.got)
		}
		for _, f := range findings {
			if f.kind == Missing && tc.Compacted && (!ordered || f.replayed != g.want[len(g.want)-1].rec || f.replayed.Value == nil) {
				tc.CompactedAway++
				continue
			}
			found.add(Difference{Kind: f.kind, Topic: tc.Topic, Partition: k.partition, Key: keyOf(k), Committed: f.committed, Replayed: f.replayed})
		}
	}
	detail := fmt.Sprintf("%d committed, %d replayed, %d keys", tc.Committed, tc.Replayed, len(groups))
	if tc.Compacted {
		detail += fmt.Sprintf(", compacted (%d records taken as compacted away)", tc.CompactedAway)
	}
	tc.Differences = len(found.differences)
	r.record(fmt.Sprintf("%s %s: committed records equal the replay's", tc.Role, tc.Topic), detail, found)
}

// tally collects the differences of one topic.
type tally struct {
	differences []Difference
	kinds       [OutOfOrder + 1]int
}

func (t *tally) add(d Difference) {
	t.differences = append(t.differences, d)
	t.kinds[d.Kind]++
}

// record adds a topic's check, whose detail counts the differences by
// kind and names the first few, and its differences to the report.
func (r *replayRun) record(name, detail string, t tally) {
	c := Check{Name: name, OK: len(t.differences) == 0, Detail: detail}
	if !c.OK {
		var counts, first []string
		for kind, n := range t.kinds {
			if n > 0 {
				counts = append(counts, fmt.Sprintf("%d %s", n, DifferenceKind(kind)))
			}
		}
		for _, d := range t.differences[:min(3, len(t.differences))] {
			first = append(first, d.String())
		}
		c.Detail += "; " + strings.Join(counts, ", ") + "; e.g. " + strings.Join(first, "; ")
	}
	r.rep.Checks = append(r.rep.Checks, c)
	r.rep.Differences = append(r.rep.Differences, t.differences...)
}

func keyOf(k groupKey) []byte {
	if k.null {
		return nil
	}
	return []byte(k.key)
}

// compareChangelogs compares the final value per key of every changelog
// of the replayed sub-topologies.
func (r *replayRun) compareChangelogs(ctx context.Context) error {
	for _, topic := range slices.Sorted(maps.Keys(r.changelogs)) {
		tc := TopicComparison{Topic: topic, Role: "changelog", Compacted: true}
		if why := r.outcome[r.changelogs[topic]]; why != "" {
			tc.Skipped = why
			r.rep.Topics = append(r.rep.Topics, tc)
			continue
		}
		committed := map[int32]map[string]*Record{}
		if pe := r.ends[topic]; pe != nil {
			recs, err := readTopic(ctx, r.clientOpts, topic, pe, true)
			if err != nil {
				return err
			}
			for _, k := range recs {
				applyChange(committed, committedRecord(k))
			}
		}
		replayed := r.tables[topic]
		var found tally
		parts := map[int32]bool{}
		for p := range committed {
			parts[p] = true
		}
		for p := range replayed {
			parts[p] = true
		}
		for _, p := range slices.Sorted(maps.Keys(parts)) {
			tc.Committed += len(committed[p])
			tc.Replayed += len(replayed[p])
			for _, f := range diffTable(replayed[p], committed[p]) {
				rec := f.replayed
				if rec == nil {
					rec = f.committed
				}
				found.add(Difference{Kind: f.kind, Topic: topic, Partition: p, Key: rec.Key, Committed: f.committed, Replayed: f.replayed})
			}
		}
		tc.Differences = len(found.differences)
		r.record(fmt.Sprintf("changelog %s: final value per key equals the replay's", topic),
			fmt.Sprintf("%d keys committed, %d replayed", tc.Committed, tc.Replayed), found)
		r.rep.Topics = append(r.rep.Topics, tc)
	}
	return nil
}
