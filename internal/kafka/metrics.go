package kafka

import (
	"github.com/prometheus/client_golang/prometheus"
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
}

// newMetrics creates the runtime's metrics and registers them with reg
// (nil: nowhere); it fails if reg holds any of them already.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .15, .25, .5, 1, 2.5, 5, 10}
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
			Name: "exactly_record_e2e_latency_seconds", Help: "From a record's timestamp to the commit of its effects (KIP-613).", Buckets: latency}),
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
	if reg != nil {
		for _, c := range []prometheus.Collector{m.processed, m.processLatency, m.commits, m.commitLatency, m.transactions, m.rebalances,
			m.restored, m.restoreLeft, m.lag, m.e2eLatency, m.deadLetters, m.tasks, m.outputsProduced, m.produceErrors, m.workerReplacements, m.stalledWorkers,
			m.pollLatency, m.restoreDuration, m.rebalanceDuration, m.fencedProducers, m.commitFailures, m.taskProcessed,
			m.standbyTasks, m.standbyLag, m.standbyRecords} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
