package verify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/topo"
	"github.com/exactly-go/exactly/internal/tracing"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ReplayConfig configures Replay. Brokers and ApplicationID are required;
// every other field's zero value takes its default.
type ReplayConfig struct {
	// Brokers are the seed brokers of the cluster the application ran on.
	Brokers []string
	// ClientOptions are added to every franz-go client the verifier opens
	// (TLS, SASL, client id). Options that choose what to consume are
	// overridden.
	ClientOptions []kgo.Opt
	// ApplicationID names the application that ran the topology: the
	// consumer group whose committed offsets mark the committed input, and
	// the prefix of the changelog topics.
	ApplicationID string
	// InputTopics limits the replay to the sub-topologies that read one of
	// them. By default the inputs are derived from the topology: every
	// sub-topology is replayed, from its source topics, repartition topics
	// included. Topics written by a sub-topology left out are not compared.
	InputTopics []string
	// Timeout bounds the whole verification, reads and replay included;
	// default one minute.
	Timeout time.Duration
	// WaitForTransactions is how long the verifier waits for transactions
	// still open on the topology's topics to end before it reports them as
	// left open; default two seconds, negative for no wait. It never waits
	// longer.
	WaitForTransactions time.Duration
	// IgnoreHeaders are left out of the record comparison, besides
	// exactly.HeaderErrorMessage, which always is: it carries the text of
	// the error that dead-lettered a record, which for a panic includes a
	// stack trace that differs from run to run; and so are the W3C trace
	// context headers (traceparent, tracestate), which name the spans of a
	// run with tracing on.
	IgnoreHeaders []string
	// SkipChangelogs turns off the comparison of changelog topics.
	SkipChangelogs bool
}

// replayConfig is a ReplayConfig with its defaults applied.
type replayConfig struct {
	brokers       []string
	clientOpts    []kgo.Opt
	applicationID string
	inputTopics   []string
	timeout       time.Duration
	settle        time.Duration
	ignoreHeaders []string
	changelogs    bool
}

func (c ReplayConfig) withDefaults() (replayConfig, error) {
	if len(c.Brokers) == 0 {
		return replayConfig{}, fmt.Errorf("%w: set ReplayConfig.Brokers to the cluster's seed brokers", ErrReplayConfig)
	}
	if c.ApplicationID == "" {
		return replayConfig{}, fmt.Errorf("%w: set ReplayConfig.ApplicationID to the application id (its consumer group and changelog prefix)", ErrReplayConfig)
	}
	out := replayConfig{
		brokers:       c.Brokers,
		clientOpts:    c.ClientOptions,
		applicationID: c.ApplicationID,
		inputTopics:   c.InputTopics,
		timeout:       c.Timeout,
		settle:        c.WaitForTransactions,
		ignoreHeaders: append([]string{exactly.HeaderErrorMessage, tracing.HeaderTraceParent, tracing.HeaderTraceState}, c.IgnoreHeaders...),
		changelogs:    !c.SkipChangelogs,
	}
	if out.timeout <= 0 {
		out.timeout = time.Minute
	}
	switch {
	case out.settle == 0:
		out.settle = 2 * time.Second
	case out.settle < 0:
		out.settle = 0
	}
	return out, nil
}

// ErrReplayConfig is wrapped by the errors Replay returns for a
// configuration it cannot work with.
var ErrReplayConfig = errors.New("verify: replay configuration")

// Replay checks that what an application committed to Kafka equals what
// its topology produces when the committed input is replayed through the
// test driver in one uninterrupted pass. The task core is
// deterministic, so crashes, restarts, rebalances and aborted transactions
// of the run must leave no trace in its committed output.
//
// It reads every topic read_committed, as a downstream consumer would.
// Each sub-topology is replayed on its own, task by task: the records of
// each input partition below the group's committed offset, in offset order,
// go through a fresh task for that partition. Sub-topologies fed by a
// repartition topic take the committed repartition records as their input,
// in the order they were committed, while the repartition topic itself is
// compared with what the upstream replay produces. Stream time restored
// from the metadata of committed offsets after a restart is reproduced by
// replaying all the committed input, and checked against that metadata.
//
// Comparison, per topic the replayed sub-topologies write:
//   - records with a key are compared per partition and key; where one
//     task produced all of a key's records in the replay, their order is
//     compared too (the producer keeps a task's order within a partition);
//     where several did, their commits interleave as the run's timing had
//     it, and the records are compared as a multiset;
//   - records without a key are compared as a multiset across the topic
//     (the producer picks their partition);
//   - on compacted topics only each key's last record must be there;
//   - a record is its value, timestamp and headers (see IgnoreHeaders);
//   - changelog topics are compared by their final value per key and
//     partition, since their intermediate records depend on when commits
//     happened.
//
// Every difference names its record: Duplicate, Missing, Different,
// Unexpected (a record the replay does not produce, such as a foreign
// producer's write or aborted data made visible) or OutOfOrder. The report
// also lists partitions of the topology's topics with a transaction left
// open (last stable offset below the high watermark after
// WaitForTransactions).
//
// Preconditions, which the report states when it can detect them:
//   - the application has stopped (or paused) after its last commit, so
//     that committed offsets and committed output describe the same point;
//   - the topology is deterministic: its output is a function of its input
//     records, their order and stream time. Stream-time punctuators are
//     fine; wall-clock punctuators, reads of the wall clock, random ids
//     and calls to external systems are not. A sub-topology whose
//     processors schedule a wall-clock punctuator is reported as not
//     replayable rather than failed;
//   - a sub-topology reads one topic: the runtime interleaves the records
//     of co-partitioned topics as they arrive, an order Kafka does not
//     keep, so a sub-topology reading several is reported not replayable;
//   - the input is whole: records deleted from an input partition
//     (retention, DeleteRecords) before the committed offset make its
//     sub-topology not replayable;
//   - only the application writes its output topics;
//   - the run used exactly_once_v2: under at_least_once a crash duplicates
//     output legitimately, and the replay reports those duplicates.
//
// The committed topics are held in memory. Every call to the cluster is
// bounded by Timeout. An error is returned when the verification could not
// be carried out (cluster unreachable, bad options); findings are in the
// report.
func Replay(ctx context.Context, topology *exactly.Topology, c ReplayConfig) (*ReplayReport, error) {
	cfg, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	clientOpts := append([]kgo.Opt{kgo.SeedBrokers(cfg.brokers...)}, cfg.clientOpts...)
	cl, err := kgo.NewClient(clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %v: %w", cfg.brokers, err)
	}
	defer cl.Close()
	r := &replayRun{
		cfg:        cfg,
		topology:   topology,
		top:        topo.Of(topology),
		clientOpts: clientOpts,
		adm:        kadm.NewClient(cl),
		rep:        &ReplayReport{ApplicationID: cfg.applicationID},
		replayed:   map[string][]*Record{},
		tables:     map[string]map[int32]map[string]*Record{},
		outcome:    map[int]string{},
	}
	if err := r.run(ctx); err != nil {
		return nil, err
	}
	return r.rep, nil
}

// replayRun is the state of one Replay call.
type replayRun struct {
	cfg        replayConfig
	topology   *exactly.Topology
	top        *topo.Topology
	clientOpts []kgo.Opt
	adm        *kadm.Client
	rep        *ReplayReport

	writers    map[string][]int // topic -> sub-topologies with a sink to it
	readers    map[string]int   // topic -> the sub-topology reading it
	deadLetter map[string]bool
	changelogs map[string]int // changelog topic -> its sub-topology
	partitions map[string]int32
	compacted  map[string]bool
	ends       map[string]map[int32]partitionEnds
	group      kadm.OffsetResponses

	// outcome is "" for a sub-topology replayed in full, else why its
	// outputs cannot be compared.
	outcome  map[int]string
	replayed map[string][]*Record                    // sink topic -> replayed records
	tables   map[string]map[int32]map[string]*Record // changelog -> partition -> key -> last record
	// streamTimes compares, per input partition, the stream time in the
	// committed offset's metadata with the replay's.
	streamTimes []string
	streamTasks int
}

func (r *replayRun) run(ctx context.Context) error {
	subs := r.top.Subtopologies()
	r.writers, r.readers, r.deadLetter, r.changelogs = map[string][]int{}, map[string]int{}, map[string]bool{}, map[string]int{}
	for _, sub := range subs {
		for _, t := range sub.SourceTopics {
			r.readers[t] = sub.ID
		}
		for _, t := range sub.SinkTopics {
			r.writers[t] = append(r.writers[t], sub.ID)
		}
		for _, name := range sub.Nodes {
			if n, _ := r.top.Node(name); n.Kind() == topo.KindDeadLetterSink {
				r.deadLetter[n.Topics()[0]] = true
			}
		}
		for _, name := range sub.Stores {
			if spec, _ := r.top.Store(name); spec.Logged {
				r.changelogs[topo.ChangelogTopic(r.cfg.applicationID, name)] = sub.ID
			}
		}
	}
	for _, t := range r.cfg.inputTopics {
		if _, ok := r.readers[t]; !ok {
			return fmt.Errorf("%w: input topic %q is not read by the topology (it reads %s)", ErrReplayConfig, t, strings.Join(slices.Sorted(maps.Keys(r.readers)), ", "))
		}
	}
	topics := slices.Sorted(maps.Keys(r.readers))
	for t := range r.writers {
		if !slices.Contains(topics, t) {
			topics = append(topics, t)
		}
	}
	for t := range r.changelogs {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	if err := r.describeTopics(ctx, topics); err != nil {
		return err
	}
	if err := r.settle(ctx, topics); err != nil {
		return err
	}
	offsets, err := r.adm.FetchOffsets(ctx, r.cfg.applicationID)
	if err != nil {
		return fmt.Errorf("fetch the committed offsets of group %s: %w", r.cfg.applicationID, err)
	}
	r.group = offsets
	if len(offsets) == 0 {
		r.note("group %s has no committed offsets: no input counts as consumed, so any committed output shows as unexpected; check the application id", r.cfg.applicationID)
	}
	if groups, err := r.adm.DescribeGroups(ctx, r.cfg.applicationID); err == nil {
		if g, ok := groups[r.cfg.applicationID]; ok && len(g.Members) > 0 {
			r.note("group %s lists %d members (static members stay listed after they stop): if the application is running, what it commits next is not part of this verification; stop it for a stable verdict", r.cfg.applicationID, len(g.Members))
		}
	}

	for _, sub := range subs {
		rs := SubtopologyReplay{ID: sub.ID, SourceTopics: sub.SourceTopics}
		if len(r.cfg.inputTopics) > 0 && !slices.ContainsFunc(sub.SourceTopics, func(t string) bool { return slices.Contains(r.cfg.inputTopics, t) }) {
			rs.Skipped = "it reads none of the input topics asked for"
			r.outcome[sub.ID] = "sub-topology " + fmt.Sprint(sub.ID) + " was skipped"
		} else if err := r.replaySubtopology(ctx, sub, &rs); err != nil {
			return err
		}
		r.rep.Subtopologies = append(r.rep.Subtopologies, rs)
		if rs.Err != "" {
			r.rep.Checks = append(r.rep.Checks, Check{
				Name: fmt.Sprintf("sub-topology %d replays its committed input", sub.ID), OK: false, Detail: rs.Err,
			})
		}
	}
	if err := r.compareOutputs(ctx); err != nil {
		return err
	}
	if r.cfg.changelogs {
		if err := r.compareChangelogs(ctx); err != nil {
			return err
		}
	}
	if r.streamTasks > 0 {
		c := Check{Name: "stream time committed with the offsets equals the replay's", OK: len(r.streamTimes) == 0,
			Detail: fmt.Sprintf("%d input partitions", r.streamTasks)}
		if !c.OK {
			c.Detail += "; " + strings.Join(r.streamTimes, "; ")
		}
		r.rep.Checks = append(r.rep.Checks, c)
	}
	r.rep.Checks = append(r.rep.Checks, r.openTransactionCheck(topics))
	return nil
}

func (r *replayRun) note(format string, args ...any) {
	r.rep.Notes = append(r.rep.Notes, fmt.Sprintf(format, args...))
}

// describeTopics learns the partition counts and cleanup policies of the
// topics that exist.
func (r *replayRun) describeTopics(ctx context.Context, topics []string) error {
	details, err := r.adm.ListTopics(ctx, topics...)
	if err != nil {
		return fmt.Errorf("describe topics %s: %w", strings.Join(topics, ", "), err)
	}
	r.partitions, r.compacted = map[string]int32{}, map[string]bool{}
	var existing []string
	for _, t := range topics {
		d, ok := details[t]
		if !ok || d.Err != nil || len(d.Partitions) == 0 {
			continue
		}
		r.partitions[t] = int32(len(d.Partitions))
		existing = append(existing, t)
	}
	if len(existing) == 0 {
		return nil
	}
	configs, err := r.adm.DescribeTopicConfigs(ctx, existing...)
	if err != nil {
		r.note("could not read topic configs (%v): no topic is treated as compacted", err)
		return nil
	}
	for _, rc := range configs {
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil && strings.Contains(*c.Value, "compact") {
				r.compacted[rc.Name] = true
			}
		}
	}
	return nil
}

// settle reads each topic's offsets, waiting up to WaitForTransactions for
// open transactions to end.
func (r *replayRun) settle(ctx context.Context, topics []string) error {
	deadline := time.Now().Add(r.cfg.settle)
	r.ends = map[string]map[int32]partitionEnds{}
	pending := slices.Clone(topics)
	for {
		var still []string
		for _, t := range pending {
			if r.partitions[t] == 0 {
				continue
			}
			pe, err := ends(ctx, r.adm, t)
			if err != nil {
				return err
			}
			r.ends[t] = pe
			for _, e := range pe {
				if e.stable < e.high {
					still = append(still, t)
					break
				}
			}
		}
		if len(still) == 0 || !time.Now().Before(deadline) {
			return nil
		}
		pending = still
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for open transactions on %s: %w", strings.Join(still, ", "), ctx.Err())
		case <-time.After(min(200*time.Millisecond, time.Until(deadline))):
		}
	}
}

func (r *replayRun) openTransactionCheck(topics []string) Check {
	n := 0
	for _, t := range topics {
		pe := r.ends[t]
		for _, p := range slices.Sorted(maps.Keys(pe)) {
			n++
			if e := pe[p]; e.stable < e.high {
				r.rep.OpenTransactions = append(r.rep.OpenTransactions, OpenTransaction{Topic: t, Partition: p, LastStable: e.stable, HighWatermark: e.high})
			}
		}
	}
	c := Check{Name: "no transaction left open (last stable offset = high watermark)", OK: len(r.rep.OpenTransactions) == 0,
		Detail: fmt.Sprintf("%d partitions of the topology's topics", n)}
	if !c.OK {
		var open []string
		for _, o := range r.rep.OpenTransactions {
			open = append(open, fmt.Sprintf("%s/%d (stable %d < end %d)", o.Topic, o.Partition, o.LastStable, o.HighWatermark))
		}
		c.Detail = fmt.Sprintf("open after waiting %v on %s", r.cfg.settle, strings.Join(open, ", "))
	}
	return c
}

func (r *replayRun) role(topic string) string {
	switch _, read := r.readers[topic]; {
	case r.deadLetter[topic]:
		return "dead letters"
	case read:
		return "repartition"
	default:
		return "output"
	}
}

// committedRecord converts a record read from Kafka.
func committedRecord(k *kgo.Record) *Record {
	r := &Record{Topic: k.Topic, Partition: k.Partition, Offset: k.Offset, Key: k.Key, Value: k.Value,
		Timestamp: k.Timestamp, ProducerID: k.ProducerID, Task: exactly.TaskID{Subtopology: -1, Partition: -1}}
	if len(k.Headers) > 0 {
		r.Headers = make([]exactly.Header, len(k.Headers))
		for i, h := range k.Headers {
			r.Headers[i] = exactly.Header{Key: h.Key, Value: h.Value}
		}
	}
	return r
}

func sourceRecord(k *kgo.Record) exactly.SourceRecord {
	c := committedRecord(k)
	return exactly.SourceRecord{Topic: c.Topic, Partition: c.Partition, Offset: c.Offset, Key: c.Key, Value: c.Value, Headers: c.Headers, Timestamp: c.Timestamp}
}

// groupKey is the unit of comparison: a key in a partition, or the
// records without a key across the topic.
type groupKey struct {
	partition int32
	key       string
	null      bool
}

func groupOf(r *Record) groupKey {
	if r.Key == nil {
		return groupKey{partition: -1, null: true}
	}
	return groupKey{partition: r.Partition, key: string(r.Key)}
}

func compareGroupKeys(a, b groupKey) int {
	if c := cmp.Compare(a.partition, b.partition); c != 0 {
		return c
	}
	if a.null != b.null {
		if a.null {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.key, b.key)
}
