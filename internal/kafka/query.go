package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrRestoring says this instance cannot answer for a key yet although it
// will: it holds the key's partition and is restoring its state from the
// changelog, or it has not joined the group yet. Retry shortly (HTTP 503
// with Retry-After).
var ErrRestoring = errors.New("the partition's state is being restored on this instance")

// NotLocalError says a key's partition is held by another instance, and at
// which address that instance answers queries when it is known.
type NotLocalError struct {
	Store     string
	Partition int32
	// Host is the ApplicationServer of the instance that holds the
	// partition, as the latest rebalance told every member; "" when no
	// instance can be named (the partition is moving in a rebalance, or its
	// holder advertises no ApplicationServer).
	Host string
}

// Error names the store, the partition and the holder's address.
func (e *NotLocalError) Error() string {
	if e.Host == "" {
		return fmt.Sprintf("store %s partition %d is not held by this instance, and no instance that advertises an application server holds it (rebalancing, or ApplicationServer unset)", e.Store, e.Partition)
	}
	return fmt.Sprintf("store %s partition %d is held by the instance at %s", e.Store, e.Partition, e.Host)
}

// KeyMetadata says where a key of a store lives.
type KeyMetadata struct {
	// ActiveHost is the ApplicationServer of the instance whose task holds
	// the key, "" when none can be named (see NotLocalError.Host).
	ActiveHost string
	// StandbyHosts are the instances keeping standby copies of the key's
	// partition (Config.StandbyReplicas), sorted.
	StandbyHosts []string
	// Partition is the key's partition of the store's source topic.
	Partition int32
}

// Entry is one key and value of a store, as serialized.
type Entry struct{ Key, Value []byte }

// HostTasks are the tasks the instance advertising Host holds.
type HostTasks struct {
	Host             string
	Active, Standbys []topo.TaskID
}

// LocalTask is a task one of this instance's workers holds.
type LocalTask struct {
	ID topo.TaskID
	// Restoring: its stores are being restored (or it waits to be
	// started); it answers no query yet.
	Restoring bool
}

func (r *Runner) setQueryable(id topo.TaskID, t *queryTarget) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.queryable == nil {
		r.queryable = map[topo.TaskID]*queryTarget{}
	}
	if t == nil {
		delete(r.queryable, id)
	} else {
		r.queryable[id] = t
	}
}

// locate returns a store's spec, its sub-topology and the number of
// partitions of the sub-topology's sources.
func (r *Runner) locate(storeName string) (*topo.StoreSpec, *topo.Subtopology, int32, error) {
	spec, ok := r.topo.Store(storeName)
	if !ok || len(spec.Processors) == 0 {
		return nil, nil, 0, fmt.Errorf("unknown store %q", storeName)
	}
	if spec.GlobalTopic != "" {
		return spec, nil, 0, nil // every instance holds all of it (global.go)
	}
	var sub *topo.Subtopology
	for _, s := range r.topo.Subtopologies() {
		if slices.Contains(s.Stores, storeName) {
			sub = s
		}
	}
	r.mu.Lock()
	partitions := r.partitions[sub.SourceTopics[0]]
	r.mu.Unlock()
	if partitions == 0 {
		return nil, nil, 0, fmt.Errorf("store %s: the instance has not joined the group yet: %w", storeName, ErrRestoring)
	}
	return spec, sub, partitions, nil
}

// partitionOf is the partition Kafka's default partitioner (murmur2, as
// franz-go's) gives key on topic.
func partitionOf(topic string, key []byte, partitions int32) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic(topic).Partition(&kgo.Record{Key: key}, int(partitions)))
}

// KeyMetadata says which instance holds key of a store, from what the
// latest rebalance told every member: no request leaves the process.
func (r *Runner) KeyMetadata(storeName string, key []byte) (KeyMetadata, error) {
	spec, sub, partitions, err := r.locate(storeName)
	if err != nil {
		return KeyMetadata{}, err
	}
	if spec.GlobalTopic != "" {
		return KeyMetadata{ActiveHost: r.cfg.ApplicationServer}, nil
	}
	id := topo.TaskID{Subtopology: sub.ID, Partition: partitionOf(sub.SourceTopics[0], key, partitions)}
	active, standbys := r.routes.hostsOf(id)
	return KeyMetadata{ActiveHost: active, StandbyHosts: standbys, Partition: id.Partition}, nil
}

// Get reads key from the committed contents of a store, as held by this
// instance. The partition is the one Kafka's default partitioner gives the
// key on the store's source topic. A key held elsewhere yields a
// *NotLocalError naming the holder's address; a key of a partition this
// instance is restoring yields ErrRestoring. Nothing is asked of the
// brokers.
func (r *Runner) Get(ctx context.Context, storeName string, key []byte) ([]byte, bool, error) {
	spec, sub, partitions, err := r.locate(storeName)
	if err != nil {
		return nil, false, err
	}
	if spec.GlobalTopic != "" {
		return r.globals.Load().get(spec, key)
	}
	id := topo.TaskID{Subtopology: sub.ID, Partition: partitionOf(sub.SourceTopics[0], key, partitions)}
	r.mu.Lock()
	target := r.queryable[id]
	r.mu.Unlock()
	var value []byte
	var found bool
	local := false
	if target != nil {
		local, err = target.read(spec.Persistent, func(backend store.Backend) (err error) {
			value, found, err = committedView(backend, spec).Get(key)
			return err
		})
	}
	if !local {
		return nil, false, r.notServing(storeName, id)
	}
	return value, found, err
}

// Scan returns up to limit entries with from <= key < to (nil: unbounded)
// from the committed contents of the store's partitions this instance
// holds, in the byte order of the serialized keys. While one of them is
// restoring it returns ErrRestoring rather than a partial answer.
func (r *Runner) Scan(ctx context.Context, storeName string, from, to []byte, limit int) ([]Entry, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("store %s: limit %d: give a positive limit", storeName, limit)
	}
	spec, sub, _, err := r.locate(storeName)
	if err != nil {
		return nil, err
	}
	if spec.GlobalTopic != "" {
		return r.globals.Load().scan(spec, from, to, limit)
	}
	targets := map[topo.TaskID]*queryTarget{}
	r.mu.Lock()
	for id, t := range r.queryable {
		if id.Subtopology == sub.ID {
			targets[id] = t
		}
	}
	r.mu.Unlock()
	for _, id := range r.routes.local() {
		if id.Subtopology == sub.ID && targets[id] == nil {
			return nil, fmt.Errorf("store %s partition %d: %w", storeName, id.Partition, ErrRestoring)
		}
	}
	var out []Entry
	for _, id := range slices.SortedFunc(maps.Keys(targets), compareTaskIDs) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// A target closed meanwhile belongs to a partition that moved away.
		_, err := targets[id].read(spec.Persistent, func(backend store.Backend) (err error) {
			out, err = scanCommitted(out, backend, spec, from, to, limit)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("store %s partition %d: %w", storeName, id.Partition, err)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return bytes.Compare(a.Key, b.Key) })
	return out[:min(len(out), limit)], nil
}

// scanCommitted appends to out up to limit entries of the store with from
// <= key < to (nil: unbounded) from a backend holding it.
func scanCommitted(out []Entry, backend store.Backend, spec *topo.StoreSpec, from, to []byte, limit int) ([]Entry, error) {
	it, err := committedView(backend, spec).Range(from, to)
	if err != nil {
		return out, err
	}
	for n := 0; n < limit && it.Next(); n++ {
		out = append(out, Entry{Key: bytes.Clone(it.Key()), Value: bytes.Clone(it.Value())})
	}
	return out, it.Close()
}

// committedView is a store over a backend, which holds committed data
// only. Entries expired but not yet swept remain visible to queries.
func committedView(backend store.Backend, spec *topo.StoreSpec) *store.KV {
	return store.NewTxn(backend).Open(spec.Name, spec.Options, func() int64 { return math.MinInt64 })
}

// notServing is the error for a task this instance does not serve.
func (r *Runner) notServing(storeName string, id topo.TaskID) error {
	if r.routes.assignedHere(id) {
		return fmt.Errorf("store %s partition %d: %w", storeName, id.Partition, ErrRestoring)
	}
	host, _ := r.routes.hostsOf(id)
	if host == r.cfg.ApplicationServer {
		// The assignment names this instance, whose workers have not all
		// taken their part of it yet: no instance can be named right now.
		host = ""
	}
	return &NotLocalError{Store: storeName, Partition: id.Partition, Host: host}
}

// Hosts returns every instance that advertises an ApplicationServer, with
// its tasks, as the latest rebalance told this instance.
func (r *Runner) Hosts() []HostTasks {
	var out []HostTasks
	for host, tasks := range r.routes.hosts() {
		out = append(out, HostTasks{Host: host, Active: tasks.Active, Standbys: tasks.Standby})
	}
	slices.SortFunc(out, func(a, b HostTasks) int { return strings.Compare(a.Host, b.Host) })
	return out
}

// LocalTasks returns the tasks this instance's workers hold, in order.
func (r *Runner) LocalTasks() []LocalTask {
	var out []LocalTask
	for _, id := range r.routes.local() {
		r.mu.Lock()
		_, serving := r.queryable[id]
		r.mu.Unlock()
		out = append(out, LocalTask{ID: id, Restoring: !serving})
	}
	return out
}

// ApplicationServer is the address this instance advertises ("" if none).
func (r *Runner) ApplicationServer() string { return r.cfg.ApplicationServer }

// storeEntries exports exactly_store_entries per store and partition. It
// counts the committed entries of the local stores when scraped, which walks
// each store: scrape it at the usual tens-of-seconds interval.
type storeEntries struct {
	r    *Runner
	desc *prometheus.Desc
}

func newStoreEntries(r *Runner) *storeEntries {
	return &storeEntries{r: r, desc: prometheus.NewDesc("exactly_store_entries",
		"Committed entries of each local store partition (counted at scrape).", []string{"store", "partition"}, nil)}
}

func (s *storeEntries) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *storeEntries) Collect(ch chan<- prometheus.Metric) {
	s.r.mu.Lock()
	targets := maps.Clone(s.r.queryable)
	s.r.mu.Unlock()
	for id, t := range targets {
		for _, name := range s.r.topo.Subtopologies()[id.Subtopology].Stores {
			spec, _ := s.r.topo.Store(name)
			var n int64
			ok, err := t.read(spec.Persistent, func(backend store.Backend) (err error) {
				n, err = committedView(backend, spec).ApproximateNumEntries()
				return err
			})
			if !ok || err != nil {
				continue
			}
			ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(n), name, strconv.Itoa(int(id.Partition)))
		}
	}
}
