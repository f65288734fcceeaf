package kafka

import (
	"context"
	"slices"

	"github.com/exactly-go/exactly/internal/crashpoint"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/twmb/franz-go/pkg/kgo"
)

func (w *worker) closeTask(lt *liveTask, abort bool) {
	w.r.setQueryable(lt.id, nil)
	if abort {
		lt.task.Abort()
	}
	if err := lt.task.Close(); err != nil {
		w.log.Warn("close task", "task", lt.id, "err", err)
	}
	lt.closeStores()
	for _, topic := range lt.task.SourceTopics() {
		delete(w.byInput, task.TopicPartition{Topic: topic, Partition: lt.id.Partition})
	}
	w.r.metrics.tasks.Dec()
	w.r.standbys.activeClosed(lt.id)
}

func (w *worker) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	if len(assigned) > 0 {
		crashpoint.Reach(crashpoint.InRebalance)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.assigned = true
	w.txnSpannedRebalance = true
	if len(assigned) > 0 {
		w.r.metrics.rebalances.WithLabelValues("assigned").Inc()
		w.rebalancing()
	}
	for topic, ps := range assigned {
		w.pending[topic] = append(w.pending[topic], ps...)
	}
	if end := w.endPoll.Load(); end != nil && len(assigned) > 0 {
		(*end)() // start the new tasks now, not at the poll's deadline
	}
	w.log.Info("partitions assigned", "partitions", assigned, "assignment", w.assignment())
}

// assignment is every input partition the worker holds now, restored or
// not, by topic.
func (w *worker) assignment() map[string][]int32 {
	out := map[string][]int32{}
	for tp := range w.byInput {
		out[tp.Topic] = append(out[tp.Topic], tp.Partition)
	}
	for topic, ps := range w.pending {
		out[topic] = append(out[topic], ps...)
	}
	for topic := range out {
		slices.Sort(out[topic])
		out[topic] = slices.Compact(out[topic])
	}
	return out
}

func (w *worker) onRevoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	if len(revoked) > 0 {
		crashpoint.Reach(crashpoint.InRebalance)
	}
	if w.finalCommit.Load() {
		w.revokedInFinalCommit("revoked", revoked)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(revoked) == 0 {
		return // a rebalance that takes nothing from this member
	}
	w.r.metrics.rebalances.WithLabelValues("revoked").Inc()
	var commitErr error
	if !w.eos {
		// Hand the partitions over with their work committed.
		commitCtx, cancel := context.WithTimeout(ctx, w.commitTimeout())
		commitErr = w.commit(commitCtx)
		cancel()
	}
	// Under exactly_once_v2 the session aborts the open transaction: the
	// revoked tasks' work is discarded here, the others' at the next End.
	w.txnRebalanced = true
	w.dropTasks(revoked, w.eos || commitErr != nil)
	w.log.Info("partitions revoked", "partitions", revoked, "assignment", w.assignment())
	if commitErr != nil {
		w.log.Warn("commit on revocation failed", "err", commitErr)
		w.restartTasks()
	}
}

// revokedInFinalCommit is what the revocation and loss callbacks do during
// the session's final commit: nothing to the tasks. They must not wait for
// mu, which the commit holds: under exactly_once_v2 the commit's End waits
// for the lock franz-go's session holds around these callbacks, so waiting
// would deadlock. Leaving the tasks alone is safe: no record is processed
// after the final commit began; under exactly_once_v2 the session aborts
// the transaction if the revocation came before End looked (or the broker
// refuses the offsets of a generation that moved on), and under
// at_least_once the final commit commits the partitions' offsets as the
// callback would have, or fails and the new owner repeats their work.
// The session then closes every task.
func (w *worker) revokedInFinalCommit(what string, partitions map[string][]int32) {
	if len(partitions) == 0 {
		return
	}
	w.r.metrics.rebalances.WithLabelValues(what).Inc()
	w.log.Info("partitions "+what+" during the final commit; the session closes their tasks", "partitions", partitions)
}

func (w *worker) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	if w.finalCommit.Load() {
		w.revokedInFinalCommit("lost", lost)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.r.metrics.rebalances.WithLabelValues("lost").Inc()
	w.txnRebalanced = true
	w.dropTasks(lost, true)
	w.log.Warn("partitions lost", "partitions", lost, "assignment", w.assignment())
}

// restartTasks discards every task's uncommitted work and starts the tasks
// again as a new owner would: from the group's committed offsets and their
// changelogs. It is the way back to a known state after a commit whose
// outcome is unknown or that failed half way.
func (w *worker) restartTasks() {
	w.log.Info("restarting the tasks from the committed offsets and changelogs", "tasks", len(w.tasks))
	for id, lt := range w.tasks {
		w.closeTask(lt, true)
		delete(w.tasks, id)
		for _, topic := range lt.task.SourceTopics() {
			w.pending[topic] = append(w.pending[topic], id.Partition)
			w.rewind[task.TopicPartition{Topic: topic, Partition: id.Partition}] = true
		}
	}
}

func (w *worker) dropTasks(partitions map[string][]int32, abort bool) {
	for topic, ps := range partitions {
		for _, p := range ps {
			tp := task.TopicPartition{Topic: topic, Partition: p}
			if lt := w.byInput[tp]; lt != nil {
				w.closeTask(lt, abort)
				delete(w.tasks, lt.id)
			}
			if pend := w.pending[topic]; pend != nil {
				w.pending[topic] = slices.DeleteFunc(pend, func(x int32) bool { return x == p })
			}
		}
	}
}

func compareTaskIDs(a, b topo.TaskID) int {
	if a.Subtopology != b.Subtopology {
		return a.Subtopology - b.Subtopology
	}
	return int(a.Partition - b.Partition)
}
