package kafka

import (
	"context"
	"errors"
	"net"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// metrics are the runtime's Prometheus metrics, named after Kafka Streams'
// meanings.
type metrics struct {
	processed          prometheus.Counter
	processLatency     prometheus.Histogram
	commits            prometheus.Counter
	commitLatency      prometheus.Histogram
	transactions       *prometheus.CounterVec
	rebalances         *prometheus.CounterVec
	restored           *prometheus.CounterVec
	restoreLeft        *prometheus.GaugeVec
	lag                *prometheus.GaugeVec
	e2eLatency         prometheus.Histogram
	deadLetters        *prometheus.CounterVec
	tasks              prometheus.Gauge
	outputsProduced    prometheus.Counter
	produceErrors      *prometheus.CounterVec
	workerReplacements prometheus.Counter
	stalledWorkers     prometheus.Gauge
	pollLatency        prometheus.Histogram
	restoreDuration    prometheus.Histogram
	rebalanceDuration  prometheus.Histogram
	fencedProducers    prometheus.Counter
	commitFailures     *prometheus.CounterVec
	taskProcessed      *prometheus.CounterVec
	standbyTasks       prometheus.Gauge
	standbyLag         *prometheus.GaugeVec
	standbyRecords     *prometheus.CounterVec

	// recordCommitLatency and its two series: since the broker's append
	// (LogAppendTime inputs) and since this instance's fetch.
	recordCommitLatency                               *prometheus.HistogramVec
	commitLatencySinceAppend, commitLatencySinceFetch prometheus.Observer
	produceRetries                                    prometheus.Counter
}

// newMetrics creates the runtime's metrics and registers them with reg
// (nil: nowhere); it fails if reg holds any of them already.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .15, .25, .5, 1, 2.5, 5, 10}
	// A record can wait in its topic for minutes behind a backlog, and
	// carry an event time hours or days old.
	recordLatency := append(slices.Clip(latency), 30, 60, 120, 300, 600)
	eventTimeLag := append(slices.Clip(recordLatency), 1800, 3600, 6*3600, 24*3600, 7*24*3600)
	m := &metrics{
		processed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactly_records_processed_total", Help: "Input records processed (including ones later aborted and reprocessed)."}),
		processLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "exactly_process_latency_seconds", Help: "Average time to process one record, observed per polled batch.",
			Buckets: prometheus.ExponentialBuckets(1e-7, 4, 12)}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactly_commits_total", Help: "Commits attempted."}),
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "exactly_commit_latency_seconds", Help: "Time to produce a commit's records and commit it.", Buckets: latency}),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactly_transactions_total", Help: "Transactions ended, by result (committed, aborted)."}, []string{"result"}),
		rebalances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactly_rebalances_total", Help: "Rebalances that changed this member's partitions, by kind (assigned, revoked, lost)."}, []string{"kind"}),
		restored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactly_restore_records_total", Help: "Changelog records applied to stores while restoring (and global stores' topic records while bootstrapping)."}, []string{"store"}),
		restoreLeft: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "exactly_restore_remaining_records", Help: "Changelog offsets left to restore."}, []string{"store", "partition"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "exactly_consumer_lag", Help: "Offsets between the committed offset and the partition's last stable offset (as last fetched), per input partition; set at each commit."}, []string{"topic", "partition"}),
		e2eLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "exactly_record_e2e_latency_seconds", Help: "Event-time lag: from a record's timestamp (its event time when the producer sets one) to the commit of its effects (KIP-613).", Buckets: eventTimeLag}),
		recordCommitLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "exactly_record_commit_latency_seconds", Help: "Pipeline latency: from a record's append to its input topic to the commit of its effects; since=append for LogAppendTime topics (the broker's append time), since=fetch otherwise (the time this instance polled it: Kafka keeps no append time for CreateTime topics).", Buckets: recordLatency}, []string{"since"}),
		produceRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactly_produce_request_retries_total", Help: "Produce requests that failed on the way (connection lost, no answer in time) and whose records franz-go sends again."}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactly_dead_letter_records_total", Help: "Records committed to dead-letter topics."}, []string{"topic"}),
		tasks: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exactly_active_tasks", Help: "Tasks this instance runs."}),
		outputsProduced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactly_records_produced_total", Help: "Output and changelog records produced (including aborted ones)."}),
		stalledWorkers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exactly_stalled_workers", Help: "Workers holding processed work uncommitted for longer than StallTimeout; the instance is unhealthy while it is above 0."}),
		workerReplacements: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactly_worker_replacements_total", Help: "Workers started again after a fatal error (OnFatalError ReplaceWorker)."}),
		standbyTasks: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "exactly_standby_tasks", Help: "Standby tasks this instance keeps (Config.StandbyReplicas)."}),
		standbyLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "exactly_standby_lag_records", Help: "Changelog offsets a standby store partition is behind the changelog's read_committed end, as last fetched: what its promotion would restore."}, []string{"store", "partition"}),
		standbyRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactly_standby_records_total", Help: "Changelog records applied to standby stores."}, []string{"store"}),
		produceErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactly_produce_errors_total", Help: "Records the broker did not take, by topic and kind: refused (for good: too large, invalid), unknown-topic (deleted or recreated), transient."}, []string{"topic", "kind"}),
		pollLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "exactly_poll_latency_seconds", Help: "Time one poll waited for records (at most until the next commit is due).", Buckets: latency}),
		restoreDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "exactly_restore_duration_seconds", Help: "Time to restore the stores of one task from its changelogs.", Buckets: latency}),
		rebalanceDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "exactly_rebalance_duration_seconds", Help: "Time a worker spent rebalancing (joining the group and restoring its new tasks) before it processed again.", Buckets: latency}),
		fencedProducers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "exactly_fenced_producers_total", Help: "Sessions ended because the broker fenced their producer or group membership (a newer instance took over)."}),
		commitFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactly_commit_failures_total", Help: "Commits that failed and made the worker start its tasks again from the last commit, by stage (begin, produce, end-transaction, offsets)."}, []string{"stage"}),
		taskProcessed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "exactly_task_records_processed_total", Help: "Input records processed per task (including ones later aborted and reprocessed): key skew shows as uneven tasks."}, []string{"task"}),
	}
	m.commitLatencySinceAppend = m.recordCommitLatency.WithLabelValues("append")
	m.commitLatencySinceFetch = m.recordCommitLatency.WithLabelValues("fetch")
	if reg != nil {
		for _, c := range []prometheus.Collector{m.processed, m.processLatency, m.commits, m.commitLatency, m.transactions, m.rebalances,
			m.restored, m.restoreLeft, m.lag, m.e2eLatency, m.deadLetters, m.tasks, m.outputsProduced, m.produceErrors, m.workerReplacements, m.stalledWorkers,
			m.pollLatency, m.restoreDuration, m.rebalanceDuration, m.fencedProducers, m.commitFailures, m.taskProcessed,
			m.standbyTasks, m.standbyLag, m.standbyRecords, m.recordCommitLatency, m.produceRetries} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// recordTimes are the instants a record's latencies are measured from, in
// epoch milliseconds.
type recordTimes struct {
	timestamp int64 // the record's own: its event time, when its producer set one
	arrived   int64 // its append to the topic, or its fetch by this instance
	appended  bool  // arrived is the broker's append time
}

// timesOf returns rec's times; fetched is when this instance's poll
// returned it. Only a LogAppendTime topic tells when a record was appended:
// there the broker overwrites the timestamp with its append time (franz-go
// hands the batch's MaxTimestamp to every record). A CreateTime batch
// carries the producer's timestamps and nothing of the broker's clock.
func timesOf(rec *kgo.Record, fetched int64) recordTimes {
	ts := rec.Timestamp.UnixMilli()
	if rec.Attrs.TimestampType() == 1 {
		return recordTimes{timestamp: ts, arrived: ts, appended: true}
	}
	return recordTimes{timestamp: ts, arrived: fetched}
}

// observeCommitted observes the event-time lag and the pipeline latency of
// records whose effects committed at now (epoch milliseconds). It runs
// once per record and allocates nothing.
func (m *metrics) observeCommitted(records []recordTimes, now int64) {
	for _, r := range records {
		m.e2eLatency.Observe(float64(now-r.timestamp) / 1000)
		// An append time ahead of this instance's clock is skew, not speed.
		latency := float64(max(now-r.arrived, 0)) / 1000
		if r.appended {
			m.commitLatencySinceAppend.Observe(latency)
		} else {
			m.commitLatencySinceFetch.Observe(latency)
		}
	}
}

// produceRetryHook counts produce requests that failed on the way: no
// answer, or a connection lost. franz-go sends their record batches again
// (the idempotent producer's sequence numbers keep that free of
// duplicates), and says so through no other hook. A broker's retriable
// answer for one partition (NOT_LEADER_OR_FOLLOWER while a leader moves) is
// retried as silently and reaches no hook at all, so it is not counted.
type produceRetryHook struct{ retries prometheus.Counter }

// OnBrokerE2E implements kgo.HookBrokerE2E.
func (h produceRetryHook) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	err := e2e.Err()
	if key != int16(kmsg.Produce) || err == nil {
		return
	}
	// A client closing (the membership ended) fails its requests for good.
	if errors.Is(err, kgo.ErrClientClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) {
		return
	}
	h.retries.Inc()
}
