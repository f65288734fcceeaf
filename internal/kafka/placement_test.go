package kafka

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// simMember is one member of a simulated group: its balancer and what the
// cooperative protocol leaves it owning.
type simMember struct {
	id      string
	process string
	b       *taskBalancer
	owned   map[string][]int32 // every source topic, as franz-go tracks it
	standby []topo.TaskID      // from its latest assignment
}

// simGroup runs the task balancer as franz-go and the broker run it:
// members join with what they own, the first member balances, every
// member parses its assignment, revokes what it lost and rejoins while
// anything was revoked (cooperative rebalancing).
type simGroup struct {
	t          *testing.T
	partitions int32
	replicas   int
	members    map[string]*simMember
	generation int32
	next       int
}

func (g *simGroup) add(process string) *simMember {
	g.next++
	m := &simMember{id: fmt.Sprintf("m%03d-%s", g.next, process), process: process, owned: map[string][]int32{}}
	m.b = testBalancer(memberInfo{Process: process}, func(_ []topo.TaskID, info *assignmentInfo) {
		m.standby = nil
		if info != nil {
			m.standby = info.Standby
		}
	})
	m.b.stateful = map[int]bool{0: true} // sub-topology 1 ("c") keeps no state
	m.b.standbyReplicas = g.replicas
	m.b.standbyHeld = func() []topo.TaskID { return m.standby }
	g.members[m.id] = m
	return m
}

// round is one generation; it reports whether a member revoked anything.
func (g *simGroup) round() (revoked bool) {
	t := g.t
	t.Helper()
	g.generation++
	ids := slices.Sorted(maps.Keys(g.members))
	var join []kmsg.JoinGroupResponseMember
	for _, id := range ids {
		m := kmsg.NewJoinGroupResponseMember()
		m.MemberID = id
		m.ProtocolMetadata = g.members[id].b.JoinGroupMetadata([]string{"a", "b", "c"}, g.members[id].owned, g.generation-1)
		join = append(join, m)
	}
	gmb, _, err := g.members[ids[0]].b.MemberBalancer(join)
	if err != nil {
		t.Fatal(err)
	}
	gmb.(kgo.GroupMemberBalancerInfo).SetBalanceInfo(kgo.BalanceInfo{Generation: g.generation})
	plan, err := gmb.(kgo.GroupMemberBalancerOrError).BalanceOrError(map[string]int32{"a": g.partitions, "c": g.partitions})
	if err != nil {
		t.Fatal(err)
	}
	assigned := map[string]map[string][]int32{}
	for _, sa := range plan.IntoSyncAssignment() {
		got, err := g.members[sa.MemberID].b.ParseSyncAssignment(sa.MemberAssignment)
		if err != nil {
			t.Fatal(err)
		}
		assigned[sa.MemberID] = got
	}
	// Cooperative: a partition given to a member is owned by no other
	// member when it is given.
	for id, got := range assigned {
		for topic, ps := range got {
			for _, p := range ps {
				if slices.Contains(g.members[id].owned[topic], p) {
					continue
				}
				for other, m := range g.members {
					if other != id && slices.Contains(m.owned[topic], p) {
						t.Fatalf("generation %d: %s/%d given to %s while %s still owns it", g.generation, topic, p, id, other)
					}
				}
			}
		}
	}
	for id, m := range g.members {
		for topic, ps := range m.owned {
			for _, p := range ps {
				if !slices.Contains(assigned[id][topic], p) {
					revoked = true
				}
			}
		}
		m.owned = assigned[id]
	}
	g.checkStandbys()
	return revoked
}

// rebalance runs rounds until no member revokes anything.
func (g *simGroup) rebalance() {
	for range 5 {
		if !g.round() {
			return
		}
	}
	g.t.Fatalf("generation %d: still revoking after 5 rounds", g.generation)
}

// activeProcess returns the process owning task id ("" if none does).
func (g *simGroup) activeProcess(id topo.TaskID) string {
	topic := map[int]string{0: "a", 1: "c"}[id.Subtopology]
	for _, m := range g.members {
		if slices.Contains(m.owned[topic], id.Partition) {
			return m.process
		}
	}
	return ""
}

// checkStandbys checks the standby copies after a round: never on the
// active's instance, at most one per instance, none for a stateless task.
func (g *simGroup) checkStandbys() {
	t := g.t
	t.Helper()
	on := map[topo.TaskID][]string{}
	for _, m := range g.members {
		for _, id := range m.standby {
			if id.Subtopology != 0 {
				t.Fatalf("generation %d: stateless task %s has a standby on %s", g.generation, id, m.id)
			}
			if p := g.activeProcess(id); p == m.process {
				t.Fatalf("generation %d: standby of %s on %s, whose instance %s runs the task", g.generation, id, m.id, p)
			}
			if slices.Contains(on[id], m.process) {
				t.Fatalf("generation %d: two standbys of %s on instance %s", g.generation, id, m.process)
			}
			on[id] = append(on[id], m.process)
		}
	}
}

// checkConverged checks the settled assignment: every task held once,
// actives within one task of the even share, and every stateful task with
// as many standbys as the instances allow.
func (g *simGroup) checkConverged() {
	t := g.t
	t.Helper()
	processes := map[string]bool{}
	held := map[string]map[int32]int{"a": {}, "b": {}, "c": {}}
	minLoad, maxLoad := int(^uint(0)>>1), 0
	for _, m := range g.members {
		processes[m.process] = true
		load := 0
		for topic, ps := range m.owned {
			for _, p := range ps {
				held[topic][p]++
			}
			if topic != "b" {
				load += len(ps)
			}
		}
		minLoad, maxLoad = min(minLoad, load), max(maxLoad, load)
	}
	for topic, ps := range held {
		for p := range g.partitions {
			if ps[p] != 1 {
				t.Fatalf("generation %d: %s/%d held %d times", g.generation, topic, p, ps[p])
			}
		}
	}
	tasks := 2 * int(g.partitions)
	if even := (tasks + len(g.members) - 1) / len(g.members); maxLoad > even+1 {
		t.Fatalf("generation %d: a member holds %d tasks; the even share is %d", g.generation, maxLoad, even)
	}
	copies := map[topo.TaskID]int{}
	for _, m := range g.members {
		for _, id := range m.standby {
			copies[id]++
		}
	}
	want := min(g.replicas, len(processes)-1)
	for p := range g.partitions {
		if n := copies[topo.TaskID{Partition: p}]; n != want {
			t.Fatalf("generation %d: task 0_%d has %d standbys; want %d", g.generation, p, n, want)
		}
	}
	// Copies are spread: none could move to an instance allowed to keep it
	// that keeps two fewer.
	perProcess := map[string]int{}
	holders := map[topo.TaskID][]string{}
	for _, m := range g.members {
		perProcess[m.process] += len(m.standby)
		for _, id := range m.standby {
			holders[id] = append(holders[id], m.process)
		}
	}
	for id, ps := range holders {
		for _, p := range ps {
			for q := range processes {
				if q != g.activeProcess(id) && !slices.Contains(ps, q) && perProcess[q]+2 <= perProcess[p] {
					t.Fatalf("generation %d: the standby of %s on %s (%d copies) could go to %s (%d copies)", g.generation, id, p, perProcess[p], q, perProcess[q])
				}
			}
		}
	}
}

// TestStandbysNeverShareTheActivesInstance runs the leader's placement over
// many generated groups, with instances of one to three workers joining,
// leaving and failing, through the cooperative protocol. After every round
// no standby sits on its active's instance (nor two on one instance), every
// partition moves only once revoked; once settled, every task is held once,
// actives are even within one task, and every stateful task has its
// standbys. When an instance fails, its tasks go to instances holding
// their standbys.
func TestStandbysNeverShareTheActivesInstance(t *testing.T) {
	hits, misses, stillRejoins := 0, 0, 0
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 14))
		g := &simGroup{t: t, partitions: int32(2 + rng.IntN(11)), replicas: 1 + rng.IntN(2), members: map[string]*simMember{}}
		processes := 0
		addProcess := func() {
			processes++
			for range 1 + rng.IntN(3) {
				g.add(fmt.Sprint("p", processes))
			}
		}
		for range 1 + rng.IntN(3) {
			addProcess()
		}
		g.rebalance()
		for range 12 {
			alive := map[string]bool{}
			for _, m := range g.members {
				alive[m.process] = true
			}
			switch ev := rng.IntN(4); {
			case ev == 0 || len(alive) == 1:
				addProcess()
			case ev == 1:
				// An instance fails: its members vanish with their tasks.
				victim := slices.Sorted(maps.Keys(alive))[rng.IntN(len(alive))]
				holders := map[topo.TaskID][]string{}
				for _, m := range g.members {
					for _, id := range m.standby {
						if m.process != victim {
							holders[id] = append(holders[id], m.process)
						}
					}
				}
				var orphans []topo.TaskID
				for id, m := range g.members {
					if m.process != victim {
						continue
					}
					for _, p := range m.owned["a"] {
						orphans = append(orphans, topo.TaskID{Partition: p})
					}
					delete(g.members, id)
				}
				g.rebalance()
				for _, id := range orphans {
					if len(holders[id]) == 0 {
						continue
					}
					if slices.Contains(holders[id], g.activeProcess(id)) {
						hits++
					} else {
						misses++
					}
				}
			case ev == 2:
				// One worker leaves.
				ids := slices.Sorted(maps.Keys(g.members))
				delete(g.members, ids[rng.IntN(len(ids))])
			default:
				// A rejoin that moves no active task keeps every copy in
				// place.
				before := map[string][]topo.TaskID{}
				owned := map[string]map[string][]int32{}
				for id, m := range g.members {
					before[id], owned[id] = m.standby, m.owned
				}
				g.rebalance()
				moved := false
				for id, m := range g.members {
					moved = moved || !maps.EqualFunc(owned[id], m.owned, slices.Equal)
				}
				if !moved {
					stillRejoins++
				}
				for id, m := range g.members {
					if !moved && !slices.Equal(before[id], m.standby) {
						t.Fatalf("seed %d generation %d: a rejoin moved %s's standbys from %v to %v", seed, g.generation, id, before[id], m.standby)
					}
				}
			}
			g.rebalance()
			g.checkConverged()
		}
	}
	t.Logf("failed instances' tasks with a live standby: %d went to a standby's instance, %d elsewhere; %d rejoins moved no active task", hits, misses, stillRejoins)
	if hits == 0 || misses*10 > hits {
		t.Fatalf("%d of %d orphaned tasks went to an instance without their standby; want under a tenth", misses, hits+misses)
	}
}

// TestFailedInstancesTasksGoToTheirStandbys proves the leader gives every
// task of a failed instance to the instance holding its standby, in the
// case the acceptance test runs: three instances, one standby each.
func TestFailedInstancesTasksGoToTheirStandbys(t *testing.T) {
	for _, partitions := range []int32{3, 6, 12} {
		for victim := 1; victim <= 3; victim++ {
			g := &simGroup{t: t, partitions: partitions, replicas: 1, members: map[string]*simMember{}}
			for p := 1; p <= 3; p++ {
				g.add(fmt.Sprint("p", p))
			}
			g.rebalance()
			g.rebalance()
			standbyOf := map[topo.TaskID]string{}
			var orphans []topo.TaskID
			for id, m := range g.members {
				for _, task := range m.standby {
					standbyOf[task] = m.process
				}
				if m.process == fmt.Sprint("p", victim) {
					for _, p := range m.owned["a"] {
						orphans = append(orphans, topo.TaskID{Partition: p})
					}
					delete(g.members, id)
				}
			}
			g.rebalance()
			g.checkConverged()
			for _, id := range orphans {
				if got := g.activeProcess(id); got != standbyOf[id] {
					t.Errorf("%d partitions, p%d fails: task %s went to %s; its standby was on %s", partitions, victim, id, got, standbyOf[id])
				}
			}
		}
	}
}
