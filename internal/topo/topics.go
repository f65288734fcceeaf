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
