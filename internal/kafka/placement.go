package kafka

import (
	"cmp"
	"maps"
	"slices"

	"github.com/exactly-go/exactly/internal/topo"
)

// The group's leader places standby replicas after the cooperative-sticky
// balancer has placed the active tasks, and corrects that balancer in one
// case: a task whose owner left the group goes to an instance holding its
// standby (see preferStandbyHolders). Everything here is a pure function of
// what the members advertised, so that a unit test can run it over many
// generated groups.

// placementMember is one member of the group as the leader sees it.
type placementMember struct {
	id      string
	process string        // its instance; members of one instance share a process
	owned   []topo.TaskID // the tasks it claims to own (its OwnedPartitions)
	// standby and released are what it advertised (memberInfo).
	standby, released []topo.TaskID
}

// preferStandbyHolders moves, within plan (member id -> active tasks), each
// stateful task that no member owns, that no member released for a move,
// and of which a member keeps a standby, to an instance keeping that
// standby, so that its restore reads only the delta since the standby's
// checkpoint.
//
// Such a task was orphaned: its owner left the group, so moving it between
// members of the plan never takes a partition from a live member and the
// plan stays valid for cooperative rebalancing (no revocation is needed).
// A task released by a live member is moving for balance, and goes where
// the balancer sent it.
//
// The balancer's counts are kept where possible: the orphans are matched
// to the members the balancer gave them to, holders first (a maximum
// bipartite matching). An orphan no matched slot can take still goes to a
// holder whose load stays within one task of the even share, taking that
// slot from the most loaded member; otherwise it stays with a member the
// balancer chose, and restores in full. The next rebalance's sticky balance
// evens out what this leaves uneven, cooperatively.
func preferStandbyHolders(members []placementMember, plan map[string][]topo.TaskID, stateful func(topo.TaskID) bool) {
	claimed := map[topo.TaskID]bool{}
	holders := map[topo.TaskID][]string{} // task -> processes keeping its standby
	processOf := map[string]string{}
	for _, m := range members {
		processOf[m.id] = m.process
		for _, id := range m.owned {
			claimed[id] = true
		}
		for _, id := range m.released {
			claimed[id] = true
		}
		for _, id := range m.standby {
			if !slices.Contains(holders[id], m.process) {
				holders[id] = append(holders[id], m.process)
			}
		}
	}
	type orphan struct {
		id   topo.TaskID
		slot string // the member the balancer gave it to
	}
	var orphans []orphan
	for _, member := range slices.Sorted(maps.Keys(plan)) {
		plan[member] = slices.DeleteFunc(plan[member], func(id topo.TaskID) bool {
			if claimed[id] || len(holders[id]) == 0 || !stateful(id) {
				return false
			}
			orphans = append(orphans, orphan{id: id, slot: member})
			return true
		})
	}
	if len(orphans) == 0 {
		return
	}
	load := map[string]int{}
	total := 0
	for member, tasks := range plan {
		load[member] = len(tasks)
		total += len(tasks)
	}
	total += len(orphans)
	evenShare := (total + len(plan) - 1) / len(plan)
	holds := func(o orphan, member string) bool { return slices.Contains(holders[o.id], processOf[member]) }

	// Kuhn's augmenting paths: slotOwner[s] is the orphan matched to slot s.
	slotOwner := make([]int, len(orphans))
	for s := range slotOwner {
		slotOwner[s] = -1
	}
	var augment func(o int, seen []bool) bool
	augment = func(o int, seen []bool) bool {
		for s := range orphans {
			if seen[s] || !holds(orphans[o], orphans[s].slot) {
				continue
			}
			seen[s] = true
			if slotOwner[s] < 0 || augment(slotOwner[s], seen) {
				slotOwner[s] = o
				return true
			}
		}
		return false
	}
	matched := make([]bool, len(orphans))
	for o := range orphans {
		matched[o] = augment(o, make([]bool, len(orphans)))
	}
	var free []string // slots no orphan was matched to
	for s, o := range slotOwner {
		if o < 0 {
			free = append(free, orphans[s].slot)
			continue
		}
		plan[orphans[s].slot] = append(plan[orphans[s].slot], orphans[o].id)
		load[orphans[s].slot]++
	}
	for o, orph := range orphans {
		if matched[o] {
			continue
		}
		// The least loaded member of a holder's instance, if it stays
		// within one task of the even share.
		best := ""
		for _, member := range slices.Sorted(maps.Keys(plan)) {
			if holds(orph, member) && (best == "" || load[member] < load[best]) {
				best = member
			}
		}
		if best != "" && load[best]+1 <= evenShare+1 {
			// Give up the free slot of the most loaded member.
			i := 0
			for j := range free {
				if load[free[j]] > load[free[i]] {
					i = j
				}
			}
			free = slices.Delete(free, i, i+1)
		} else {
			i := 0
			for j := range free {
				if load[free[j]] < load[free[i]] {
					i = j
				}
			}
			best = free[i]
			free = slices.Delete(free, i, i+1)
		}
		plan[best] = append(plan[best], orph.id)
		load[best]++
	}
	for member := range plan {
		slices.SortFunc(plan[member], compareTaskIDs)
	}
}

// placeStandbys places up to replicas standby copies of each of tasks (the
// stateful tasks of the topology), given the active plan (member id ->
// tasks). A copy never goes to the instance the plan gives the task to, nor
// to an instance with a member still claiming it (a task moving away is
// revoked first), and one instance keeps at most one copy of a task.
//
// Copies stay where they were (the instance that released a task has the
// newest copy of all) as long as that instance keeps at most one more than
// an even share of all copies; the rest go to the instances with the
// fewest copies, and among those to the one keeping the fewest copies of
// tasks active on the same instance, so that the tasks of one failed
// instance fail over to several. Last, a copy moves wherever an instance
// that may keep it keeps two fewer. Within an instance, a copy goes to the member that
// kept it, else to the member with the fewest tasks. The result maps member
// id to its standby tasks, sorted.
func placeStandbys(members []placementMember, plan map[string][]topo.TaskID, tasks []topo.TaskID, replicas int) map[string][]topo.TaskID {
	out := map[string][]topo.TaskID{}
	if replicas <= 0 || len(members) == 0 {
		return out
	}
	var processes []string
	membersOf := map[string][]placementMember{}
	activeOn := map[topo.TaskID]string{}    // task -> process of its planned active
	claimedOn := map[topo.TaskID][]string{} // task -> processes of members claiming it
	kept := map[topo.TaskID][]string{}      // task -> processes that kept or released a copy, released first
	processOf := map[string]string{}
	for _, m := range members {
		if _, ok := membersOf[m.process]; !ok {
			processes = append(processes, m.process)
		}
		membersOf[m.process] = append(membersOf[m.process], m)
		processOf[m.id] = m.process
		for _, id := range m.owned {
			claimedOn[id] = append(claimedOn[id], m.process)
		}
		for _, id := range m.released {
			kept[id] = append([]string{m.process}, kept[id]...)
		}
	}
	for _, m := range members {
		for _, id := range m.standby {
			if !slices.Contains(kept[id], m.process) {
				kept[id] = append(kept[id], m.process)
			}
		}
	}
	slices.Sort(processes)
	for member, ids := range plan {
		for _, id := range ids {
			activeOn[id] = processOf[member]
		}
	}
	eligible := func(id topo.TaskID, p string) bool {
		return p != activeOn[id] && !slices.Contains(claimedOn[id], p)
	}
	want := map[topo.TaskID]int{}
	totalCopies := 0
	for _, id := range tasks {
		n := 0
		for _, p := range processes {
			if eligible(id, p) {
				n++
			}
		}
		want[id] = min(replicas, n)
		totalCopies += want[id]
	}
	share := (totalCopies + len(processes) - 1) / len(processes)
	load := map[string]int{}             // process -> copies
	pairs := map[[2]string]int{}         // (active process, standby process) -> copies
	placed := map[topo.TaskID][]string{} // task -> processes keeping a copy
	place := func(id topo.TaskID, p string) {
		placed[id] = append(placed[id], p)
		load[p]++
		pairs[[2]string{activeOn[id], p}]++
	}
	for _, id := range tasks {
		for _, p := range kept[id] {
			if len(placed[id]) < want[id] && eligible(id, p) && !slices.Contains(placed[id], p) && load[p] <= share && membersOf[p] != nil {
				place(id, p)
			}
		}
	}
	for _, id := range tasks {
		for len(placed[id]) < want[id] {
			best := ""
			for _, p := range processes {
				if !eligible(id, p) || slices.Contains(placed[id], p) {
					continue
				}
				if best == "" || cmp.Or(cmp.Compare(load[p], load[best]),
					cmp.Compare(pairs[[2]string{activeOn[id], p}], pairs[[2]string{activeOn[id], best}])) < 0 {
					best = p
				}
			}
			place(id, best)
		}
	}
	// Even out what stickiness and the order of the greedy fill left
	// uneven: move a copy to an eligible instance keeping at least two
	// fewer, until none can move. Each move lowers the sum of the squared
	// loads, so this ends.
	for moved := true; moved; {
		moved = false
		for _, id := range tasks {
			for i, p := range placed[id] {
				best := ""
				for _, q := range processes {
					if eligible(id, q) && !slices.Contains(placed[id], q) && load[q]+2 <= load[p] && (best == "" || load[q] < load[best]) {
						best = q
					}
				}
				if best == "" {
					continue
				}
				placed[id][i] = best
				load[p]--
				load[best]++
				pairs[[2]string{activeOn[id], p}]--
				pairs[[2]string{activeOn[id], best}]++
				moved = true
			}
		}
	}
	// Within each instance: the member that kept the copy, else the member
	// with the fewest tasks.
	count := map[string]int{}
	for member, ids := range plan {
		count[member] = len(ids)
	}
	for _, id := range tasks {
		for _, p := range placed[id] {
			var chosen string
			for _, m := range membersOf[p] {
				if slices.Contains(m.standby, id) || slices.Contains(m.released, id) {
					chosen = m.id
					break
				}
			}
			if chosen == "" {
				for _, m := range membersOf[p] {
					if chosen == "" || count[m.id] < count[chosen] || (count[m.id] == count[chosen] && m.id < chosen) {
						chosen = m.id
					}
				}
			}
			out[chosen] = append(out[chosen], id)
			count[chosen]++
		}
	}
	for member := range out {
		slices.SortFunc(out[member], compareTaskIDs)
	}
	return out
}
