package topo

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Topology is a validated, immutable topology.
type Topology struct {
	nodes    []Node
	index    map[string]int
	children map[string][]string
	stores   map[string]*StoreSpec
	subs     []*Subtopology

	// OnDeserializationError, OnProcessingError and OnProductionError
	// choose what tasks do with records that fail.
	OnDeserializationError ErrorAction
	OnProcessingError      ErrorAction
	OnProductionError      ErrorAction
}

// Subtopology is a connected part of a topology: its sources must be
// co-partitioned, and each of their partitions is one task.
type Subtopology struct {
	ID           int
	Nodes        []string // in topological order
	SourceTopics []string
	SinkTopics   []string
	Stores       []string
}

// Build validates nodes and stores and returns the topology. connections
// maps processor names to the store names they declared they use.
func Build(nodes []Node, stores []*StoreSpec, connections map[string][]string, onDeser, onProc, onProd ErrorAction) (*Topology, error) {
	t := &Topology{
		nodes:                  nodes,
		index:                  map[string]int{},
		children:               map[string][]string{},
		stores:                 map[string]*StoreSpec{},
		OnDeserializationError: onDeser,
		OnProcessingError:      onProc,
		OnProductionError:      onProd,
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(nodes) == 0 {
		return nil, errors.New("topology has no nodes: add a source")
	}
	for i, n := range nodes {
		if n.Name() == "" {
			fail("%s #%d has an empty name", n.Kind(), i)
			continue
		}
		if _, dup := t.index[n.Name()]; dup {
			fail("duplicate node name %q", n.Name())
			continue
		}
		t.index[n.Name()] = i
	}
	topicOwner := map[string]string{}
	for _, n := range nodes {
		name := n.Name()
		switch n.Kind() {
		case KindSource:
			if len(n.Parents()) > 0 {
				fail("source %q cannot have parents", name)
			}
			if len(n.Topics()) == 0 {
				fail("source %q reads no topic", name)
			}
			for _, topic := range n.Topics() {
				if other, ok := topicOwner[topic]; ok {
					fail("topic %q is read by both source %q and source %q", topic, other, name)
				}
				topicOwner[topic] = name
			}
		case KindSink, KindDeadLetterSink:
			if len(n.Topics()) != 1 || n.Topics()[0] == "" {
				fail("%s %q needs a topic", strings.ToLower(n.Kind().String()), name)
			}
			fallthrough
		default:
			if len(n.Parents()) == 0 {
				fail("%s %q has no parent", strings.ToLower(n.Kind().String()), name)
			}
		}
		for _, p := range n.Parents() {
			pi, ok := t.index[p]
			if !ok {
				fail("node %q has unknown parent %q", name, p)
				continue
			}
			parent := nodes[pi]
			if k := parent.Kind(); k == KindSink || k == KindDeadLetterSink {
				fail("node %q has parent %q, a %s, which cannot have children", name, p, strings.ToLower(k.String()))
				continue
			}
			if slices.Contains(t.children[p], name) {
				fail("node %q lists parent %q twice", name, p)
				continue
			}
			t.children[p] = append(t.children[p], name)
			if n.Kind() != KindDeadLetterSink {
				pk, pv := parent.OutTypes()
				ck, cv := n.InTypes()
				if pk != ck || pv != cv {
					fail("node %q forwards Record[%v, %v] but its child %q takes Record[%v, %v]", p, pk, pv, name, ck, cv)
				}
			}
		}
	}
	if len(errs) == 0 {
		if cycle := t.findCycle(); cycle != nil {
			fail("topology has a cycle: %s", strings.Join(cycle, " -> "))
		}
	}
	for _, s := range stores {
		if s.Name == "" {
			fail("a store has an empty name")
			continue
		}
		if _, dup := t.stores[s.Name]; dup {
			fail("duplicate store name %q", s.Name)
			continue
		}
		t.stores[s.Name] = s
	}
	for _, s := range stores {
		for _, p := range s.Processors {
			t.connect(p, s.Name, &errs)
		}
		if s.GlobalTopic == "" {
			continue
		}
		if owner, ok := topicOwner[s.GlobalTopic]; ok {
			fail("global store %q reads topic %q, which source %q reads too: a topic feeds either a global store or a source", s.Name, s.GlobalTopic, owner)
		}
		for _, other := range stores {
			if other != s && other.GlobalTopic == s.GlobalTopic {
				fail("global stores %q and %q both read topic %q", s.Name, other.Name, s.GlobalTopic)
				break
			}
		}
	}
	for _, p := range slices.Sorted(maps.Keys(connections)) {
		for _, s := range connections[p] {
			st, ok := t.stores[s]
			if !ok {
				fail("processor %q is connected to unknown store %q", p, s)
				continue
			}
			st.Processors = append(st.Processors, p)
			t.connect(p, s, &errs)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	t.splitSubtopologies()
	if onDeser == DeadLetter || onProc == DeadLetter || onProd == DeadLetter {
		for _, n := range nodes {
			if n.Kind() == KindSource && !t.hasDeadLetterChild(n.Name()) {
				fail("source %q has no dead-letter sink, but errors are configured to go to one: add a dead-letter sink with parent %q", n.Name(), n.Name())
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

func (t *Topology) connect(processor, storeName string, errs *[]error) {
	i, ok := t.index[processor]
	if !ok {
		*errs = append(*errs, fmt.Errorf("store %q is connected to unknown processor %q", storeName, processor))
		return
	}
	if t.nodes[i].Kind() != KindProcessor {
		*errs = append(*errs, fmt.Errorf("store %q is connected to %q, which is not a processor", storeName, processor))
	}
}

func (t *Topology) hasDeadLetterChild(name string) bool {
	for _, c := range t.children[name] {
		if t.nodes[t.index[c]].Kind() == KindDeadLetterSink {
			return true
		}
	}
	return false
}

// findCycle returns the names along a cycle, or nil.
func (t *Topology) findCycle() []string {
	const (
		unvisited = iota
		onPath
		done
	)
	state := map[string]int{}
	var path []string
	var visit func(string) []string
	visit = func(n string) []string {
		state[n] = onPath
		path = append(path, n)
		for _, c := range t.children[n] {
			switch state[c] {
			case onPath:
				start := slices.Index(path, c)
				return append(slices.Clone(path[start:]), c)
			case unvisited:
				if cyc := visit(c); cyc != nil {
					return cyc
				}
			}
		}
		path = path[:len(path)-1]
		state[n] = done
		return nil
	}
	for _, n := range t.nodes {
		if state[n.Name()] == unvisited {
			if cyc := visit(n.Name()); cyc != nil {
				return cyc
			}
		}
	}
	return nil
}

// splitSubtopologies groups nodes connected by edges or shared stores.
func (t *Topology) splitSubtopologies() {
	parent := make([]int, len(t.nodes))
	for i := range parent {
		parent[i] = i
	}
	find := func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	union := func(a, b int) { parent[find(a)] = find(b) }
	for _, n := range t.nodes {
		for _, p := range n.Parents() {
			union(t.index[n.Name()], t.index[p])
		}
	}
	storeNames := slices.DeleteFunc(slices.Sorted(maps.Keys(t.stores)), func(s string) bool { return t.stores[s].GlobalTopic != "" })
	for _, s := range storeNames {
		procs := t.stores[s].Processors
		for i := 1; i < len(procs); i++ {
			union(t.index[procs[0]], t.index[procs[i]])
		}
	}
	byRoot := map[int]*Subtopology{}
	for _, name := range t.topologicalOrder() {
		root := find(t.index[name])
		sub, ok := byRoot[root]
		if !ok {
			sub = &Subtopology{ID: len(t.subs)}
			byRoot[root] = sub
			t.subs = append(t.subs, sub)
		}
		sub.Nodes = append(sub.Nodes, name)
		n := t.nodes[t.index[name]]
		switch n.Kind() {
		case KindSource:
			sub.SourceTopics = append(sub.SourceTopics, n.Topics()...)
		case KindSink, KindDeadLetterSink:
			if !slices.Contains(sub.SinkTopics, n.Topics()[0]) {
				sub.SinkTopics = append(sub.SinkTopics, n.Topics()[0])
			}
		}
	}
	for _, s := range storeNames {
		if procs := t.stores[s].Processors; len(procs) > 0 {
			sub := byRoot[find(t.index[procs[0]])]
			sub.Stores = append(sub.Stores, s)
		}
	}
}

// topologicalOrder lists nodes parents-first, keeping insertion order where
// the graph leaves a choice.
func (t *Topology) topologicalOrder() []string {
	indeg := map[string]int{}
	for _, n := range t.nodes {
		indeg[n.Name()] = len(n.Parents())
	}
	var order []string
	emitted := map[string]bool{}
	for len(order) < len(t.nodes) {
		for _, n := range t.nodes {
			name := n.Name()
			if emitted[name] || indeg[name] > 0 {
				continue
			}
			emitted[name] = true
			order = append(order, name)
			for _, c := range t.children[name] {
				indeg[c]--
			}
			break
		}
	}
	return order
}

// Node returns the node called name.
func (t *Topology) Node(name string) (Node, bool) {
	i, ok := t.index[name]
	if !ok {
		return nil, false
	}
	return t.nodes[i], true
}

// Children returns the names of a node's children, in declaration order.
func (t *Topology) Children(name string) []string { return t.children[name] }

// Store returns the spec of the store called name.
func (t *Topology) Store(name string) (*StoreSpec, bool) {
	s, ok := t.stores[name]
	return s, ok
}

// Subtopologies returns the topology's sub-topologies, ordered by ID.
func (t *Topology) Subtopologies() []*Subtopology { return t.subs }

// Describe renders the topology as text in the manner of Kafka Streams'
// TopologyDescription. applicationID names the changelog topics.
func (t *Topology) Describe(applicationID string) string {
	var b strings.Builder
	b.WriteString("Topologies:\n")
	for _, sub := range t.subs {
		fmt.Fprintf(&b, "   Sub-topology: %d\n", sub.ID)
		for _, name := range sub.Nodes {
			n := t.nodes[t.index[name]]
			switch n.Kind() {
			case KindSource:
				fmt.Fprintf(&b, "    Source: %s (topics: [%s])\n", name, strings.Join(n.Topics(), ", "))
			case KindProcessor:
				fmt.Fprintf(&b, "    Processor: %s (stores: [%s])\n", name, strings.Join(t.storesOf(name), ", "))
			default:
				fmt.Fprintf(&b, "    %s: %s (topic: %s)\n", n.Kind(), name, n.Topics()[0])
			}
			if cs := t.children[name]; len(cs) > 0 {
				fmt.Fprintf(&b, "      --> %s\n", strings.Join(cs, ", "))
			} else {
				b.WriteString("      --> none\n")
			}
			if ps := n.Parents(); len(ps) > 0 {
				fmt.Fprintf(&b, "      <-- %s\n", strings.Join(ps, ", "))
			}
		}
		for _, s := range sub.Stores {
			spec := t.stores[s]
			kind := "in-memory"
			if spec.Persistent {
				kind = "persistent"
			}
			log := "not logged"
			if spec.Logged {
				log = "changelog " + ChangelogTopic(applicationID, s)
			}
			extra := ""
			if spec.Options.TTL > 0 {
				extra = ", ttl " + spec.Options.TTL.String()
			} else if spec.Options.Expiring {
				extra = ", per-entry expiry"
			}
			fmt.Fprintf(&b, "    Store: %s (%s, %s%s)\n", s, kind, log, extra)
		}
	}
	for _, s := range t.GlobalStores() {
		spec := t.stores[s]
		kind := "in-memory"
		if spec.Persistent {
			kind = "persistent"
		}
		fmt.Fprintf(&b, "   Global store: %s (%s, topic: %s, every partition on every instance, no changelog)\n", s, kind, spec.GlobalTopic)
		fmt.Fprintf(&b, "      read by: %s\n", strings.Join(spec.Processors, ", "))
	}
	return b.String()
}

// GlobalStores returns the names of the global stores, sorted.
func (t *Topology) GlobalStores() []string {
	var out []string
	for _, s := range slices.Sorted(maps.Keys(t.stores)) {
		if t.stores[s].GlobalTopic != "" {
			out = append(out, s)
		}
	}
	return out
}

func (t *Topology) storesOf(processor string) []string {
	var out []string
	for _, s := range slices.Sorted(maps.Keys(t.stores)) {
		if slices.Contains(t.stores[s].Processors, processor) {
			out = append(out, s)
		}
	}
	return out
}

// StoresOf returns the stores connected to a processor, sorted by name.
func (t *Topology) StoresOf(processor string) []string { return t.storesOf(processor) }
