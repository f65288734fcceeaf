package exactly

import "slices"

// RepartitionTopics returns, sorted, the topics the topology both writes
// and reads: the repartition topics of the DSL
// (<application id>-<name>-repartition) and any other topic a sink of the
// topology writes for one of its sources to read. The runtime creates them
// when they are missing, with as many partitions as the input of the
// sub-topology that writes them; a test driver run gives them one
// partition unless its Config.Partitions says otherwise.
func (t *Topology) RepartitionTopics() []string { return t.t.RepartitionTopics() }

// ChangelogTopics returns, sorted, the changelog topics of the topology's
// logged stores for applicationID: <applicationID>-<store>-changelog,
// compacted, with one partition per task of the store's sub-topology.
// Stores declared with DisableChangelog have none.
func (t *Topology) ChangelogTopics(applicationID string) []string {
	return t.t.ChangelogTopics(applicationID)
}

// SourceTopics returns, sorted, every topic a source of the topology
// reads: its inputs and its repartition topics. The topics it reads from
// outside, the ones an application reset rewinds, are SourceTopics less
// RepartitionTopics.
func (t *Topology) SourceTopics() []string {
	var out []string
	for _, sub := range t.t.Subtopologies() {
		for _, topic := range sub.SourceTopics {
			if !slices.Contains(out, topic) {
				out = append(out, topic)
			}
		}
	}
	slices.Sort(out)
	return out
}
