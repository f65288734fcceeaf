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
			Name: "exactly_restore_records_total", Help: "Changelog records applied to stores while restoring."}, []string{"store"}),
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
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.processed, m.processLatency, m.commits, m.commitLatency, m.transactions, m.rebalances,
			m.restored, m.restoreLeft, m.lag, m.e2eLatency, m.deadLetters, m.tasks, m.outputsProduced, m.produceErrors, m.workerReplacements, m.stalledWorkers,
			m.standbyTasks, m.standbyLag, m.standbyRecords} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
