package httpapi

import (
	_ "embed"
	"maps"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Metric names the status summarises: the runtime's and the ready
// processors'. A metric that is not registered reads as zero.
const (
	metricProcessed    = "exactly_records_processed_total"
	metricProduced     = "exactly_records_produced_total"
	metricLag          = "exactly_consumer_lag"
	metricTransactions = "exactly_transactions_total"
	metricDeadLetters  = "exactly_dead_letter_records_total"
	metricActiveTasks  = "exactly_active_tasks"
	metricRebalances   = "exactly_rebalances_total"
	metricRestored     = "exactly_restore_records_total"
	metricProduceErr   = "exactly_produce_errors_total"
	metricRetries      = "exactly_produce_request_retries_total"
	metricEventTimeLag = "exactly_record_e2e_latency_seconds"
	metricPipeline     = "exactly_record_commit_latency_seconds"
	metricDuplicates   = "duplicates_skipped_total"
	metricConflicting  = "duplicates_conflicting_total"
	metricBuffered     = "events_buffered_total"
	metricBufferSize   = "buffer_size"
	metricExpired      = "events_expired_total"
)

// Totals are the instance's metrics at one moment: counters since the
// process started, gauges as they stand.
type Totals struct {
	Processed             float64            `json:"processed"`
	Produced              float64            `json:"produced"`
	Lag                   float64            `json:"lag"`
	DuplicatesSkipped     float64            `json:"duplicatesSkipped"`
	DuplicatesConflicting float64            `json:"duplicatesConflicting"`
	EventsBuffered        float64            `json:"eventsBuffered"`
	BufferSize            float64            `json:"bufferSize"`
	EventsExpired         float64            `json:"eventsExpired"`
	DeadLetters           float64            `json:"deadLetters"`
	DeadLettersByTopic    map[string]float64 `json:"deadLettersByTopic"`
	TransactionsCommitted float64            `json:"transactionsCommitted"`
	TransactionsAborted   float64            `json:"transactionsAborted"`
	ActiveTasks           float64            `json:"activeTasks"`
	Rebalances            float64            `json:"rebalances"`
	RestoredRecords       float64            `json:"restoredRecords"`
	ProduceErrors         float64            `json:"produceErrors"`
	ProduceRetries        float64            `json:"produceRequestRetries"`
	// PipelineLatencySince says what the pipeline latency is measured
	// from, as the series of exactly_record_commit_latency_seconds with
	// observations: "append" (LogAppendTime inputs: the broker's append
	// time), "fetch" (CreateTime inputs: this instance's fetch), or both.
	PipelineLatencySince []string `json:"pipelineLatencySince"`
	// Histogram sums, counts and buckets, for interval means and
	// quantiles.
	eventTimeLag, pipeline histogram
}

// histogram is a Prometheus histogram summed over its series.
type histogram struct {
	sum, count float64
	buckets    map[float64]float64 // upper bound -> cumulative count
}

func (h *histogram) add(m *dto.Histogram) {
	h.sum += m.GetSampleSum()
	h.count += float64(m.GetSampleCount())
	if h.buckets == nil {
		h.buckets = map[float64]float64{}
	}
	inf := false
	for _, b := range m.GetBucket() {
		h.buckets[b.GetUpperBound()] += float64(b.GetCumulativeCount())
		inf = inf || math.IsInf(b.GetUpperBound(), 1)
	}
	if !inf {
		h.buckets[math.Inf(1)] += float64(m.GetSampleCount())
	}
}

// meanSince is the mean of the observations made after prev, in
// milliseconds; 0 without any.
func (h histogram) meanSince(prev histogram) float64 {
	if n := h.count - prev.count; n > 0 {
		return (h.sum - prev.sum) / n * 1000
	}
	return 0
}

// quantileSince estimates the q-quantile of the observations made after
// prev, in milliseconds, as Prometheus' histogram_quantile does: linear
// within the bucket that holds it, the highest finite bound when it falls
// in the last bucket; 0 without any observation.
func (h histogram) quantileSince(prev histogram, q float64) float64 {
	bounds := slices.Sorted(maps.Keys(h.buckets))
	if len(bounds) == 0 {
		return 0
	}
	total := h.buckets[math.Inf(1)] - prev.buckets[math.Inf(1)]
	if total <= 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, le := range bounds {
		cum := h.buckets[le] - prev.buckets[le]
		if cum >= rank {
			if math.IsInf(le, 1) {
				if i == 0 {
					return 0
				}
				return bounds[i-1] * 1000
			}
			if cum == below {
				return le * 1000
			}
			return (lower + (le-lower)*(rank-below)/(cum-below)) * 1000
		}
		lower, below = le, cum
	}
	return lower * 1000
}

// Sample is one point of the status history: rates over the interval
// since the previous sample, and gauges at its end.
type Sample struct {
	Time                 int64   `json:"t"` // epoch milliseconds
	ProcessedPerSecond   float64 `json:"processedPerSecond"`
	ProducedPerSecond    float64 `json:"producedPerSecond"`
	Lag                  float64 `json:"lag"`
	DuplicatesPerSecond  float64 `json:"duplicatesPerSecond"`
	BufferSize           float64 `json:"bufferSize"`
	ExpiredPerSecond     float64 `json:"expiredPerSecond"`
	DeadLettersPerSecond float64 `json:"deadLettersPerSecond"`
	CommitsPerSecond     float64 `json:"commitsPerSecond"`
	AbortsPerSecond      float64 `json:"abortsPerSecond"`
	// PipelineLatencyMillis and PipelineLatencyP95Millis are the mean and
	// the 95th percentile, over the interval, of the pipeline latency of
	// the records committed in it (exactly_record_commit_latency_seconds);
	// 0 when nothing committed.
	PipelineLatencyMillis    float64 `json:"pipelineLatencyMillis"`
	PipelineLatencyP95Millis float64 `json:"pipelineLatencyP95Millis"`
	// EventTimeLagMillis is the mean event-time lag, over the interval, of
	// the records committed in it: from their timestamps to their commit
	// (exactly_record_e2e_latency_seconds); 0 when nothing committed.
	EventTimeLagMillis    float64 `json:"eventTimeLagMillis"`
	ActiveTasks           float64 `json:"activeTasks"`
	TransactionsCommitted float64 `json:"transactionsCommitted"`
}

// Status is the body of /status.json.
type Status struct {
	Application   string   `json:"application"`
	Instance      string   `json:"instance,omitempty"`
	Ready         bool     `json:"ready"`
	StartedAt     int64    `json:"startedAt"` // epoch milliseconds
	UptimeSeconds float64  `json:"uptimeSeconds"`
	Totals        Totals   `json:"totals"`
	Samples       []Sample `json:"samples"` // oldest first
	// Routing is absent when the server was given no Options.Routing.
	Routing *Routing `json:"routing,omitempty"`
	// Restores are the restores of the instance's store partitions, under
	// way or finished; absent when the server was given no
	// Options.Restores.
	Restores []Restore `json:"restores,omitempty"`
}

// Restore is where the restore of one store partition stands.
type Restore struct {
	Store     string `json:"store"`
	Partition int32  `json:"partition"`
	Task      string `json:"task"`
	// Restored of Total changelog offsets are restored; Percent is their
	// ratio, 100 once Done.
	Restored int64   `json:"restored"`
	Total    int64   `json:"total"`
	Percent  float64 `json:"percent"`
	Done     bool    `json:"done"`
	// Records counts the changelog records restored, RecordsPerSecond
	// their rate since the restore began, over ElapsedSeconds (until it
	// finished, when Done).
	Records          int64   `json:"records"`
	RecordsPerSecond float64 `json:"recordsPerSecond"`
	ElapsedSeconds   float64 `json:"elapsedSeconds"`
}

// restoresOf turns the application's restore progress into the status's.
func restoresOf(progress []exactly.RestoreProgress, now time.Time) []Restore {
	out := make([]Restore, 0, len(progress))
	for _, p := range progress {
		end := now
		if p.Done() {
			end = p.Finished
		}
		elapsed := max(end.Sub(p.Started).Seconds(), 0)
		r := Restore{
			Store: p.Store, Partition: p.Partition, Task: p.Task,
			Restored: p.Position - p.StartOffset, Total: p.EndOffset - p.StartOffset,
			Percent: math.Round(p.Fraction()*1000) / 10, Done: p.Done(),
			Records: p.Records, ElapsedSeconds: elapsed,
		}
		if elapsed > 0 {
			r.RecordsPerSecond = float64(p.Records) / elapsed
		}
		out = append(out, r)
	}
	return out
}

// history is a bounded ring of samples, safe for concurrent use.
type history struct {
	mu      sync.Mutex
	max     int
	samples []Sample
	last    Totals
	lastAt  time.Time
}

func newHistory(max int) *history { return &history{max: max} }

// record gathers reg and appends a sample of the interval since the last
// one. The first call only sets the baseline.
func (h *history) record(reg prometheus.Gatherer, now time.Time) error {
	t, err := gatherTotals(reg)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lastAt.IsZero() {
		h.samples = append(h.samples, sampleBetween(h.last, t, now.Sub(h.lastAt), now))
		if len(h.samples) > h.max {
			h.samples = append(h.samples[:0], h.samples[len(h.samples)-h.max:]...)
		}
	}
	h.last, h.lastAt = t, now
	return nil
}

func (h *history) snapshot() []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Sample, len(h.samples))
	copy(out, h.samples)
	return out
}

func sampleBetween(prev, cur Totals, elapsed time.Duration, at time.Time) Sample {
	secs := elapsed.Seconds()
	rate := func(a, b float64) float64 {
		if secs <= 0 || b < a {
			return 0
		}
		return (b - a) / secs
	}
	return Sample{
		Time:                     at.UnixMilli(),
		ProcessedPerSecond:       rate(prev.Processed, cur.Processed),
		ProducedPerSecond:        rate(prev.Produced, cur.Produced),
		Lag:                      cur.Lag,
		DuplicatesPerSecond:      rate(prev.DuplicatesSkipped, cur.DuplicatesSkipped),
		BufferSize:               cur.BufferSize,
		ExpiredPerSecond:         rate(prev.EventsExpired, cur.EventsExpired),
		DeadLettersPerSecond:     rate(prev.DeadLetters, cur.DeadLetters),
		CommitsPerSecond:         rate(prev.TransactionsCommitted, cur.TransactionsCommitted),
		AbortsPerSecond:          rate(prev.TransactionsAborted, cur.TransactionsAborted),
		PipelineLatencyMillis:    cur.pipeline.meanSince(prev.pipeline),
		PipelineLatencyP95Millis: cur.pipeline.quantileSince(prev.pipeline, 0.95),
		EventTimeLagMillis:       cur.eventTimeLag.meanSince(prev.eventTimeLag),
		ActiveTasks:              cur.ActiveTasks,
		TransactionsCommitted:    cur.TransactionsCommitted,
	}
}

// gatherTotals reads the summarised metrics from reg, summing over labels.
func gatherTotals(reg prometheus.Gatherer) (Totals, error) {
	families, err := reg.Gather()
	t := Totals{DeadLettersByTopic: map[string]float64{}, PipelineLatencySince: []string{}}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			v := value(m)
			switch f.GetName() {
			case metricProcessed:
				t.Processed += v
			case metricProduced:
				t.Produced += v
			case metricLag:
				t.Lag += v
			case metricDuplicates:
				t.DuplicatesSkipped += v
			case metricConflicting:
				t.DuplicatesConflicting += v
			case metricBuffered:
				t.EventsBuffered += v
			case metricBufferSize:
				t.BufferSize += v
			case metricExpired:
				t.EventsExpired += v
			case metricActiveTasks:
				t.ActiveTasks += v
			case metricRebalances:
				t.Rebalances += v
			case metricRestored:
				t.RestoredRecords += v
			case metricProduceErr:
				t.ProduceErrors += v
			case metricRetries:
				t.ProduceRetries += v
			case metricDeadLetters:
				t.DeadLetters += v
				t.DeadLettersByTopic[label(m, "topic")] += v
			case metricTransactions:
				switch label(m, "result") {
				case "committed":
					t.TransactionsCommitted += v
				case "aborted":
					t.TransactionsAborted += v
				}
			case metricEventTimeLag:
				t.eventTimeLag.add(m.GetHistogram())
			case metricPipeline:
				t.pipeline.add(m.GetHistogram())
				if m.GetHistogram().GetSampleCount() > 0 {
					t.PipelineLatencySince = append(t.PipelineLatencySince, label(m, "since"))
				}
			}
		}
	}
	slices.Sort(t.PipelineLatencySince)
	return t, err
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// status builds /status.json from a fresh gather and the history.
func (s *Server) status() Status {
	totals, err := gatherTotals(s.opts.Registry)
	if err != nil {
		s.opts.Logger.Debug("gather metrics for /status.json", "err", err)
	}
	var routing *Routing
	if s.opts.Routing != nil {
		r := s.opts.Routing()
		routing = &r
	}
	var restores []Restore
	if s.opts.Restores != nil {
		restores = restoresOf(s.opts.Restores(), time.Now())
	}
	return Status{
		Routing:       routing,
		Restores:      restores,
		Application:   s.opts.Application,
		Instance:      s.opts.Instance,
		Ready:         s.ready(),
		StartedAt:     s.started.UnixMilli(),
		UptimeSeconds: time.Since(s.started).Seconds(),
		Totals:        totals,
		Samples:       s.history.snapshot(),
	}
}

func (s *Server) statusJSON(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.status())
}

//go:embed status.html
var statusPage []byte

func (s *Server) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(statusPage)
}
