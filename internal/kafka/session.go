package kafka

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/exactly-go/exactly/internal/store"
	"github.com/exactly-go/exactly/internal/task"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// membership is the state of one group membership, from join to close.
// Each session builds a new one, so nothing of an ended membership (its
// tasks, an open transaction, sends in flight, a failure) leaks into the
// next; a send's callback writes into the membership it was sent in, where
// nobody reads once that membership is over.
type membership struct {
	sess *kgo.GroupTransactSession // exactly_once_v2 only
	cl   *kgo.Client
	adm  *kadm.Client

	tasks   map[topo.TaskID]*liveTask
	byInput map[task.TopicPartition]*liveTask
	pending map[string][]int32 // assigned, not yet restored
	// rewind holds the partitions whose consumer position must move to the
	// group's committed offset when their task starts again.
	rewind   map[task.TopicPartition]bool
	assigned bool // the group has assigned this member its partitions

	lastCommit time.Time
	timestamps []int64 // record timestamps since the last commit
	fatal      error   // a failure that must stop the worker

	inTxn bool // a transaction is open (exactly_once_v2)
	// txnRebalanced: partitions were revoked or lost since the last End, so
	// the session aborts the next transaction (a known outcome), as
	// franz-go's GroupTransactSession does.
	txnRebalanced bool
	// txnSpannedRebalance: a rebalance completed since the last End (an
	// abort then is expected: the generation moved on).
	txnSpannedRebalance bool

	// produceCtx governs sends. It outlives the run's context, so that
	// records sent before a shutdown still reach the final commit; it ends
	// with the session, or when the shutdown's commit runs out of time.
	produceCtx    context.Context
	cancelProduce context.CancelFunc
	inflight      sync.WaitGroup // records sent and not yet acknowledged
	produceMu     sync.Mutex
	produceErr    error // the first failed send of the current commit
	refused       []refusal
	deadLetters   map[string]int // dead letters sent in the current commit, by topic
}

type liveTask struct {
	id topo.TaskID
	// committed holds, per input partition, the offset the group has
	// committed for it (-1: none yet).
	committed map[task.TopicPartition]int64
	// stableEnd holds, per input partition, the last stable offset the
	// latest fetch reported; dataEnd the offset after the last record
	// fetched, seenEnd the offset after the last record or transaction
	// marker fetched.
	dataEnd, seenEnd map[task.TopicPartition]int64
	stableEnd        map[task.TopicPartition]int64
	task             *task.Task
	memory           *store.Memory
	persistent       *store.Pebble
	release          func() // hands the task directory back (with persistent)
	processed        prometheus.Counter
	query            *queryTarget // what interactive queries and metrics read
	restored         int64        // changelog records restored, for the restore's span
}

// join makes a new membership the worker's current one and creates its
// clients, under mu: the group may call the rebalance callbacks as soon as
// the client exists, and they must find the membership complete. The
// caller cancels its produceCtx when the session ends.
func (w *worker) join(ctx context.Context) (*membership, error) {
	m := &membership{
		tasks:       map[topo.TaskID]*liveTask{},
		byInput:     map[task.TopicPartition]*liveTask{},
		pending:     map[string][]int32{},
		rewind:      map[task.TopicPartition]bool{},
		deadLetters: map[string]int{},
		lastCommit:  time.Now(),
	}
	m.produceCtx, m.cancelProduce = context.WithCancel(context.WithoutCancel(ctx))
	w.mu.Lock()
	defer w.mu.Unlock()
	w.membership = m
	w.finalCommit.Store(false)
	var err error
	if w.eos {
		m.sess, err = kgo.NewGroupTransactSession(w.clientOptions()...)
		if err != nil {
			m.cancelProduce()
			return nil, &ConfigError{fmt.Errorf("create transactional session: %w", err)}
		}
		m.cl = m.sess.Client()
	} else {
		m.cl, err = kgo.NewClient(w.clientOptions()...)
		if err != nil {
			m.cancelProduce()
			return nil, &ConfigError{fmt.Errorf("create client: %w", err)}
		}
	}
	m.adm = kadm.NewClient(m.cl)
	return m, nil
}

// shutdown commits what is pending and closes the tasks; the session's
// deferred close leaves the group.
func (w *worker) shutdown() {
	// From here on rebalances are not blocked (the last poll allowed
	// them), and a revocation may come while the final commit holds mu:
	// the callbacks must not wait for it (see onRevoked).
	w.finalCommit.Store(true)
	w.mu.Lock()
	defer w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), min(shutdownGrace, w.commitTimeout()))
	defer cancel()
	stop := context.AfterFunc(ctx, w.cancelProduce)
	defer stop()
	if err := w.commit(ctx); err != nil {
		w.log.Warn("final commit failed", "err", err)
		w.abortAll()
	}
	w.log.Info("final commit done; closing the tasks")
}

// closeSession closes every task without applying anything uncommitted and
// closes the client.
func (w *worker) closeSession(ctx context.Context) {
	w.mu.Lock()
	for id, lt := range w.tasks {
		w.closeTask(lt, false)
		delete(w.tasks, id)
	}
	w.byInput = map[task.TopicPartition]*liveTask{}
	w.mu.Unlock()
	if w.r.cfg.InstanceID != "" && !w.r.cfg.LeaveGroupOnClose {
		w.cl.CloseAllowingRebalance()
		w.log.Info("session closed; as a static member this worker stays in the group until its session times out", "session_timeout", w.r.cfg.SessionTimeout)
		return
	}
	leaveCtx, cancel := context.WithTimeout(context.Background(), w.r.cfg.SessionTimeout)
	defer cancel()
	if err := w.cl.LeaveGroupContext(leaveCtx); err != nil {
		w.log.Warn("leaving the group failed; the broker expires this member after the session timeout", "err", err)
	}
	if id := w.instanceID(); id != "" {
		// franz-go keeps a static member in the group when it leaves (so
		// that a restart takes its partitions back); a LeaveGroup naming
		// the instance id hands them over now.
		resp, err := w.adm.LeaveGroup(leaveCtx, kadm.LeaveGroup(w.r.cfg.ApplicationID).InstanceIDs(id))
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			w.log.Warn("leaving the group as a static member failed; the broker expires this member after the session timeout", "instance_id", id, "err", err)
		}
	}
	w.cl.Close()
	w.log.Info("session closed; left the group")
}
