package exactly

import (
	"context"
	"fmt"
	"time"

	"github.com/exactly-go/exactly/internal/kafka"
	"github.com/exactly-go/exactly/serde"
)

// Interactive queries read the committed state of an application's stores
// (Kafka Streams' interactive queries). Each instance holds the partitions
// of the tasks it was assigned; with Config.ApplicationServer set on every
// instance, each one knows after every rebalance which instance holds which
// partition, so a query for any key can be routed to the instance holding
// it without asking the brokers. Package httpquery serves all of this over
// HTTP.

// ErrRestoring is returned (wrapped) by queries this instance will answer
// but cannot yet: it holds the key's partition and is restoring its state
// from the changelog, or it has not joined the group yet. Retry shortly; an
// HTTP server answers 503 with Retry-After.
var ErrRestoring = kafka.ErrRestoring

// KeyQueryMetadata says where a key of a store lives (Kafka Streams'
// KeyQueryMetadata).
type KeyQueryMetadata struct {
	// ActiveHost is the Config.ApplicationServer of the instance whose task
	// holds the key; "" when no instance can be named: the key's partition
	// is moving in a rebalance, or its holder sets no ApplicationServer.
	ActiveHost string
	// StandbyHosts are the Config.ApplicationServer addresses of the
	// instances keeping standby copies of the key's partition
	// (Config.StandbyReplicas), sorted; empty without standbys.
	StandbyHosts []string
	// Partition is the key's partition of the store's source topic.
	Partition int32
}

// KeyMetadata says which instance holds key of store. It is computed in the
// process from the assignment the latest rebalance handed every member and
// the partitioner Kafka's producers use by default (murmur2 of the
// serialized key); it sends no request. It assumes, as Kafka Streams does,
// that the store is keyed like its sub-topology's source topic.
func KeyMetadata[K any](app *App, store string, key K) (KeyQueryMetadata, error) {
	kb, err := serializeKey(app, store, key)
	if err != nil {
		return KeyQueryMetadata{}, err
	}
	m, err := app.runner.KeyMetadata(store, kb)
	if err != nil {
		return KeyQueryMetadata{}, err
	}
	standbys := m.StandbyHosts
	if standbys == nil {
		standbys = []string{}
	}
	return KeyQueryMetadata{ActiveHost: m.ActiveHost, StandbyHosts: standbys, Partition: m.Partition}, nil
}

// KeyValue is one entry of a store.
type KeyValue[K, V any] struct {
	Key   K
	Value V
}

// QueryRange returns up to limit entries of store with from <= key < to, in
// the byte order of the serialized keys, from the committed state of the
// partitions this instance holds (other instances hold the rest: ask each
// of them to cover the store). Writes not yet committed are never visible.
// While one of this instance's partitions of the store restores it returns
// ErrRestoring rather than a partial answer. limit must be positive.
func QueryRange[K, V any](ctx context.Context, app *App, store string, from, to K, limit int) ([]KeyValue[K, V], error) {
	fb, err := serializeKey(app, store, from)
	if err != nil {
		return nil, err
	}
	tb, err := serializeKey(app, store, to)
	if err != nil {
		return nil, err
	}
	return scan[K, V](ctx, app, store, fb, tb, limit)
}

// QueryAll returns up to limit entries of store, as QueryRange does, over
// all keys of the partitions this instance holds.
func QueryAll[K, V any](ctx context.Context, app *App, store string, limit int) ([]KeyValue[K, V], error) {
	return scan[K, V](ctx, app, store, nil, nil, limit)
}

func scan[K, V any](ctx context.Context, app *App, store string, from, to []byte, limit int) ([]KeyValue[K, V], error) {
	keys, values, err := storeSerdes[K, V](app, store)
	if err != nil {
		return nil, err
	}
	entries, err := app.runner.Scan(ctx, store, from, to, limit)
	if err != nil {
		return nil, err
	}
	out := make([]KeyValue[K, V], 0, len(entries))
	for _, e := range entries {
		k, err := keys.Deserialize(e.Key)
		if err != nil {
			return nil, fmt.Errorf("store %s: key %q: %w", store, e.Key, err)
		}
		v, err := values.Deserialize(e.Value)
		if err != nil {
			return nil, fmt.Errorf("store %s: value of key %q: %w", store, e.Key, err)
		}
		out = append(out, KeyValue[K, V]{Key: k, Value: v})
	}
	return out, nil
}

// storeSerdes returns the serdes of store, which must hold K -> V.
func storeSerdes[K, V any](app *App, store string) (serde.Serde[K], serde.Serde[V], error) {
	spec, ok := app.topology.Store(store)
	if !ok {
		return nil, nil, fmt.Errorf("unknown store %q", store)
	}
	keys, ok1 := spec.Keys.(serde.Serde[K])
	values, ok2 := spec.Values.(serde.Serde[V])
	if !ok1 || !ok2 {
		var k K
		var v V
		return nil, nil, fmt.Errorf("store %q holds %s -> %s, not %T -> %T", store, spec.KeyType, spec.ValueType, k, v)
	}
	return keys, values, nil
}

func serializeKey[K any](app *App, store string, key K) ([]byte, error) {
	spec, ok := app.topology.Store(store)
	if !ok {
		return nil, fmt.Errorf("unknown store %q", store)
	}
	keys, ok := spec.Keys.(serde.Serde[K])
	if !ok {
		return nil, fmt.Errorf("store %q has keys of type %s, not %T", store, spec.KeyType, key)
	}
	kb, err := keys.Serialize(key)
	if err != nil {
		return nil, fmt.Errorf("store %s: serialize key: %w", store, err)
	}
	return kb, nil
}

// InstanceMetadata describes one instance of the application as the
// latest rebalance assigned it (Kafka Streams' StreamsMetadata).
type InstanceMetadata struct {
	// Host is the instance's Config.ApplicationServer.
	Host string `json:"host"`
	// ActiveTasks are the tasks it processes, as "subtopology_partition".
	ActiveTasks []string `json:"activeTasks"`
	// StandbyTasks are the tasks it keeps standby copies of
	// (Config.StandbyReplicas).
	StandbyTasks []string `json:"standbyTasks"`
}

// Instances returns every instance of the application that advertises an
// ApplicationServer, sorted by host, as the latest rebalance told this
// instance. It sends no request.
func (a *App) Instances() []InstanceMetadata {
	out := []InstanceMetadata{}
	for _, h := range a.runner.Hosts() {
		m := InstanceMetadata{Host: h.Host, ActiveTasks: []string{}, StandbyTasks: []string{}}
		for _, id := range h.Active {
			m.ActiveTasks = append(m.ActiveTasks, id.String())
		}
		for _, id := range h.Standbys {
			m.StandbyTasks = append(m.StandbyTasks, id.String())
		}
		out = append(out, m)
	}
	return out
}

// TaskMetadata describes a task this instance holds.
type TaskMetadata struct {
	// ID is the task, as "subtopology_partition".
	ID string `json:"id"`
	// Restoring is true while its stores are being restored from their
	// changelogs (or it waits to start): its keys answer ErrRestoring.
	Restoring bool `json:"restoring"`
}

// LocalTasks returns the tasks this instance's workers hold, in order.
func (a *App) LocalTasks() []TaskMetadata {
	out := []TaskMetadata{}
	for _, t := range a.runner.LocalTasks() {
		out = append(out, TaskMetadata{ID: t.ID.String(), Restoring: t.Restoring})
	}
	return out
}

// StandbyTaskMetadata describes a standby task this instance keeps
// (Config.StandbyReplicas).
type StandbyTaskMetadata struct {
	// ID is the task, as "subtopology_partition".
	ID string `json:"id"`
	// Lag is how many changelog offsets its stores are behind the
	// changelogs' read_committed end, as last fetched: what taking the task
	// over would restore.
	Lag int64 `json:"lag"`
	// CaughtUp is true once it has reached its changelogs' end since it
	// started.
	CaughtUp bool `json:"caughtUp"`
}

// StandbyTasks returns the standby tasks this instance keeps, in order.
func (a *App) StandbyTasks() []StandbyTaskMetadata {
	out := []StandbyTaskMetadata{}
	for _, t := range a.runner.StandbyTasks() {
		out = append(out, StandbyTaskMetadata{ID: t.ID.String(), Lag: t.Lag, CaughtUp: t.CaughtUp})
	}
	return out
}

// RestoreProgress is where the restore of one store partition from its
// changelog stands (Kafka Streams reports the same through its
// StateRestoreListener).
type RestoreProgress struct {
	// Store and Partition name the store partition; Task is the task
	// restoring it, as "subtopology_partition", or "global" for the
	// bootstrap of a global store's partition.
	Store     string `json:"store"`
	Partition int32  `json:"partition"`
	Task      string `json:"task"`
	// StartOffset is the store's checkpoint when the restore began (0 for
	// a store rebuilt from scratch), EndOffset the changelog offset it
	// restores up to, and Position the offset after the last changelog
	// record read; Position is EndOffset once the restore is done. These
	// are offsets, not records: aborted transactions, their markers and
	// compaction leave gaps.
	StartOffset int64 `json:"startOffset"`
	EndOffset   int64 `json:"endOffset"`
	Position    int64 `json:"position"`
	// Records counts the changelog records read so far.
	Records int64 `json:"records"`
	// Started is when the restore began; Finished when it reached
	// EndOffset, the zero time while it is under way.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
}

// Done reports whether the restore has reached its end.
func (p RestoreProgress) Done() bool { return !p.Finished.IsZero() }

// Fraction is the share of the offsets to restore that are restored, from
// 0 to 1.
func (p RestoreProgress) Fraction() float64 {
	if p.EndOffset <= p.StartOffset {
		return 1
	}
	return float64(p.Position-p.StartOffset) / float64(p.EndOffset-p.StartOffset)
}

// Restores returns the latest restore of each store partition of the tasks
// this instance holds, and the bootstrap of each partition of its global
// stores, under way or finished, sorted by store and partition; a store
// partition whose local copy was already current has none. A restore runs when a task is assigned (from the local checkpoint,
// or from offset 0 for a missing or corrupt store); the instance is ready
// once each of its first tasks' restores is done. Poll it to show progress
// (exactly_restore_remaining_records says the same to Prometheus).
func (a *App) Restores() []RestoreProgress {
	out := []RestoreProgress{}
	for _, p := range a.runner.Restores() {
		task := p.Task.String()
		if p.Global {
			task = "global"
		}
		out = append(out, RestoreProgress{
			Store: p.Store, Partition: p.Partition, Task: task,
			StartOffset: p.StartOffset, EndOffset: p.EndOffset, Position: p.Position, Records: p.Records,
			Started: p.Started, Finished: p.Finished,
		})
	}
	return out
}

// ApplicationServer returns the address this instance advertises for
// queries (Config.ApplicationServer), "" if none.
func (a *App) ApplicationServer() string { return a.runner.ApplicationServer() }
