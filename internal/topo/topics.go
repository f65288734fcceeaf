package topo

import "slices"

// RepartitionTopics returns, sorted, the topics the topology both writes
// and reads: repartition and other intermediate topics.
func (t *Topology) RepartitionTopics() []string {
	read := map[string]bool{}
	for _, sub := range t.subs {
		for _, topic := range sub.SourceTopics {
			read[topic] = true
		}
	}
	var out []string
	for _, sub := range t.subs {
		for _, topic := range sub.SinkTopics {
			if read[topic] && !slices.Contains(out, topic) {
				out = append(out, topic)
			}
		}
	}
	slices.Sort(out)
	return out
}

// ChangelogTopics returns, sorted, the changelog topics of the logged
// stores under applicationID.
func (t *Topology) ChangelogTopics(applicationID string) []string {
	var out []string
	for name, spec := range t.stores {
		if spec.Logged {
			out = append(out, ChangelogTopic(applicationID, name))
		}
	}
	slices.Sort(out)
	return out
}

// InternalTopicPartitions decides how many partitions each topic the
// topology both writes and reads must have. A sub-topology reads its
// source topics co-partitioned, so an internal topic takes the count of
// the external topics its readers read beside it (a foreign-key join's
// subscription topic takes the right table's, its response topic the left
// table's); an internal topic read alone takes the count of what its
// writers read (a repartition topic takes its source's). count gives the
// partitions of a topic the topology does not write; 0 means unknown.
func (t *Topology) InternalTopicPartitions(count func(topic string) int32) map[string]int32 {
	internal := t.RepartitionTopics()
	isInternal := map[string]bool{}
	for _, topic := range internal {
		isInternal[topic] = true
	}
	out := map[string]int32{}
	// subCount is the count a sub-topology's known source topics agree on,
	// external ones first.
	subCount := func(sub *Subtopology) int32 {
		for _, topic := range sub.SourceTopics {
			if !isInternal[topic] {
				if n := count(topic); n > 0 {
					return n
				}
			}
		}
		for _, topic := range sub.SourceTopics {
			if n := out[topic]; n > 0 {
				return n
			}
		}
		return 0
	}
	// coRead is a count of the topics read beside topic, if one is known,
	// and whether any topic is read beside it.
	coRead := func(topic string) (n int32, shared bool) {
		for _, sub := range t.subs {
			if !slices.Contains(sub.SourceTopics, topic) {
				continue
			}
			for _, other := range sub.SourceTopics {
				if other == topic {
					continue
				}
				shared = true
				if m := out[other]; isInternal[other] && m > 0 {
					n = m
				} else if m := count(other); !isInternal[other] && m > 0 {
					return m, true
				}
			}
		}
		return n, shared
	}
	decide := func(writers bool) bool {
		changed := false
		for _, topic := range internal {
			if out[topic] > 0 {
				continue
			}
			n, shared := coRead(topic)
			if n == 0 && (!shared || writers) {
				for _, sub := range t.subs {
					if n == 0 && slices.Contains(sub.SinkTopics, topic) {
						n = subCount(sub)
					}
				}
			}
			if n > 0 {
				out[topic] = n
				changed = true
			}
		}
		return changed
	}
	// Counts follow from readers first; a topic co-read only with
	// undecided ones falls back to its writers.
	for {
		if !decide(false) && !decide(true) {
			return out
		}
	}
}
