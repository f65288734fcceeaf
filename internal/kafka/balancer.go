package kafka

import (
	"slices"

	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// taskBalancer assigns tasks rather than partitions: partition p of every
// source topic of a sub-topology goes to the same member, as a task needs
// (a join reads both sides of its key there). It runs franz-go's
// cooperative-sticky balancer over one representative topic per
// sub-topology (its first source) and expands each assignment to the
// sub-topology's other sources.
type taskBalancer struct {
	inner          kgo.GroupBalancer
	representative map[string]string   // source topic -> its sub-topology's first source
	members        map[string][]string // representative -> all sources of the sub-topology
}

func newTaskBalancer(t *topo.Topology) *taskBalancer {
	b := &taskBalancer{inner: kgo.CooperativeStickyBalancer(), representative: map[string]string{}, members: map[string][]string{}}
	for _, sub := range t.Subtopologies() {
		rep := sub.SourceTopics[0]
		b.members[rep] = sub.SourceTopics
		for _, topic := range sub.SourceTopics {
			b.representative[topic] = rep
		}
	}
	return b
}

// ProtocolName differs from plain cooperative-sticky so that a consumer
// that would assign partitions one by one cannot join the group.
func (b *taskBalancer) ProtocolName() string { return "exactly-cooperative-tasks" }

func (b *taskBalancer) IsCooperative() bool { return true }

func (b *taskBalancer) collapse(assignment map[string][]int32) map[string][]int32 {
	out := map[string][]int32{}
	for topic, ps := range assignment {
		rep, ok := b.representative[topic]
		if !ok {
			rep = topic
		}
		for _, p := range ps {
			if !slices.Contains(out[rep], p) {
				out[rep] = append(out[rep], p)
			}
		}
	}
	return out
}

func (b *taskBalancer) JoinGroupMetadata(interests []string, current map[string][]int32, generation int32) []byte {
	var reps []string
	for _, topic := range interests {
		rep, ok := b.representative[topic]
		if !ok {
			rep = topic
		}
		if !slices.Contains(reps, rep) {
			reps = append(reps, rep)
		}
	}
	return b.inner.JoinGroupMetadata(reps, b.collapse(current), generation)
}

func (b *taskBalancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	reps, err := b.inner.ParseSyncAssignment(assignment)
	if err != nil {
		return nil, err
	}
	out := map[string][]int32{}
	for rep, ps := range reps {
		topics := b.members[rep]
		if len(topics) == 0 {
			topics = []string{rep}
		}
		for _, topic := range topics {
			out[topic] = append(out[topic], ps...)
		}
	}
	return out, nil
}

func (b *taskBalancer) MemberBalancer(members []kmsg.JoinGroupResponseMember) (kgo.GroupMemberBalancer, map[string]struct{}, error) {
	return b.inner.MemberBalancer(members)
}
