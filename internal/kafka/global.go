package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// globalStores are the instance's global stores (topo.StoreSpec.GlobalTopic):
// every partition of each one's topic, read by one consumer of the
// instance's own (no group, read_committed), in one in-memory backend that
// the tasks read. The topics are the stores' changelogs, so nothing is
// logged and nothing survives the process: each start reads the topics
// again from their beginning.
type globalStores struct {
	backend *store.Memory
	txn     *store.Txn           // used by the consumer's goroutine alone
	kvs     map[string]*store.KV // by topic
	cl      *kgo.Client
	done    chan struct{} // closed when the consumer's goroutine ends
	stopped sync.Once
}

// startGlobalStores reads every global store's topic to the high watermark
// it had when the bootstrap began, then applies later records in the
// background until ctx ends or stop is called. It returns nil when the
// topology has no global store. Tasks must not start before it returns:
// Kafka Streams' guarantee that global tables are bootstrapped before
// processing.
func (r *Runner) startGlobalStores(ctx context.Context) (*globalStores, error) {
	names := r.topo.GlobalStores()
	if len(names) == 0 {
		return nil, nil
	}
	g := &globalStores{backend: store.NewMemory(), kvs: map[string]*store.KV{}, done: make(chan struct{})}
	g.txn = store.NewTxn(g.backend)
	partitions := map[string]map[int32]kgo.Offset{}
	var topics []string
	for _, name := range names {
		spec, _ := r.topo.Store(name)
		topic := spec.GlobalTopic
		n, ok := r.partitions[topic]
		if !ok {
			return nil, fmt.Errorf("global store %q reads topic %q, which does not exist: create it before starting %s", name, topic, r.cfg.ApplicationID)
		}
		g.kvs[topic] = g.txn.Open(name, spec.Options, func() int64 { return 0 })
		partitions[topic] = map[int32]kgo.Offset{}
		for p := range n {
			partitions[topic][p] = kgo.NewOffset().AtStart()
		}
		topics = append(topics, topic)
	}
	var err error
	g.cl, err = kgo.NewClient(append(r.clientOptions(),
		kgo.ConsumePartitions(partitions),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(250*time.Millisecond),
	)...)
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("create the global stores' consumer: %w", err)}
	}
	started := time.Now()
	if err := g.bootstrap(ctx, r, topics); err != nil {
		g.cl.Close()
		return nil, err
	}
	r.cfg.Logger.Info("global stores bootstrapped", "stores", names, "took", time.Since(started).Round(time.Millisecond))
	go g.follow(ctx, r)
	return g, nil
}

// apply applies the data records of a fetch to the backend, in one batch.
func (g *globalStores) apply(recs []*kgo.Record) error {
	dirty := false
	for _, rec := range recs {
		if rec.Attrs.IsControl() {
			continue
		}
		kv := g.kvs[rec.Topic]
		var err error
		if rec.Value == nil {
			err = kv.Delete(rec.Key)
		} else {
			err = kv.Put(rec.Key, rec.Value)
		}
		if err != nil {
			return err
		}
		dirty = true
	}
	if !dirty {
		return nil
	}
	return g.txn.Commit(nil)
}

// bootstrap reads each partition up to its high watermark at the start.
// As a restore does, it ends on the fetch position, never on a particular
// record (the last offsets may be transaction markers or aborted data),
// and waits at most for open transactions on the topics to end.
func (g *globalStores) bootstrap(ctx context.Context, r *Runner, topics []string) error {
	adm := kadm.NewClient(g.cl)
	listCtx, cancel := context.WithTimeout(ctx, r.cfg.SessionTimeout)
	ends, err := adm.ListEndOffsets(listCtx, topics...)
	cancel()
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("list the global topics' ends: %w", err)
	}
	type partition struct {
		topic   string
		p       int32
		end     int64
		empties int
	}
	left := map[string]*partition{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[fmt.Sprint(o.Topic, "/", o.Partition)] = &partition{topic: o.Topic, p: o.Partition, end: o.Offset}
		}
	})
	stallLimit := 2*r.cfg.TransactionTimeout + 10*time.Second
	lastProgress := time.Now()
	for len(left) > 0 {
		pollCtx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := g.cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var err error
		fetches.EachError(func(topic string, p int32, ferr error) {
			if !errors.Is(ferr, context.DeadlineExceeded) && err == nil {
				err = fmt.Errorf("bootstrap global topic %s/%d: %w", topic, p, ferr)
			}
		})
		if err != nil {
			return err
		}
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if err != nil || fp.Err != nil {
				return
			}
			if len(fp.Records) > 0 {
				lastProgress = time.Now()
				if err = g.apply(fp.Records); err != nil {
					return
				}
			}
			pt := left[fmt.Sprint(fp.Topic, "/", fp.Partition)]
			if pt == nil {
				return
			}
			reached := len(fp.Records) > 0 && fp.Records[len(fp.Records)-1].Offset+1 >= pt.end
			if len(fp.Records) == 0 && fp.LastStableOffset >= pt.end {
				pt.empties++
				reached = pt.empties >= 2
			} else {
				pt.empties = 0
			}
			if reached {
				delete(left, fmt.Sprint(fp.Topic, "/", fp.Partition))
			}
		})
		if err != nil {
			return err
		}
		if time.Since(lastProgress) > stallLimit {
			for _, pt := range left {
				return fmt.Errorf("bootstrap global topic %s/%d made no progress for %v below its end %d: a transaction on it neither commits nor aborts",
					pt.topic, pt.p, stallLimit, pt.end)
			}
		}
	}
	return nil
}

// follow applies new records until ctx ends or stop is called. A failed
// fetch is retried by the client; a failure to apply stops following and
// is logged (the stores then stay as they were).
func (g *globalStores) follow(ctx context.Context, r *Runner) {
	defer close(g.done)
	for {
		fetches := g.cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, p int32, err error) {
			r.cfg.Logger.Warn("global store consumer: fetch failed; retrying", "topic", topic, "partition", p, "err", err)
		})
		var err error
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if err == nil && fp.Err == nil {
				err = g.apply(fp.Records)
			}
		})
		if err != nil {
			r.cfg.Logger.Error("global store consumer: applying records failed; the global stores stop following their topics", "err", err)
			return
		}
	}
}

// stop ends the consumer and waits for its goroutine.
func (g *globalStores) stop() {
	if g == nil {
		return
	}
	g.stopped.Do(func() {
		g.cl.Close()
		<-g.done
	})
}

// storesBackend returns the backend tasks read the global stores from
// (nil without global stores).
func (g *globalStores) storesBackend() store.Backend {
	if g == nil {
		return nil
	}
	return g.backend
}

// get answers an interactive query of a global store from this instance,
// which holds all of it (what its consumer has applied so far).
func (g *globalStores) get(spec *topo.StoreSpec, key []byte) ([]byte, bool, error) {
	if g == nil {
		return nil, false, fmt.Errorf("store %s: the global stores are not bootstrapped yet: %w", spec.Name, ErrRestoring)
	}
	return committedView(g.backend, spec).Get(key)
}

// scan answers a range query of a global store, as get does.
func (g *globalStores) scan(spec *topo.StoreSpec, from, to []byte, limit int) ([]Entry, error) {
	if g == nil {
		return nil, fmt.Errorf("store %s: the global stores are not bootstrapped yet: %w", spec.Name, ErrRestoring)
	}
	it, err := committedView(g.backend, spec).Range(from, to)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for n := 0; n < limit && it.Next(); n++ {
		out = append(out, Entry{Key: bytes.Clone(it.Key()), Value: bytes.Clone(it.Value())})
	}
	return out, it.Close()
}
