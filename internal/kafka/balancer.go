package kafka

import (
	"bytes"
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
	inner kgo.GroupBalancer
	// shutdownRequested is read at every join: a member that asks the
	// application to shut down says so in its subscription, and the leader
	// then hands every member the shutdown instead of partitions.
	shutdownRequested func() bool
	// onShutdown runs when this member's assignment says the application
	// shuts down.
	onShutdown     func()
	representative map[string]string   // source topic -> its sub-topology's first source
	members        map[string][]string // representative -> all sources of the sub-topology
}

// balancer is the worker's task balancer, wired to the application's
// shutdown request.
func (w *worker) balancer() *taskBalancer {
	b := newTaskBalancer(w.r.topo)
	b.shutdownRequested = w.r.shutdownAsked.Load
	b.onShutdown = func() { w.r.shutdownGranted.Store(true) }
	return b
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
	meta := b.inner.JoinGroupMetadata(reps, b.collapse(current), generation)
	if b.shutdownRequested == nil || !b.shutdownRequested() {
		return meta
	}
	var m kmsg.ConsumerMemberMetadata
	if err := m.ReadFrom(meta); err != nil {
		return meta
	}
	m.UserData = append(append([]byte(nil), shutdownMark...), m.UserData...)
	return m.AppendTo(nil)
}

// shutdownMark prefixes a member's subscription user data when it asks the
// application to shut down, and is the user data of every member's
// assignment when the leader grants it.
var shutdownMark = []byte("exactly:shutdown-application;")

func (b *taskBalancer) ParseSyncAssignment(assignment []byte) (map[string][]int32, error) {
	var a kmsg.ConsumerMemberAssignment
	if err := a.ReadFrom(assignment); err == nil && bytes.HasPrefix(a.UserData, shutdownMark) {
		if b.onShutdown != nil {
			b.onShutdown()
		}
		return map[string][]int32{}, nil
	}
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
	shutdown := false
	inner := make([]kmsg.JoinGroupResponseMember, len(members))
	for i, m := range members {
		inner[i] = m
		var meta kmsg.ConsumerMemberMetadata
		if err := meta.ReadFrom(m.ProtocolMetadata); err != nil || !bytes.HasPrefix(meta.UserData, shutdownMark) {
			continue
		}
		shutdown = true
		meta.UserData = meta.UserData[len(shutdownMark):]
		inner[i].ProtocolMetadata = meta.AppendTo(nil)
	}
	gmb, topics, err := b.inner.MemberBalancer(inner)
	if err != nil || !shutdown {
		return gmb, topics, err
	}
	return shutdownPlan(members), topics, nil
}

// shutdownPlan gives every member the shutdown instead of partitions.
type shutdownPlan []kmsg.JoinGroupResponseMember

func (p shutdownPlan) Balance(map[string]int32) kgo.IntoSyncAssignment { return p }

func (p shutdownPlan) IntoSyncAssignment() []kmsg.SyncGroupRequestGroupAssignment {
	var out []kmsg.SyncGroupRequestGroupAssignment
	for _, m := range p {
		a := kmsg.NewConsumerMemberAssignment()
		a.UserData = shutdownMark
		sa := kmsg.NewSyncGroupRequestGroupAssignment()
		sa.MemberID, sa.MemberAssignment = m.MemberID, a.AppendTo(nil)
		out = append(out, sa)
	}
	return out
}
