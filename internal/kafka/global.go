package kafka

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// globalStores are the instance's global stores (topo.StoreSpec.GlobalTopic):
// every partition of each one's topic, read by one consumer of the
// instance's own (no group, read_committed), into backends the tasks read.
// The topics are the stores' changelogs, so nothing is logged: the stores
// are read as a restore reads a changelog (changelog.go), each fetched
// batch applied in one atomic write with the offset after it as the
// checkpoint of its partition. The in-memory stores start empty at every
// start; the persistent ones live in one Pebble store under the state
// directory and read only what their topics gained since their
// checkpoints.
type globalStores struct {
	memory     *store.Memory
	persistent *store.Pebble // nil without persistent global stores
	release    func()        // hands back persistent's directory
	// query is what the tasks, queries and metrics read; closed at stop.
	query     *queryTarget
	positions []*changelogPosition
	targets   map[*changelogPosition]globalPartition
	cl        *kgo.Client   // follows the topics once bootstrapped
	done      chan struct{} // closed when the following goroutine ends
	stopped   sync.Once
}

// globalPartition is one partition of a global store as a changelogTarget:
// the store holds every partition of its topic, each with a checkpoint of
// its own.
type globalPartition struct {
	txn       *store.Txn // used by the global consumer alone
	partition int32
}

func (g globalPartition) Checkpoint(name string) (int64, bool, error) {
	return g.txn.PartitionCheckpoint(name, g.partition)
}

func (g globalPartition) Restore(name string, changes []store.Change, next int64) error {
	return g.txn.RestorePartition(name, g.partition, changes, next)
}

func (g globalPartition) Wipe(name string) error { return g.txn.Wipe(name) }

// globalDir is where the persistent global stores live.
func (r *Runner) globalDir() string { return filepath.Join(r.stateDir, "global") }

// startGlobalStores reads every global store's topic from the store's
// checkpoints to the high watermark it had when the bootstrap began, then
// applies later records in the background until ctx ends or stop is
// called. It returns nil when the topology has no global store. Tasks must
// not start before it returns: Kafka Streams' guarantee that global tables
// are bootstrapped before processing.
func (r *Runner) startGlobalStores(ctx context.Context) (_ *globalStores, err error) {
	names := r.topo.GlobalStores()
	if len(names) == 0 {
		return nil, nil
	}
	g := &globalStores{memory: store.NewMemory(), targets: map[*changelogPosition]globalPartition{}, done: make(chan struct{})}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	memoryTxn := store.NewTxn(g.memory)
	var persistentTxn *store.Txn
	txns := map[string]*store.Txn{}
	for _, name := range names {
		spec, _ := r.topo.Store(name)
		if _, ok := r.partitions[spec.GlobalTopic]; !ok {
			return nil, fmt.Errorf("global store %q reads topic %q, which does not exist: create it before starting %s", name, spec.GlobalTopic, r.cfg.ApplicationID)
		}
		txn := memoryTxn
		if spec.Persistent {
			if g.persistent == nil {
				if g.persistent, g.release, err = r.openStoreDir(ctx, r.globalDir(), r.cfg.Logger.With("global_stores", r.globalDir())); err != nil {
					return nil, fmt.Errorf("open the persistent global stores: %w", err)
				}
				persistentTxn = store.NewTxn(g.persistent)
			}
			txn = persistentTxn
		}
		txn.Open(name, spec.Options, func() int64 { return 0 })
		txns[name] = txn
	}
	g.query = &queryTarget{memory: g.memory, persistent: pebbleOrNil(g.persistent)}
	cl, err := r.changelogClient()
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("create the global stores' consumer: %w", err)}
	}
	defer cl.Close()
	if err := g.openPositions(ctx, r, kadm.NewClient(cl), names, txns); err != nil {
		return nil, err
	}
	started := time.Now()
	restored := map[string]int{}
	apply := func(pos *changelogPosition, next int64) error {
		n, err := pos.apply(g.targets[pos], next)
		if err != nil {
			return fmt.Errorf("bootstrap global store: %w", err)
		}
		restored[pos.store] += n
		r.metrics.restored.WithLabelValues(pos.store).Add(float64(n))
		r.metrics.restoreLeft.WithLabelValues(pos.store, strconv.Itoa(int(pos.partition))).Set(float64(pos.end - next))
		return nil
	}
	for _, pos := range g.positions {
		if pos.applied < pos.end {
			r.restores.beginGlobal(pos, started)
		}
	}
	consumeFrom(cl, g.positions)
	if err := readToEnd(ctx, cl, g.positions, "bootstrap global store", 10000, r.stallLimit(), apply, r.restores.progress); err != nil {
		return nil, err
	}
	if g.persistent != nil {
		// Pebble keeps the tail of its log in memory: without a sync, a
		// process killed soon after the bootstrap would read it all again.
		if err := g.persistent.Sync(); err != nil {
			return nil, fmt.Errorf("sync the persistent global stores: %w", err)
		}
	}
	r.cfg.Logger.Info("global stores bootstrapped", "stores", names, "records", restored, "took", time.Since(started).Round(time.Millisecond))
	if g.cl, err = r.changelogClient(); err != nil {
		return nil, &ConfigError{fmt.Errorf("create the global stores' consumer: %w", err)}
	}
	for _, pos := range g.positions {
		pos.end = math.MaxInt64 // from here on, follow the topics
	}
	consumeFrom(g.cl, g.positions)
	go g.follow(ctx, r)
	return g, nil
}

// openPositions lists the end of every partition of the global stores'
// topics and reads each partition's checkpoint. A store whose partitions
// have no checkpoint at all, or one that is corrupt or past its
// partition's end (the topic was recreated), is wiped and read from the
// start; a partition without a checkpoint beside others that have one (a
// partition added to the topic) is read from its start.
func (g *globalStores) openPositions(ctx context.Context, r *Runner, adm *kadm.Client, names []string, txns map[string]*store.Txn) error {
	var topics []string
	for _, name := range names {
		spec, _ := r.topo.Store(name)
		topics = append(topics, spec.GlobalTopic)
	}
	listCtx, cancel := context.WithTimeout(ctx, r.cfg.SessionTimeout)
	ends, err := adm.ListEndOffsets(listCtx, topics...)
	cancel()
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("list the global topics' ends: %w", err)
	}
	for i, name := range names {
		var positions []*changelogPosition
		var rebuild error
		checkpoints := 0
		for p := range r.partitions[topics[i]] {
			end, ok := ends.Lookup(topics[i], p)
			if !ok {
				return fmt.Errorf("global topic %s has no partition %d", topics[i], p)
			}
			target := globalPartition{txn: txns[name], partition: p}
			cp, ok, err := target.Checkpoint(name)
			switch {
			case err != nil:
				rebuild = err
			case ok && cp > end.Offset:
				rebuild = fmt.Errorf("partition %d: checkpoint %d is past the topic's end %d", p, cp, end.Offset)
			case ok:
				checkpoints++
			}
			pos := &changelogPosition{store: name, topic: topics[i], partition: p, applied: cp, read: cp, end: end.Offset}
			g.targets[pos] = target
			positions = append(positions, pos)
		}
		if rebuild != nil || checkpoints == 0 {
			if rebuild != nil {
				r.cfg.Logger.Warn("global store does not match its topic; rebuilding it from the start", "store", name, "topic", topics[i], "err", rebuild)
			}
			if err := txns[name].Wipe(name); err != nil {
				return fmt.Errorf("wipe global store %s: %w", name, err)
			}
			for _, pos := range positions {
				pos.applied, pos.read = 0, 0
			}
		}
		g.positions = append(g.positions, positions...)
	}
	return nil
}

// follow applies new records until ctx ends or stop is called, each
// fetch's records of a partition in one atomic write with their
// checkpoint. A failed fetch is retried by the client; a failure to apply
// stops following and is logged (the stores then stay as they were).
func (g *globalStores) follow(ctx context.Context, r *Runner) {
	defer close(g.done)
	type partition struct {
		topic string
		p     int32
	}
	byPartition := map[partition]*changelogPosition{}
	for _, pos := range g.positions {
		byPartition[partition{pos.topic, pos.partition}] = pos
	}
	apply := func(pos *changelogPosition, next int64) error {
		_, err := pos.apply(g.targets[pos], next)
		return err
	}
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
			pos := byPartition[partition{fp.Topic, fp.Partition}]
			if err != nil || pos == nil || fp.Err != nil {
				return
			}
			if _, err = pos.take(fp, 10000, apply); err == nil && pos.read > pos.applied {
				err = apply(pos, pos.read)
			}
		})
		if err != nil {
			r.cfg.Logger.Error("global store consumer: applying records failed; the global stores stop following their topics", "err", err)
			return
		}
	}
}

// stop ends the consumer, waits for its goroutine and closes the stores.
// Tasks must have stopped; queries of a global store fail from here on.
func (g *globalStores) stop() {
	if g == nil {
		return
	}
	g.stopped.Do(func() {
		g.cl.Close()
		<-g.done
		g.close()
	})
}

// close closes the stores and hands their directory back.
func (g *globalStores) close() {
	if g.query != nil {
		g.query.close()
	}
	if g.persistent != nil {
		g.persistent.Close()
	}
	if g.release != nil {
		g.release()
	}
}

// backends returns the backends tasks read the global stores from: the
// in-memory ones and the persistent ones (nil without them).
func (g *globalStores) backends() (memory, persistent store.Backend) {
	if g == nil {
		return nil, nil
	}
	return g.memory, pebbleOrNil(g.persistent)
}

// get answers an interactive query of a global store from this instance,
// which holds all of it (what its consumer has applied so far).
func (g *globalStores) get(spec *topo.StoreSpec, key []byte) (value []byte, found bool, err error) {
	ok := false
	if g != nil {
		ok, err = g.query.read(spec.Persistent, func(backend store.Backend) (err error) {
			value, found, err = committedView(backend, spec).Get(key)
			return err
		})
	}
	if !ok {
		return nil, false, fmt.Errorf("store %s: the global stores are not open: %w", spec.Name, ErrRestoring)
	}
	return value, found, err
}

// scan answers a range query of a global store, as get does.
func (g *globalStores) scan(spec *topo.StoreSpec, from, to []byte, limit int) (out []Entry, err error) {
	ok := false
	if g != nil {
		ok, err = g.query.read(spec.Persistent, func(backend store.Backend) (err error) {
			out, err = scanCommitted(out, backend, spec, from, to, limit)
			return err
		})
	}
	if !ok {
		return nil, fmt.Errorf("store %s: the global stores are not open: %w", spec.Name, ErrRestoring)
	}
	return out, err
}
