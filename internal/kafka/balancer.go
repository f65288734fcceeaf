package kafka

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"

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
//
// It also carries routing (routing.go): each member advertises its
// instance and ApplicationServer in its subscription, and the leader puts
// the whole assignment, by advertised host, into every member's
// assignment.
type taskBalancer struct {
	inner kgo.GroupBalancer
	// shutdownRequested is read at every join: a member that asks the
	// application to shut down says so in its subscription, and the leader
	// then hands every member the shutdown instead of partitions.
	shutdownRequested func() bool
	// onShutdown runs when this member's assignment says the application
	// shuts down.
	onShutdown func()
	// self is what this member advertises.
	self memberInfo
	// onAssignment runs at every sync with this member's tasks and the
	// assignment info the leader sent (nil if none).
	onAssignment   func(tasks []topo.TaskID, info *assignmentInfo)
	representative map[string]string   // source topic -> its sub-topology's first source
	members        map[string][]string // representative -> all sources of the sub-topology
	subOf          map[string]int      // representative -> sub-topology
	repOf          map[int]string      // sub-topology -> representative
	stateful       map[int]bool        // sub-topologies with a logged store
	// standbyReplicas is the number of standby copies this member places
	// when it leads the group.
	standbyReplicas int
	// standbyHeld returns the tasks this member keeps standby copies of,
	// advertised at every join; nil: none.
	standbyHeld func() []topo.TaskID

	mu sync.Mutex
	// assigned are this member's tasks at its latest sync; released are
	// those that sync took from it.
	assigned, released []topo.TaskID
}

// balancer is the worker's task balancer, wired to the application's
// shutdown request.
func (w *worker) balancer() *taskBalancer {
	b := newTaskBalancer(w.r.topo)
	b.shutdownRequested = w.r.shutdownAsked.Load
	b.onShutdown = func() { w.r.shutdownGranted.Store(true) }
	b.self = memberInfo{Process: w.r.process, Host: w.r.cfg.ApplicationServer}
	b.standbyReplicas = w.r.cfg.StandbyReplicas
	b.standbyHeld = func() []topo.TaskID { return w.r.standbys.held(w.index) }
	b.onAssignment = func(tasks []topo.TaskID, info *assignmentInfo) {
		w.r.routes.update(w.index, tasks, info)
		var standby []topo.TaskID
		if info != nil {
			standby = info.Standby
		}
		w.r.standbys.assign(w.index, standby)
	}
	return b
}

func newTaskBalancer(t *topo.Topology) *taskBalancer {
	b := &taskBalancer{inner: kgo.CooperativeStickyBalancer(), representative: map[string]string{}, members: map[string][]string{},
		subOf: map[string]int{}, repOf: map[int]string{}, stateful: map[int]bool{}}
	for _, sub := range t.Subtopologies() {
		rep := sub.SourceTopics[0]
		b.members[rep] = sub.SourceTopics
		b.subOf[rep] = sub.ID
		b.repOf[sub.ID] = rep
		for _, topic := range sub.SourceTopics {
			b.representative[topic] = rep
		}
		for _, name := range sub.Stores {
			if spec, _ := t.Store(name); spec.Logged {
				b.stateful[sub.ID] = true
			}
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
	var m kmsg.ConsumerMemberMetadata
	if err := m.ReadFrom(meta); err != nil {
		return meta
	}
	var userData []byte
	if b.shutdownRequested != nil && b.shutdownRequested() {
		userData = append(userData, shutdownMark...)
	}
	self := b.self
	if b.standbyHeld != nil {
		self.Standby = b.standbyHeld()
	}
	b.mu.Lock()
	self.Released = slices.Clone(b.released)
	b.mu.Unlock()
	userData = self.appendTo(userData)
	m.UserData = append(userData, m.UserData...)
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
	tasks := b.tasks(reps)
	b.mu.Lock()
	b.released = slices.DeleteFunc(b.assigned, func(id topo.TaskID) bool { return slices.Contains(tasks, id) })
	b.assigned = tasks
	b.mu.Unlock()
	if b.onAssignment != nil {
		// Routing that cannot be read leaves queries unrouted (they answer
		// "no owner known"); it never stops the member from consuming.
		var info *assignmentInfo
		if in, ok, err := parseAssignmentInfo(a.UserData); err == nil && ok {
			info = &in
		}
		b.onAssignment(tasks, info)
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
	advertised := map[string]memberInfo{}
	placement := make([]placementMember, len(members))
	inner := make([]kmsg.JoinGroupResponseMember, len(members))
	for i, m := range members {
		inner[i] = m
		placement[i] = placementMember{id: m.MemberID, process: m.MemberID}
		var meta kmsg.ConsumerMemberMetadata
		if err := meta.ReadFrom(m.ProtocolMetadata); err != nil {
			continue
		}
		owned := map[string][]int32{}
		for _, t := range meta.OwnedPartitions {
			owned[t.Topic] = append(owned[t.Topic], t.Partitions...)
		}
		placement[i].owned = b.tasks(owned)
		if bytes.HasPrefix(meta.UserData, shutdownMark) {
			shutdown = true
			meta.UserData = meta.UserData[len(shutdownMark):]
		}
		info, rest, ok, err := cutMemberInfo(meta.UserData)
		if err != nil {
			return nil, nil, fmt.Errorf("member %s: %w", m.MemberID, err)
		}
		if ok {
			advertised[m.MemberID] = info
			if info.Process != "" {
				placement[i].process = info.Process
			}
			placement[i].standby, placement[i].released = info.Standby, info.Released
		}
		meta.UserData = rest
		inner[i].ProtocolMetadata = meta.AppendTo(nil)
	}
	gmb, topics, err := b.inner.MemberBalancer(inner)
	if err != nil {
		return gmb, topics, err
	}
	if shutdown {
		return shutdownPlan(members), topics, nil
	}
	return &routingBalancer{inner: gmb, b: b, advertised: advertised, placement: placement}, topics, nil
}

// tasks turns an assignment of representative topics into task ids.
func (b *taskBalancer) tasks(reps map[string][]int32) []topo.TaskID {
	var out []topo.TaskID
	for rep, ps := range reps {
		sub, ok := b.subOf[rep]
		if !ok {
			continue
		}
		for _, p := range ps {
			out = append(out, topo.TaskID{Subtopology: sub, Partition: p})
		}
	}
	slices.SortFunc(out, compareTaskIDs)
	return slices.Compact(out)
}

// routingBalancer is the leader's balance of one generation: the inner
// plan, with orphaned tasks moved to their standby holders and standby
// copies placed (placement.go), and the whole assignment by advertised
// host added to every member's assignment.
type routingBalancer struct {
	inner      kgo.GroupMemberBalancer
	b          *taskBalancer
	advertised map[string]memberInfo // member id -> what it advertised
	placement  []placementMember     // the members, in the group's order
	generation int32
}

// SetBalanceInfo learns the generation being balanced, and passes the info
// on to the inner balancer.
func (r *routingBalancer) SetBalanceInfo(info kgo.BalanceInfo) {
	r.generation = info.Generation
	if ib, ok := r.inner.(kgo.GroupMemberBalancerInfo); ok {
		ib.SetBalanceInfo(info)
	}
}

// Balance is never called: franz-go calls BalanceOrError.
func (r *routingBalancer) Balance(topics map[string]int32) kgo.IntoSyncAssignment {
	plan, _ := r.BalanceOrError(topics)
	return plan
}

// BalanceOrError balances with the inner balancer and adds the routing.
func (r *routingBalancer) BalanceOrError(topics map[string]int32) (kgo.IntoSyncAssignment, error) {
	var plan kgo.IntoSyncAssignment
	if ib, ok := r.inner.(kgo.GroupMemberBalancerOrError); ok {
		var err error
		if plan, err = ib.BalanceOrError(topics); err != nil {
			return nil, err
		}
	} else {
		plan = r.inner.Balance(topics)
	}
	if plan == nil {
		return nil, errors.New("the inner balancer returned no plan")
	}
	var standby map[string][]topo.TaskID
	if bp, ok := plan.(*kgo.BalancePlan); ok {
		standby = r.place(bp.AsMemberIDMap(), topics)
	}
	return routingPlan{inner: plan, r: r, standby: standby}, nil
}

// place moves orphaned tasks of the inner plan to their standby holders and
// returns the standby tasks of each member.
func (r *routingBalancer) place(plan map[string]map[string][]int32, topics map[string]int32) map[string][]topo.TaskID {
	actives := map[string][]topo.TaskID{}
	for _, m := range r.placement {
		actives[m.id] = r.b.tasks(plan[m.id])
	}
	preferStandbyHolders(r.placement, actives, func(id topo.TaskID) bool { return r.b.stateful[id.Subtopology] })
	for member, ids := range actives {
		reps := plan[member]
		if reps == nil {
			reps = map[string][]int32{}
			plan[member] = reps
		}
		clear(reps)
		for _, id := range ids {
			rep := r.b.repOf[id.Subtopology]
			reps[rep] = append(reps[rep], id.Partition)
		}
	}
	var stateful []topo.TaskID
	for rep, n := range topics {
		if sub, ok := r.b.subOf[rep]; ok && r.b.stateful[sub] {
			for p := range n {
				stateful = append(stateful, topo.TaskID{Subtopology: sub, Partition: p})
			}
		}
	}
	slices.SortFunc(stateful, compareTaskIDs)
	return placeStandbys(r.placement, actives, stateful, r.b.standbyReplicas)
}

type routingPlan struct {
	inner   kgo.IntoSyncAssignment
	r       *routingBalancer
	standby map[string][]topo.TaskID // member id -> its standby tasks
}

// IntoSyncAssignment hands every member its assignment with the whole
// assignment by advertised host in its user data.
func (p routingPlan) IntoSyncAssignment() []kmsg.SyncGroupRequestGroupAssignment {
	out := p.inner.IntoSyncAssignment()
	assignments := make([]*kmsg.ConsumerMemberAssignment, len(out))
	info := assignmentInfo{Generation: p.r.generation, Hosts: map[string]hostTasks{}}
	for i, sa := range out {
		var a kmsg.ConsumerMemberAssignment
		if err := a.ReadFrom(sa.MemberAssignment); err != nil {
			continue // not a consumer assignment: handed on as it is
		}
		assignments[i] = &a
		host := p.r.advertised[sa.MemberID].Host
		if host == "" {
			continue
		}
		reps := map[string][]int32{}
		for _, t := range a.Topics {
			reps[t.Topic] = append(reps[t.Topic], t.Partitions...)
		}
		ht := info.Hosts[host]
		ht.Active = append(ht.Active, p.r.b.tasks(reps)...)
		slices.SortFunc(ht.Active, compareTaskIDs)
		ht.Standby = append(ht.Standby, p.standby[sa.MemberID]...)
		slices.SortFunc(ht.Standby, compareTaskIDs)
		info.Hosts[host] = ht
	}
	for i, a := range assignments {
		if a == nil {
			continue
		}
		mine := info
		mine.Standby = p.standby[out[i].MemberID]
		a.UserData = append(mine.appendTo(nil), a.UserData...)
		out[i].MemberAssignment = a.AppendTo(nil)
	}
	return out
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
