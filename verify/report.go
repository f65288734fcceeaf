package verify

import (
	"fmt"
	"strings"
	"time"

	"github.com/exactly-go/exactly"
)

// Record is a record the verifier compares: a committed one as read from
// its topic, or one the replay produced.
type Record struct {
	Topic     string
	Partition int32
	// Offset is the committed record's offset; for a replayed record, its
	// position in the replay's output partition.
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []exactly.Header
	Timestamp time.Time
	// ProducerID is the id of the producer that wrote a committed record
	// (-1 for a replayed record): an id no expected record carries points
	// at a writer outside the application.
	ProducerID int64
	// Task is the task that produced a replayed record (sub-topology and
	// partition -1 for a committed record).
	Task exactly.TaskID
}

// Difference is one committed record, or one replayed record, that breaks
// "the committed output equals the replay".
type Difference struct {
	Kind  DifferenceKind
	Topic string
	// Partition is the partition compared; -1 for records without a key,
	// which the producer spreads over partitions as it likes and which are
	// compared across the topic.
	Partition int32
	Key       []byte
	// Committed is the committed record (nil when Missing).
	Committed *Record
	// Replayed is the record the replay produces (nil when Unexpected; for
	// a Duplicate, the replayed record it repeats).
	Replayed *Record
}

// String names the record and says what is wrong with it.
func (d Difference) String() string {
	var b strings.Builder
	where := fmt.Sprintf("%s/%d", d.Topic, d.Partition)
	if d.Partition < 0 {
		where = d.Topic
	}
	fmt.Fprintf(&b, "%s %s key %s: ", d.Kind, where, quoteBytes(d.Key))
	switch d.Kind {
	case Duplicate:
		fmt.Fprintf(&b, "committed again at offset %d%s: %s", d.Committed.Offset, producer(d.Committed), quoteBytes(d.Committed.Value))
	case Missing:
		fmt.Fprintf(&b, "the replay (task %s) produces %s, the committed output lacks it", d.Replayed.Task, quoteBytes(d.Replayed.Value))
	case Different:
		fmt.Fprintf(&b, "committed at offset %d%s: %s, the replay (task %s) produces %s%s", d.Committed.Offset, producer(d.Committed),
			quoteBytes(d.Committed.Value), d.Replayed.Task, quoteBytes(d.Replayed.Value), otherThanValue(d.Committed, d.Replayed))
	case Unexpected:
		fmt.Fprintf(&b, "committed at offset %d%s: %s, which the replay does not produce (a foreign write or aborted data made visible)",
			d.Committed.Offset, producer(d.Committed), quoteBytes(d.Committed.Value))
	case OutOfOrder:
		fmt.Fprintf(&b, "committed at offset %d%s: %s, elsewhere among the key's records than the replay (task %s) puts it",
			d.Committed.Offset, producer(d.Committed), quoteBytes(d.Committed.Value), d.Replayed.Task)
	}
	return b.String()
}

func producer(r *Record) string {
	if r.ProducerID < 0 {
		return ""
	}
	return fmt.Sprintf(" by producer %d", r.ProducerID)
}

// otherThanValue says what differs between records of equal value.
func otherThanValue(c, r *Record) string {
	switch {
	case string(c.Value) != string(r.Value):
		return ""
	case !c.Timestamp.Equal(r.Timestamp):
		return fmt.Sprintf(" (timestamp %d ms, the replay's %d ms)", c.Timestamp.UnixMilli(), r.Timestamp.UnixMilli())
	default:
		return " (their headers differ)"
	}
}

func quoteBytes(b []byte) string {
	if b == nil {
		return "null"
	}
	const limit = 160
	if len(b) > limit {
		return fmt.Sprintf("%q…(%d bytes)", b[:limit], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// OpenTransaction is a partition whose last stable offset stays below its
// high watermark: a transaction that began writing there has not ended, and
// read_committed readers of the partition are stuck behind it.
type OpenTransaction struct {
	Topic         string
	Partition     int32
	LastStable    int64
	HighWatermark int64
}

// SubtopologyReplay is how one sub-topology was replayed.
type SubtopologyReplay struct {
	ID           int
	SourceTopics []string
	// Tasks is the number of tasks (input partitions) replayed.
	Tasks int
	// Records counts the committed input records replayed: those below
	// the group's committed offsets.
	Records int
	// Unconsumed counts committed input records at or past the group's
	// committed offsets, which the application had not processed.
	Unconsumed int
	// NotReplayable says why the sub-topology could not be replayed
	// faithfully ("" when it was); its outputs are then not compared.
	NotReplayable string
	// Skipped says why the sub-topology was left out (InputTopics).
	Skipped string
	// Err is a record the replay failed on, or another failure of the
	// replay itself.
	Err string
}

// TopicComparison is the comparison of one committed topic with the
// replay.
type TopicComparison struct {
	Topic string
	// Role is "output", "repartition", "dead letters" or "changelog".
	Role string
	// Compacted topics are compared allowing records compaction removes:
	// only each key's last record must be there.
	Compacted bool
	// Committed and Replayed count the records compared (for a changelog,
	// the keys of the final table).
	Committed, Replayed int
	// Differences counts the differences found.
	Differences int
	// CompactedAway counts replayed records absent from a compacted topic
	// and taken as removed by compaction.
	CompactedAway int
	// Skipped says why the topic was not compared ("" when it was).
	Skipped string
}

// ReplayReport is the outcome of Replay.
type ReplayReport struct {
	ApplicationID string
	Subtopologies []SubtopologyReplay
	Topics        []TopicComparison
	// Differences lists every difference: output topics first, then
	// changelogs, each by partition and key.
	Differences      []Difference
	OpenTransactions []OpenTransaction
	// AbortedHidden counts records of aborted transactions in the compared
	// topics: present in the log, invisible to read_committed readers, as
	// they must be.
	AbortedHidden int
	// Checks are the invariants and whether they held.
	Checks []Check
	// Notes are observations that are not failures.
	Notes []string
}

// Replayable reports whether every sub-topology that was not skipped could
// be replayed faithfully.
func (r *ReplayReport) Replayable() bool {
	for _, s := range r.Subtopologies {
		if s.NotReplayable != "" {
			return false
		}
	}
	return true
}

// OK reports whether the whole topology was replayed and every check held:
// the committed output equals the replay and no transaction is left open.
func (r *ReplayReport) OK() bool {
	if !r.Replayable() || len(r.Checks) == 0 {
		return false
	}
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// maxListedDifferences bounds the differences String lists.
const maxListedDifferences = 20

// String renders the report for a person.
func (r *ReplayReport) String() string {
	var b strings.Builder
	records, unconsumed := 0, 0
	for _, s := range r.Subtopologies {
		records, unconsumed = records+s.Records, unconsumed+s.Unconsumed
	}
	subs := "sub-topologies"
	if len(r.Subtopologies) == 1 {
		subs = "sub-topology"
	}
	fmt.Fprintf(&b, "replay of %q: %d %s, %d committed input records replayed (%d not yet consumed), aborted records hidden from read_committed %d\n",
		r.ApplicationID, len(r.Subtopologies), subs, records, unconsumed, r.AbortedHidden)
	for _, s := range r.Subtopologies {
		switch {
		case s.NotReplayable != "":
			fmt.Fprintf(&b, "  NOT REPLAYABLE  sub-topology %d: %s\n", s.ID, s.NotReplayable)
		case s.Skipped != "":
			fmt.Fprintf(&b, "  SKIP  sub-topology %d: %s\n", s.ID, s.Skipped)
		}
	}
	writeChecks(&b, r.Checks)
	for _, t := range r.Topics {
		if t.Skipped != "" {
			fmt.Fprintf(&b, "  SKIP  %s %s: %s\n", t.Role, t.Topic, t.Skipped)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	if len(r.Differences) > 0 {
		b.WriteString("differences:\n")
		for i, d := range r.Differences {
			if i == maxListedDifferences {
				fmt.Fprintf(&b, "  … and %d more\n", len(r.Differences)-i)
				break
			}
			fmt.Fprintf(&b, "  %s\n", d)
		}
	}
	return b.String()
}
