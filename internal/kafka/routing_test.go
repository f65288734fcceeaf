package kafka

import (
	"maps"
	"reflect"
	"slices"
	"testing"

	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// testBalancer balances two sub-topologies: 0 reads "a" and "b"
// (co-partitioned), 1 reads "c".
func testBalancer(self memberInfo, onAssignment func([]topo.TaskID, *assignmentInfo)) *taskBalancer {
	return &taskBalancer{
		inner:          kgo.CooperativeStickyBalancer(),
		representative: map[string]string{"a": "a", "b": "a", "c": "c"},
		members:        map[string][]string{"a": {"a", "b"}, "c": {"c"}},
		subOf:          map[string]int{"a": 0, "c": 1},
		repOf:          map[int]string{0: "a", 1: "c"},
		stateful:       map[int]bool{},
		self:           self,
		onAssignment:   onAssignment,
	}
}

// rebalance runs one generation as franz-go runs it: every member's
// subscription, the leader's balance, every member's parse of its
// assignment. It returns each member's topic partitions.
func rebalance(t *testing.T, balancers map[string]*taskBalancer, generation int32, partitions int32) map[string]map[string][]int32 {
	t.Helper()
	var members []kmsg.JoinGroupResponseMember
	for _, id := range slices.Sorted(maps.Keys(balancers)) {
		m := kmsg.NewJoinGroupResponseMember()
		m.MemberID = id
		m.ProtocolMetadata = balancers[id].JoinGroupMetadata([]string{"a", "b", "c"}, nil, generation-1)
		members = append(members, m)
	}
	leader := balancers[members[0].MemberID]
	gmb, _, err := leader.MemberBalancer(members)
	if err != nil {
		t.Fatal(err)
	}
	if ib, ok := gmb.(kgo.GroupMemberBalancerInfo); ok {
		ib.SetBalanceInfo(kgo.BalanceInfo{Generation: generation})
	}
	topics := map[string]int32{"a": partitions, "c": partitions}
	plan := gmb.Balance(topics)
	if be, ok := gmb.(kgo.GroupMemberBalancerOrError); ok {
		if plan, err = be.BalanceOrError(topics); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]map[string][]int32{}
	for _, sa := range plan.IntoSyncAssignment() {
		got, err := balancers[sa.MemberID].ParseSyncAssignment(sa.MemberAssignment)
		if err != nil {
			t.Fatal(err)
		}
		out[sa.MemberID] = got
	}
	return out
}

// TestEveryMemberLearnsTheWholeAssignmentByHost proves the leader hands
// every member the same map of advertised host to tasks, that it matches
// what each member was assigned, and that a member advertising no host is
// left out of it.
func TestEveryMemberLearnsTheWholeAssignmentByHost(t *testing.T) {
	hosts := map[string]string{"m1": "10.0.0.1:8080", "m2": "10.0.0.2:8080", "m3": ""}
	got := map[string]*assignmentInfo{}
	mine := map[string][]topo.TaskID{}
	balancers := map[string]*taskBalancer{}
	for id, host := range hosts {
		balancers[id] = testBalancer(memberInfo{Process: "p-" + id, Host: host}, func(tasks []topo.TaskID, info *assignmentInfo) {
			got[id], mine[id] = info, tasks
		})
	}
	assigned := rebalance(t, balancers, 7, 6)

	var all []topo.TaskID
	for id, info := range got {
		if info == nil {
			t.Fatalf("member %s received no assignment info", id)
		}
		if !reflect.DeepEqual(info, got["m1"]) {
			t.Errorf("member %s learned %+v; member m1 learned %+v", id, info, got["m1"])
		}
		all = append(all, mine[id]...)
		// The co-partitioned sources of sub-topology 0 go together.
		if !slices.Equal(assigned[id]["a"], assigned[id]["b"]) {
			t.Errorf("member %s got a%v but b%v", id, assigned[id]["a"], assigned[id]["b"])
		}
	}
	if info := got["m1"]; info.Generation != 7 || len(info.Hosts) != 2 {
		t.Fatalf("info = %+v; want generation 7 and the two advertised hosts", info)
	}
	for id, host := range hosts {
		if host == "" {
			continue
		}
		if want := mine[id]; !slices.Equal(got["m1"].Hosts[host].Active, want) || len(want) == 0 {
			t.Errorf("host %s holds %v in the map; member %s was assigned %v", host, got["m1"].Hosts[host].Active, id, want)
		}
		if len(got["m1"].Hosts[host].Standby) != 0 {
			t.Errorf("host %s has standby tasks %v; the topology has no logged store", host, got["m1"].Hosts[host].Standby)
		}
	}
	slices.SortFunc(all, compareTaskIDs)
	if len(all) != 12 || len(slices.Compact(all)) != 12 {
		t.Errorf("members hold %v; want the 12 tasks once each", all)
	}
}

// TestShutdownRequestStillReachesEveryMember proves routing data does not
// hide a member's request to shut the application down.
func TestShutdownRequestStillReachesEveryMember(t *testing.T) {
	granted := map[string]bool{}
	balancers := map[string]*taskBalancer{}
	for _, id := range []string{"m1", "m2"} {
		b := testBalancer(memberInfo{Process: id, Host: id + ":80"}, nil)
		b.shutdownRequested = func() bool { return id == "m2" }
		b.onShutdown = func() { granted[id] = true }
		balancers[id] = b
	}
	rebalance(t, balancers, 1, 2)
	if !granted["m1"] || !granted["m2"] {
		t.Fatalf("shutdown granted to %v; want both members", granted)
	}
}

// TestRoutingEncodingIsVersionedAndOnlyGrows proves a reader skips fields a
// later version appends, and tells data without routing apart.
func TestRoutingEncodingIsVersionedAndOnlyGrows(t *testing.T) {
	in := assignmentInfo{Generation: 42, Hosts: map[string]hostTasks{
		"h1:1": {Active: []topo.TaskID{{Subtopology: 0, Partition: 1}, {Subtopology: 1, Partition: 300}}},
		"h2:2": {Active: []topo.TaskID{{Subtopology: 0, Partition: 0}}, Standby: []topo.TaskID{{Subtopology: 0, Partition: 1}}},
	}}
	enc := in.appendTo(nil)
	if enc[len(routingMagic)] != routingVersion {
		t.Fatalf("the byte after the magic is %d; want the version %d", enc[len(routingMagic)], routingVersion)
	}
	out, ok, err := parseAssignmentInfo(enc)
	if err != nil || !ok || !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip = %+v %v %v; want %+v", out, ok, err, in)
	}

	// A later version: version 9, one more field after the known ones.
	fields, _, _, _ := cutEnvelope(enc)
	later := appendEnvelope(nil, append(slices.Clip(fields), "a field of version 9"...))
	later[len(routingMagic)] = 9
	if out, ok, err := parseAssignmentInfo(later); err != nil || !ok || !reflect.DeepEqual(out, in) {
		t.Fatalf("version 9 data read as %+v %v %v; want the version 2 fields %+v", out, ok, err, in)
	}

	m := memberInfo{Process: "abc", Host: "h:1", Standby: []topo.TaskID{{Subtopology: 1, Partition: 2}}, Released: []topo.TaskID{{Subtopology: 0, Partition: 7}}}
	sticky := []byte{0, 0, 0, 1, 'x'} // what the inner balancer wrote
	gotM, rest, ok, err := cutMemberInfo(m.appendTo(nil))
	if err != nil || !ok || !reflect.DeepEqual(gotM, m) || len(rest) != 0 {
		t.Fatalf("member info round trip = %+v %q %v %v", gotM, rest, ok, err)
	}
	// Version 1 wrote neither standby field: they read as none.
	v1 := appendEnvelope(nil, appendString(appendString(nil, "old"), "o:1"))
	if gotM, _, ok, err := cutMemberInfo(v1); err != nil || !ok || !reflect.DeepEqual(gotM, memberInfo{Process: "old", Host: "o:1"}) {
		t.Fatalf("version 1 member info read as %+v %v %v", gotM, ok, err)
	}
	mine := in
	mine.Standby = []topo.TaskID{{Subtopology: 0, Partition: 1}}
	if out, ok, err := parseAssignmentInfo(mine.appendTo(nil)); err != nil || !ok || !reflect.DeepEqual(out, mine) {
		t.Fatalf("assignment info with the member's standby tasks read as %+v %v %v; want %+v", out, ok, err, mine)
	}
	if _, rest, ok, err := cutMemberInfo(append(m.appendTo(nil), sticky...)); err != nil || !ok || string(rest) != string(sticky) {
		t.Fatalf("inner user data after member info = %q %v %v; want %q", rest, ok, err, sticky)
	}
	if _, rest, ok, _ := cutMemberInfo(sticky); ok || string(rest) != string(sticky) {
		t.Fatalf("user data without member info read as member info")
	}
	if _, _, err := parseAssignmentInfo(enc[:len(enc)-3]); err == nil {
		t.Fatal("truncated data decoded without error")
	}
}

// TestNewestGenerationAmongWorkersRoutes proves an instance with several
// workers routes by the newest assignment any of them received, and that a
// task counts as local while any worker holds it.
func TestNewestGenerationAmongWorkersRoutes(t *testing.T) {
	var rt routes
	task := topo.TaskID{Subtopology: 0, Partition: 3}
	info := func(gen int32, host string) *assignmentInfo {
		return &assignmentInfo{Generation: gen, Hosts: map[string]hostTasks{host: {Active: []topo.TaskID{task}}}}
	}
	rt.update(1, []topo.TaskID{task}, info(5, "here:1"))
	if host, standbys := rt.hostsOf(task); host != "here:1" || len(standbys) != 0 || !rt.assignedHere(task) {
		t.Fatalf("after generation 5: host %q, standbys %v, local %v", host, standbys, rt.assignedHere(task))
	}
	rt.update(0, nil, info(6, "there:2"))
	rt.update(1, nil, info(4, "stale:3")) // a late answer of an older generation
	if host, _ := rt.hostsOf(task); host != "there:2" || rt.assignedHere(task) {
		t.Fatalf("after generation 6: host %q, local %v; want there:2, not local", host, rt.assignedHere(task))
	}
	if got := rt.local(); len(got) != 0 {
		t.Fatalf("local tasks = %v; want none", got)
	}
}

// TestApplicationServerMustBeHostPort proves a malformed advertised address
// is refused before anything connects.
func TestApplicationServerMustBeHostPort(t *testing.T) {
	for addr, ok := range map[string]bool{"": true, "10.0.0.5:8080": true, "orders-1.orders:8080": true, "10.0.0.5": false, "http://x:1": false} {
		cfg := Config{Brokers: []string{"127.0.0.1:1"}, ApplicationID: "a", ApplicationServer: addr}
		if _, err := cfg.withDefaults(); (err == nil) != ok {
			t.Errorf("ApplicationServer %q: err = %v; want ok=%v", addr, err, ok)
		}
	}
}
