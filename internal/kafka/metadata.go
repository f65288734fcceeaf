package kafka

import "github.com/exactly-go/exactly/internal/task"

// StreamTimeFromMetadata returns the stream time (epoch ms) a commit wrote
// into the metadata of a committed input offset, which a restarted task
// resumes from; false when the metadata holds none (the task had seen no
// record, or another client committed the offset).
func StreamTimeFromMetadata(meta string) (int64, bool) {
	st := decodeStreamTime(meta)
	return st, st != task.UnknownTime
}
