package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/exactly-go/exactly/internal/topo"
)

// Members tell the group's leader who they are in their subscription's user
// data, and the leader hands every member the whole assignment in its
// assignment's user data (as Kafka Streams' SubscriptionInfo and
// AssignmentInfo do), so that after each rebalance every member knows which
// instance holds which task without asking anyone.
//
// Both encodings start with routingMagic and a version byte. A later
// version only appends fields: a member reads the fields it knows and skips
// the rest, so members of two versions can share a group during a rolling
// upgrade.

// routingMagic opens this package's user data; its first byte could not
// open the cooperative-sticky balancer's own user data (an array length).
var routingMagic = []byte{0xe7, 'x', 'q'}

// routingVersion is the version this package writes. Version 2 added the
// standby tasks: those a member holds and gave up (memberInfo), and those
// the leader hands it (assignmentInfo).
const routingVersion byte = 2

// memberInfo is what a member advertises in its subscription.
type memberInfo struct {
	// Process identifies the instance (all workers of one Runner share it),
	// so that placement can tell instances apart.
	Process string
	// Host is the instance's ApplicationServer, "" if it serves no queries.
	Host string
	// Standby are the tasks the member keeps standby copies of, so that the
	// leader keeps them there and prefers the member when a task's active
	// owner is gone.
	Standby []topo.TaskID
	// Released are the tasks the member's latest assignment took from it
	// to move them elsewhere: the leader leaves them to the balancer's
	// choice (not to a standby holder) and, the member's copy being the
	// newest, prefers it for their standby.
	Released []topo.TaskID
}

func (m memberInfo) appendTo(b []byte) []byte {
	fields := appendString(appendString(nil, m.Process), m.Host)
	fields = appendTasks(appendTasks(fields, m.Standby), m.Released)
	return appendEnvelope(b, fields)
}

// cutMemberInfo splits user data into this package's member info and what
// follows it (the inner balancer's user data). ok is false when data does
// not start with member info (a member of an earlier version).
func cutMemberInfo(data []byte) (m memberInfo, rest []byte, ok bool, err error) {
	fields, rest, ok, err := cutEnvelope(data)
	if !ok || err != nil {
		return m, data, false, err
	}
	f := decoder{b: fields}
	m.Process = f.string()
	m.Host = f.string()
	if f.more() { // version 2
		m.Standby = f.tasks()
		m.Released = f.tasks()
	}
	if f.err != nil {
		return memberInfo{}, data, false, fmt.Errorf("member info: %w", f.err)
	}
	return m, rest, true, nil
}

// assignmentInfo is what the leader hands every member: the whole
// assignment of the generation, by advertised host.
type assignmentInfo struct {
	// Generation is the group generation the leader balanced.
	Generation int32
	// Hosts maps each advertised ApplicationServer to the tasks its
	// instance holds. Members that advertise none are left out.
	Hosts map[string]hostTasks
	// Standby are the tasks the receiving member keeps standby copies of
	// (the only field that differs between members).
	Standby []topo.TaskID
}

// hostTasks are the tasks one instance holds.
type hostTasks struct {
	Active  []topo.TaskID
	Standby []topo.TaskID
}

func (a assignmentInfo) appendTo(b []byte) []byte {
	var body []byte
	body = binary.AppendVarint(body, int64(a.Generation))
	body = binary.AppendUvarint(body, uint64(len(a.Hosts)))
	for _, host := range slices.Sorted(maps.Keys(a.Hosts)) {
		body = appendString(body, host)
		body = appendTasks(body, a.Hosts[host].Active)
		body = appendTasks(body, a.Hosts[host].Standby)
	}
	body = appendTasks(body, a.Standby)
	return appendEnvelope(b, body)
}

// parseAssignmentInfo decodes an assignment's user data; ok is false when
// it holds none (a leader of an earlier version).
func parseAssignmentInfo(data []byte) (a assignmentInfo, ok bool, err error) {
	fields, _, ok, err := cutEnvelope(data)
	if !ok || err != nil {
		return a, false, err
	}
	f := decoder{b: fields}
	a.Generation = int32(f.varint())
	n := f.uvarint()
	a.Hosts = map[string]hostTasks{}
	for i := uint64(0); i < n && f.err == nil; i++ {
		host := f.string()
		a.Hosts[host] = hostTasks{Active: f.tasks(), Standby: f.tasks()}
	}
	if f.more() { // version 2
		a.Standby = f.tasks()
	}
	if f.err != nil {
		return assignmentInfo{}, false, fmt.Errorf("assignment info: %w", f.err)
	}
	return a, true, nil
}

// appendEnvelope appends magic, version, the length of fields, and fields.
// The length lets a reader skip the fields a later version appends.
func appendEnvelope(b, fields []byte) []byte {
	b = append(b, routingMagic...)
	b = append(b, routingVersion)
	b = binary.AppendUvarint(b, uint64(len(fields)))
	return append(b, fields...)
}

// cutEnvelope returns the fields of an envelope at the start of data and
// what follows it; ok is false when data does not start with one.
func cutEnvelope(data []byte) (fields, rest []byte, ok bool, err error) {
	if !bytes.HasPrefix(data, routingMagic) {
		return nil, data, false, nil
	}
	d := decoder{b: data[len(routingMagic):]}
	d.take(1) // the version: any version reads as this one, fields only grow
	fields = d.take(d.uvarint())
	if d.err != nil {
		return nil, data, false, fmt.Errorf("exactly user data: %w", d.err)
	}
	return fields, d.b, true, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTasks(b []byte, tasks []topo.TaskID) []byte {
	b = binary.AppendUvarint(b, uint64(len(tasks)))
	for _, id := range tasks {
		b = binary.AppendUvarint(b, uint64(id.Subtopology))
		b = binary.AppendUvarint(b, uint64(id.Partition))
	}
	return b
}

var errTruncated = errors.New("truncated")

// decoder reads the varint encoding; the first failure sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errTruncated
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) take(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errTruncated
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

// more reports whether fields are left to read: a field a later version
// appended, absent from an earlier version's encoding.
func (d *decoder) more() bool { return d.err == nil && len(d.b) > 0 }

func (d *decoder) string() string { return string(d.take(d.uvarint())) }

func (d *decoder) tasks() []topo.TaskID {
	n := d.uvarint()
	if n > uint64(len(d.b)) { // each task takes at least two bytes
		d.err = errTruncated
		return nil
	}
	var out []topo.TaskID
	for i := uint64(0); i < n && d.err == nil; i++ {
		out = append(out, topo.TaskID{Subtopology: int(d.uvarint()), Partition: int32(d.uvarint())})
	}
	return out
}

// routes is what this instance knows of the group's assignment: the latest
// assignment info each of its workers received, and the tasks each worker
// was assigned. Queries read it; only the balancers write it.
type routes struct {
	mu       sync.Mutex
	infos    []*assignmentInfo      // per worker; nil: none received
	assigned []map[topo.TaskID]bool // per worker
	owner    map[topo.TaskID]string // active host of each task, from the newest info
	standbys map[topo.TaskID][]string
	newest   *assignmentInfo
}

// update records what worker received at its latest sync. info is nil when
// the leader sent none (a leader of an earlier version, or a shutdown).
func (rt *routes) update(worker int, assigned []topo.TaskID, info *assignmentInfo) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for len(rt.infos) <= worker {
		rt.infos = append(rt.infos, nil)
		rt.assigned = append(rt.assigned, nil)
	}
	set := make(map[topo.TaskID]bool, len(assigned))
	for _, id := range assigned {
		set[id] = true
	}
	rt.assigned[worker] = set
	rt.infos[worker] = info
	// Workers of one instance are members of the same group: the info of
	// the newest generation any of them received is the truth. A worker
	// lagging behind (or rejoining a group that was recreated) does not
	// move it back until every worker has moved.
	var newest *assignmentInfo
	for _, in := range rt.infos {
		if in != nil && (newest == nil || in.Generation > newest.Generation) {
			newest = in
		}
	}
	rt.newest = newest
	rt.owner = map[topo.TaskID]string{}
	rt.standbys = map[topo.TaskID][]string{}
	if newest != nil {
		for _, host := range slices.Sorted(maps.Keys(newest.Hosts)) {
			for _, id := range newest.Hosts[host].Active {
				rt.owner[id] = host
			}
			for _, id := range newest.Hosts[host].Standby {
				rt.standbys[id] = append(rt.standbys[id], host)
			}
		}
	}
}

// hostsOf returns the advertised host of the instance holding task id
// ("" when no instance that advertises one holds it) and those of the
// instances keeping standby copies.
func (rt *routes) hostsOf(id topo.TaskID) (active string, standbys []string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.owner[id], slices.Clone(rt.standbys[id])
}

// assignedHere reports whether one of this instance's workers holds task id.
func (rt *routes) assignedHere(id topo.TaskID) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, set := range rt.assigned {
		if set[id] {
			return true
		}
	}
	return false
}

// hosts returns the newest assignment by advertised host.
func (rt *routes) hosts() map[string]hostTasks {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.newest == nil {
		return nil
	}
	return maps.Clone(rt.newest.Hosts)
}

// local returns the tasks this instance's workers hold, sorted.
func (rt *routes) local() []topo.TaskID {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var out []topo.TaskID
	for _, set := range rt.assigned {
		for id := range set {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, compareTaskIDs)
	return slices.Compact(out)
}
