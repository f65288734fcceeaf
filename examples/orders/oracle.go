package orders

import (
	"cmp"
	"crypto/sha256"
	"math"
	"slices"
	"time"
)

// InputRecord is one record of the input topic as a reader sees it.
type InputRecord struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	// Timestamp is the Kafka record timestamp. The topology takes event
	// time from metadata.timestamp; this one is kept on dead letters.
	Timestamp time.Time
}

// ExpectedDeadLetter is an input record the dead-letter topic must hold,
// with its reason.
type ExpectedDeadLetter struct {
	Partition int32
	Offset    int64
	Reason    string
}

// Expected is what the committed output of the orders topology must be for
// a given input.
type Expected struct {
	// Projections is the last projection of every order that has one.
	Projections map[string]Projection
	// Updates is every projection record of each order, in output order:
	// versions 1, 2, 3, … with nothing repeated and nothing missing.
	Updates map[string][]Projection
	// DeadLetters is the dead-letter topic's content as a set, sorted by
	// partition and offset.
	DeadLetters []ExpectedDeadLetter
	// Waiting lists events still in the reorder buffer at the end of the
	// input (neither applied nor expired yet), sorted by partition and
	// offset.
	Waiting []ExpectedDeadLetter
	Stats   Stats
}

// Stats counts what the topology decided over an input.
type Stats struct {
	Records int // input records
	Applied int // distinct events applied to projections
	// Late counts decodable events whose timestamp was below their
	// partition's stream time when they arrived: arrivals out of order.
	Late        int
	Duplicates  int // events skipped as duplicates (duplicates_skipped_total)
	Conflicting int // of which with different bytes (duplicates_conflicting_total)
	Buffered    int // events that waited (events_buffered_total)
	Expired     int // events dead-lettered after the buffer TTL (events_expired_total)
	// DeadLettered counts dead letters by reason.
	DeadLettered map[string]int
}

// Oracle computes, from the input records alone, what the orders topology
// configured with opts must commit: the projections, every projection
// update, the dead letters. It models the topology with plain maps and
// slices (its own code, not the processors'), one partition at a time,
// since each partition is one task with its own stream time: decode, dedup
// by eventId within the dedup TTL, hold events until their order's
// OrderCreated (and lower sequence numbers) are applied, release in
// (timestamp, eventId) order, expire at the first stream-time sweep at or
// after buffering time + buffer TTL, and Project for every applied event.
//
// Records are taken in offset order within each partition, whatever their
// order in records.
func Oracle(records []InputRecord, opts Options) Expected {
	opts = opts.withDefaults()
	exp := Expected{
		Projections: map[string]Projection{},
		Updates:     map[string][]Projection{},
		Stats:       Stats{Records: len(records), DeadLettered: map[string]int{}},
	}
	byPartition := map[int32][]InputRecord{}
	for _, r := range records {
		byPartition[r.Partition] = append(byPartition[r.Partition], r)
	}
	for _, p := range slicesSortedKeys(byPartition) {
		recs := byPartition[p]
		slices.SortStableFunc(recs, func(a, b InputRecord) int { return cmp.Compare(a.Offset, b.Offset) })
		sim := newPartitionModel(opts, &exp)
		for _, r := range recs {
			sim.process(r)
		}
		for _, waiting := range sim.buffer {
			for _, w := range waiting {
				exp.Waiting = append(exp.Waiting, ExpectedDeadLetter{Partition: w.rec.Partition, Offset: w.rec.Offset, Reason: ReasonExpired})
			}
		}
	}
	for order, ups := range exp.Updates {
		exp.Projections[order] = ups[len(ups)-1]
	}
	sortDeadLetters := func(s []ExpectedDeadLetter) {
		slices.SortFunc(s, func(a, b ExpectedDeadLetter) int {
			return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
		})
	}
	sortDeadLetters(exp.DeadLetters)
	sortDeadLetters(exp.Waiting)
	return exp
}

func slicesSortedKeys[V any](m map[int32]V) []int32 {
	keys := make([]int32, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

type seenID struct {
	hash      [sha256.Size]byte
	expiresAt int64
}

type waitingEvent struct {
	event     Event
	rec       InputRecord
	arrival   int
	expiresAt int64
}

// partitionModel is the state of one task, modelled.
type partitionModel struct {
	opts       Options
	exp        *Expected
	streamTime int64
	nextSweep  int64
	arrivals   int
	seen       map[string]seenID
	applied    map[string][]Event
	created    map[string]bool
	nextSeq    map[string]uint64
	buffer     map[string][]waitingEvent
}

func newPartitionModel(opts Options, exp *Expected) *partitionModel {
	return &partitionModel{
		opts: opts, exp: exp,
		streamTime: math.MinInt64,
		nextSweep:  opts.SweepInterval.Milliseconds(),
		seen:       map[string]seenID{},
		applied:    map[string][]Event{},
		created:    map[string]bool{},
		nextSeq:    map[string]uint64{},
		buffer:     map[string][]waitingEvent{},
	}
}

func (m *partitionModel) deadLetter(r InputRecord, reason string) {
	m.exp.DeadLetters = append(m.exp.DeadLetters, ExpectedDeadLetter{Partition: r.Partition, Offset: r.Offset, Reason: reason})
	m.exp.Stats.DeadLettered[reason]++
}

func (m *partitionModel) process(r InputRecord) {
	e, err := m.opts.Decoder.Decode(r.Key, r.Value)
	if err != nil {
		m.streamTime = max(m.streamTime, 0)
		m.deadLetter(r, err.(*DecodeError).Reason)
		return
	}
	before := m.streamTime
	if e.Metadata.Timestamp < before {
		m.exp.Stats.Late++
	}
	m.streamTime = max(m.streamTime, e.Metadata.Timestamp)
	m.handle(e, r)
	if m.streamTime > before && m.streamTime >= m.nextSweep {
		m.sweep(m.streamTime)
		interval := m.opts.SweepInterval.Milliseconds()
		m.nextSweep = (m.streamTime/interval + 1) * interval
	}
}

func (m *partitionModel) handle(e Event, r InputRecord) {
	id := e.Metadata.EventID
	hash := sha256.Sum256(r.Value)
	if s, ok := m.seen[id]; ok && s.expiresAt > m.streamTime {
		m.exp.Stats.Duplicates++
		if s.hash != hash {
			m.exp.Stats.Conflicting++
		}
		return
	}
	m.seen[id] = seenID{hash: hash, expiresAt: max(m.streamTime, 0) + m.opts.DedupTTL.Milliseconds()}

	order := e.OrderID()
	if !m.ready(order, e) {
		m.arrivals++
		w := waitingEvent{event: e, rec: r, arrival: m.arrivals, expiresAt: m.streamTime + m.opts.BufferTTL.Milliseconds()}
		m.buffer[order] = append(m.buffer[order], w)
		slices.SortStableFunc(m.buffer[order], func(a, b waitingEvent) int {
			return cmp.Or(refOf(a.event).Compare(refOf(b.event)), cmp.Compare(a.arrival, b.arrival))
		})
		m.exp.Stats.Buffered++
		return
	}
	m.apply(order, e)
	for {
		waiting := m.buffer[order]
		i := slices.IndexFunc(waiting, func(w waitingEvent) bool { return m.ready(order, w.event) })
		if i < 0 {
			break
		}
		w := waiting[i]
		m.buffer[order] = slices.Delete(waiting, i, i+1)
		m.apply(order, w.event)
	}
	if len(m.buffer[order]) == 0 {
		delete(m.buffer, order)
	}
}

func (m *partitionModel) ready(order string, e Event) bool {
	if e.Type != TypeOrderCreated && !m.created[order] {
		return false
	}
	seq := e.Metadata.Sequence
	return seq == 0 || seq <= max(m.nextSeq[order], 1)
}

func (m *partitionModel) apply(order string, e Event) {
	m.applied[order] = append(m.applied[order], e)
	if e.Type == TypeOrderCreated {
		m.created[order] = true
	}
	if seq := e.Metadata.Sequence; seq >= max(m.nextSeq[order], 1) {
		m.nextSeq[order] = seq + 1
	}
	m.exp.Updates[order] = append(m.exp.Updates[order], Project(m.applied[order]))
	m.exp.Stats.Applied++
}

func (m *partitionModel) sweep(now int64) {
	for _, order := range sortedOrders(m.buffer) {
		kept := m.buffer[order][:0]
		for _, w := range m.buffer[order] {
			if w.expiresAt <= now {
				m.deadLetter(w.rec, ReasonExpired)
				m.exp.Stats.Expired++
				continue
			}
			kept = append(kept, w)
		}
		if len(kept) == 0 {
			delete(m.buffer, order)
		} else {
			m.buffer[order] = kept
		}
	}
}

func sortedOrders(m map[string][]waitingEvent) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
