package testdriver

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
)

// PipeRaw appends rec to partition rec.Partition of rec.Topic at offset
// rec.Offset, exactly as it was read from Kafka, and processes it (while
// the application is crashed it returns ErrCrashed). Offsets within a
// partition must increase;
// gaps are allowed (Kafka leaves them where transaction markers and aborted
// records sit), and the task sees rec.Offset as the record's offset, in
// dead letters as well. Use it to replay records read from a cluster.
func (d *Driver) PipeRaw(rec exactly.SourceRecord) error {
	if err := d.checkRunning(); err != nil {
		return err
	}
	if n := d.partitionCount(rec.Topic); rec.Partition < 0 || rec.Partition >= n {
		return fmt.Errorf("testdriver: %s has %d partitions, no partition %d: set Config.Partitions", rec.Topic, n, rec.Partition)
	}
	log := d.topic(rec.Topic).partitions[rec.Partition]
	if len(log) > 0 && rec.Offset <= log[len(log)-1].raw.Offset || rec.Offset < 0 {
		last := int64(-1)
		if len(log) > 0 {
			last = log[len(log)-1].raw.Offset
		}
		return fmt.Errorf("testdriver: offset %d of %s/%d does not follow the partition's last offset %d", rec.Offset, rec.Topic, rec.Partition, last)
	}
	d.appendAt(rec.Topic, rec.Partition, topo.Raw{
		Offset: rec.Offset, Key: rec.Key, Value: rec.Value, Headers: rec.Headers, Timestamp: rec.Timestamp.UnixMilli(),
	})
	return d.pump()
}

// appendAt appends raw to a partition at raw.Offset, which the caller has
// checked follows the partition's last offset.
func (d *Driver) appendAt(topic string, partition int32, raw topo.Raw) {
	tl := d.topic(topic)
	raw.Topic, raw.Partition = topic, partition
	d.seq++
	e := &entry{raw: raw, seq: d.seq}
	tl.partitions[partition] = append(tl.partitions[partition], e)
	tl.all = append(tl.all, e)
}

// indexOf returns the index in tp's log of the first record at or after
// offset, which is offset itself unless PipeRaw left gaps.
func (d *Driver) indexOf(tp task.TopicPartition, offset int64) int64 {
	log := d.topic(tp.Topic).partitions[tp.Partition]
	return int64(sort.Search(len(log), func(i int) bool { return log[i].raw.Offset >= offset }))
}

// TopicRecords returns the records of topic from the from-th on, in the
// order they were appended: records piped into it, and the output,
// repartition and changelog records commits made visible. Each carries its
// partition and offset. from counts records already read (0 for all), so a
// caller can tell which records a step appended.
func (d *Driver) TopicRecords(topic string, from int) []exactly.SourceRecord {
	tl, ok := d.topics[topic]
	if !ok || from >= len(tl.all) {
		return nil
	}
	from = max(from, 0)
	out := make([]exactly.SourceRecord, 0, len(tl.all)-from)
	for _, e := range tl.all[from:] {
		r := &e.raw
		out = append(out, exactly.SourceRecord{
			Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
			Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: time.UnixMilli(r.Timestamp),
		})
	}
	return out
}

// WallClockPunctuators returns the processors that have scheduled a
// wall-clock punctuator in a running task, sorted. What such a punctuator
// does depends on when the wall clock ticked, so the topology's output is
// not a function of its input alone: a replay cannot reproduce it.
func (d *Driver) WallClockPunctuators() []string {
	var out []string
	for _, lt := range d.tasks {
		for _, node := range lt.task.WallClockPunctuators() {
			if !slices.Contains(out, node) {
				out = append(out, node)
			}
		}
	}
	slices.Sort(out)
	return out
}

// StreamTime returns the stream time of the task for partition of
// sub-topology subtopology, including uncommitted records; false when the
// task has seen no record or does not run.
func (d *Driver) StreamTime(subtopology int, partition int32) (time.Time, bool) {
	lt, ok := d.tasks[topo.TaskID{Subtopology: subtopology, Partition: partition}]
	if !ok || lt.task.StreamTime() == task.UnknownTime {
		return time.Time{}, false
	}
	return time.UnixMilli(lt.task.StreamTime()), true
}
