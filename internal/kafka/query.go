package kafka

import (
	"context"
	"fmt"
	"maps"
	"math"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// NotLocalError says a key's partition is not held by this instance, and
// which group member holds it when that is known.
type NotLocalError struct {
	Store     string
	Partition int32
	Owner     string // instance id or client id@host of the owner, "" if unknown
}

func (e *NotLocalError) Error() string {
	owner := e.Owner
	if owner == "" {
		owner = "no member (unassigned or rebalancing)"
	}
	return fmt.Sprintf("store %s partition %d is not held by this instance; it is held by %s", e.Store, e.Partition, owner)
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

// Get reads key from the committed contents of a store, as held by this
// instance. The partition is the one Kafka's default partitioner gives the
// key on the store's source topic. A key held elsewhere yields a
// *NotLocalError naming the owner.
func (r *Runner) Get(ctx context.Context, storeName string, key []byte) ([]byte, bool, error) {
	spec, ok := r.topo.Store(storeName)
	if !ok || len(spec.Processors) == 0 {
		return nil, false, fmt.Errorf("unknown store %q", storeName)
	}
	var sub *topo.Subtopology
	for _, s := range r.topo.Subtopologies() {
		for _, name := range s.Stores {
			if name == storeName {
				sub = s
			}
		}
	}
	r.mu.Lock()
	partitions := r.partitions[sub.SourceTopics[0]]
	r.mu.Unlock()
	if partitions == 0 {
		return nil, false, fmt.Errorf("store %s: the application has not started", storeName)
	}
	p := int32(kgo.StickyKeyPartitioner(nil).ForTopic(sub.SourceTopics[0]).Partition(&kgo.Record{Key: key}, int(partitions)))
	r.mu.Lock()
	target := r.queryable[topo.TaskID{Subtopology: sub.ID, Partition: p}]
	r.mu.Unlock()
	var value []byte
	var found bool
	var err error
	local := false
	if target != nil {
		local, err = target.read(spec.Persistent, func(backend store.Backend) (err error) {
			// A fresh buffer over the backend reads committed data only.
			// Entries expired but not yet swept remain visible to queries.
			value, found, err = store.NewTxn(backend).Open(storeName, spec.Options, func() int64 { return math.MinInt64 }).Get(key)
			return err
		})
	}
	if !local {
		return nil, false, &NotLocalError{Store: storeName, Partition: p, Owner: r.owner(ctx, sub.SourceTopics[0], p)}
	}
	return value, found, err
}

// owner names the group member assigned topic/partition, if any.
func (r *Runner) owner(ctx context.Context, topic string, partition int32) string {
	cl, err := kgo.NewClient(r.clientOptions()...)
	if err != nil {
		return ""
	}
	defer cl.Close()
	groups, err := kadm.NewClient(cl).DescribeGroups(ctx, r.cfg.ApplicationID)
	if err != nil {
		return ""
	}
	for _, g := range groups {
		for _, m := range g.Members {
			assigned, ok := m.Assigned.AsConsumer()
			if !ok {
				continue
			}
			for _, t := range assigned.Topics {
				if t.Topic != topic {
					continue
				}
				for _, p := range t.Partitions {
					if p == partition {
						if m.InstanceID != nil && *m.InstanceID != "" {
							return strings.TrimSpace(*m.InstanceID)
						}
						return m.ClientID + "@" + m.ClientHost
					}
				}
			}
		}
	}
	return ""
}

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
				n, err = store.NewTxn(backend).Open(name, spec.Options, func() int64 { return math.MinInt64 }).ApproximateNumEntries()
				return err
			})
			if !ok || err != nil {
				continue
			}
			ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(n), name, strconv.Itoa(int(id.Partition)))
		}
	}
}
