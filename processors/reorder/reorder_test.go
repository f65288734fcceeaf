package reorder_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/metrics"
	"github.com/exactly-go/exactly/processors/reorder"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/store"
	"github.com/exactly-go/exactly/testdriver"
	"github.com/prometheus/client_golang/prometheus"
)

var t0 = time.UnixMilli(1732260000000)

// event is the test's event: Open events open their key; Seq, when
// non-zero, is the event's sequence number.
type event struct {
	ID   string `json:"id"`
	Open bool   `json:"open,omitempty"`
	Seq  uint64 `json:"seq,omitempty"`
}

func base(opts reorder.Options[string, event]) reorder.Options[string, event] {
	opts.Keys, opts.Values = serde.String, serde.JSON[event]()
	opts.EventID = func(e event) string { return e.ID }
	return opts
}

// build wires in -> reorder -> out, with a dead-letter sink under in and
// reorder; extra may add nodes between reorder and out and must return
// out's parent.
func build(t *testing.T, opts reorder.Options[string, event], extra func(b *exactly.Builder) string) *exactly.Topology {
	t.Helper()
	return buildAround(t, opts, nil, extra)
}

// buildAround is build with before, if not nil, adding nodes between in and
// reorder and returning reorder's parent.
func buildAround(t *testing.T, opts reorder.Options[string, event], before, extra func(b *exactly.Builder) string) *exactly.Topology {
	t.Helper()
	b := exactly.NewBuilder()
	exactly.AddSource(b, "in", exactly.Source[string, event]{Topics: []string{"events"}, Keys: serde.String, Values: serde.JSON[event]()})
	parent := "in"
	if before != nil {
		parent = before(b)
	}
	reorder.Add(b, "reorder", base(opts), parent)
	parent = "reorder"
	if extra != nil {
		parent = extra(b)
	}
	exactly.AddSink(b, "out", exactly.Sink[string, event]{Topic: "out", Keys: serde.String, Values: serde.JSON[event]()}, parent)
	exactly.AddDeadLetterSink(b, "dlq", "events-dlq", "in", "reorder")
	top, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

type harness struct {
	t   *testing.T
	d   *testdriver.Driver
	in  *testdriver.InputTopic[string, event]
	out *testdriver.OutputTopic[string, event]
}

func start(t *testing.T, top *exactly.Topology, cfg testdriver.Config) *harness {
	t.Helper()
	d, err := testdriver.New(top, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return &harness{t: t, d: d,
		in:  testdriver.CreateInputTopic(d, "events", serde.String, serde.JSON[event]()),
		out: testdriver.CreateOutputTopic(d, "out", serde.String, serde.JSON[event]()),
	}
}

func (h *harness) pipe(key string, e event, ts time.Time) {
	h.t.Helper()
	if err := h.in.PipeInput(key, e, ts); err != nil {
		h.t.Fatal(err)
	}
}

// released returns "key/id" of every unread committed output.
func (h *harness) released() string {
	h.t.Helper()
	recs, err := h.out.ReadRecords()
	if err != nil {
		h.t.Fatal(err)
	}
	var s []string
	for _, r := range recs {
		s = append(s, r.Key+"/"+r.Value.ID)
	}
	return strings.Join(s, " ")
}

func at(minutes int) time.Time { return t0.Add(time.Duration(minutes) * time.Minute) }

func TestWaitingEventsAreReleasedInTimestampOrderWhenTheirKeyOpens(t *testing.T) {
	h := start(t, build(t, reorder.Options[string, event]{Opens: func(e event) bool { return e.Open }}, nil), testdriver.Config{})
	h.pipe("k", event{ID: "c"}, at(30))
	h.pipe("k", event{ID: "b2"}, at(20))
	h.pipe("k", event{ID: "a"}, at(10))
	h.pipe("k", event{ID: "b1"}, at(20)) // same timestamp as b2: the id breaks the tie
	h.pipe("other", event{ID: "z"}, at(31))
	if got := h.released(); got != "" {
		t.Fatalf("released %q before the key opened", got)
	}
	h.pipe("k", event{ID: "open", Open: true}, at(5))
	if got, want := h.released(), "k/open k/a k/b1 k/b2 k/c"; got != want {
		t.Fatalf("released %q, want %q", got, want)
	}
	h.pipe("k", event{ID: "d"}, at(1)) // the key is open: no wait, whatever the timestamp
	if got, want := h.released(), "k/d"; got != want {
		t.Fatalf("released %q, want %q", got, want)
	}
}

// TestReadinessCanBeATestOverTheApplicationsState gates events on a store
// that a downstream processor writes: the event that creates the aggregate
// releases the others, with no state kept by the buffer itself.
func TestReadinessCanBeATestOverTheApplicationsState(t *testing.T) {
	opts := reorder.Options[string, event]{
		Ready: func(ctx exactly.ProcessorContext[string, event]) (reorder.ReadyFunc[string, event], error) {
			aggregates, err := exactly.GetKeyValueStore[string, int64](ctx, "aggregates")
			if err != nil {
				return nil, err
			}
			return func(key string, e event) (bool, error) {
				_, exists, err := aggregates.Get(key)
				return e.Open || exists, err
			}, nil
		},
	}
	top := build(t, opts, func(b *exactly.Builder) string {
		exactly.AddProcessor(b, "apply", func() exactly.Processor[string, event, string, event] { return &applier{} }, "reorder")
		exactly.AddStore(b, exactly.Store[string, int64]{Name: "aggregates", Keys: serde.String, Values: serde.Int64}, "apply")
		b.Connect("reorder", "aggregates")
		return "apply"
	})
	h := start(t, top, testdriver.Config{})
	h.pipe("k", event{ID: "u2"}, at(3))
	h.pipe("k", event{ID: "u1"}, at(2))
	h.pipe("k", event{ID: "create", Open: true}, at(1))
	h.pipe("k", event{ID: "u3"}, at(4))
	if got, want := h.released(), "k/create k/u1 k/u2 k/u3"; got != want {
		t.Fatalf("released %q, want %q", got, want)
	}
}

type applier struct {
	ctx        exactly.ProcessorContext[string, event]
	aggregates store.KeyValueStore[string, int64]
}

func (a *applier) Init(ctx exactly.ProcessorContext[string, event]) (err error) {
	a.ctx = ctx
	a.aggregates, err = exactly.GetKeyValueStore[string, int64](ctx, "aggregates")
	return err
}

func (a *applier) Process(rec exactly.Record[string, event]) error {
	n, _, err := a.aggregates.Get(rec.Key)
	if err != nil {
		return err
	}
	if err := a.aggregates.Put(rec.Key, n+1); err != nil {
		return err
	}
	a.ctx.Forward(rec)
	return nil
}

func (a *applier) Close() error { return nil }

func TestSequenceGapsAreHeldUntilFilled(t *testing.T) {
	seq := func(e event) (uint64, bool) { return e.Seq, e.Seq > 0 }
	h := start(t, build(t, reorder.Options[string, event]{Sequence: seq}, nil), testdriver.Config{})
	h.pipe("k", event{ID: "e1", Seq: 1}, at(1))
	h.pipe("k", event{ID: "e3", Seq: 3}, at(3))
	h.pipe("k", event{ID: "e5", Seq: 5}, at(5))
	h.pipe("k", event{ID: "none"}, at(6)) // no sequence number: never waits
	if got, want := h.released(), "k/e1 k/none"; got != want {
		t.Fatalf("released %q, want %q", got, want)
	}
	h.pipe("k", event{ID: "e2", Seq: 2}, at(2))
	if got, want := h.released(), "k/e2 k/e3"; got != want {
		t.Fatalf("after filling 2: released %q, want %q", got, want)
	}
	h.pipe("k", event{ID: "e4", Seq: 4}, at(4))
	h.pipe("k", event{ID: "late2", Seq: 2}, at(7)) // already released number: passes
	if got, want := h.released(), "k/e4 k/e5 k/late2"; got != want {
		t.Fatalf("after filling 4: released %q, want %q", got, want)
	}
	h.pipe("j", event{ID: "j2", Seq: 2}, at(8)) // keys are independent
	if got := h.released(); got != "" {
		t.Fatalf("key j released %q with its 1 missing", got)
	}
}

// recorder is the application state a Recall reads: per key, what the
// events it received opened and numbered, recorded as each is released.
type recorder struct {
	ctx    exactly.ProcessorContext[string, event]
	states store.KeyValueStore[string, reorder.KeyState]
}

func (r *recorder) Init(ctx exactly.ProcessorContext[string, event]) (err error) {
	r.ctx = ctx
	r.states, err = exactly.GetKeyValueStore[string, reorder.KeyState](ctx, "applied")
	return err
}

func (r *recorder) Process(rec exactly.Record[string, event]) error {
	st, _, err := r.states.Get(rec.Key)
	if err != nil {
		return err
	}
	st.Opened = st.Opened || rec.Value.Open
	st.LastSequence = max(st.LastSequence, rec.Value.Seq)
	if err := r.states.Put(rec.Key, st); err != nil {
		return err
	}
	r.ctx.Forward(rec)
	return nil
}

func (r *recorder) Close() error { return nil }

// TestForgottenKeysAreRecalledFromTheApplicationsState lets the processor
// forget a key's state after KeyStateTTL: the key's later events are still
// released at once, a sequence gap after the forgetting is still held until
// filled, and the store of key states keeps only the keys recently active.
func TestForgottenKeysAreRecalledFromTheApplicationsState(t *testing.T) {
	opts := reorder.Options[string, event]{
		Opens:    func(e event) bool { return e.Open },
		Sequence: func(e event) (uint64, bool) { return e.Seq, e.Seq > 0 },
		Recall: func(ctx exactly.ProcessorContext[string, event]) (reorder.RecallFunc[string], error) {
			applied, err := exactly.GetKeyValueStore[string, reorder.KeyState](ctx, "applied")
			if err != nil {
				return nil, err
			}
			return func(key string) (reorder.KeyState, error) {
				st, _, err := applied.Get(key)
				return st, err
			}, nil
		},
		BufferTTL:   3 * time.Hour,
		KeyStateTTL: time.Hour,
	}
	top := build(t, opts, func(b *exactly.Builder) string {
		exactly.AddProcessor(b, "record", func() exactly.Processor[string, event, string, event] { return &recorder{} }, "reorder")
		exactly.AddStore(b, exactly.Store[string, reorder.KeyState]{Name: "applied", Keys: serde.String, Values: serde.JSON[reorder.KeyState]()}, "record")
		b.Connect("reorder", "applied")
		return "record"
	})
	h := start(t, top, testdriver.Config{})
	keyStates := func() int64 {
		t.Helper()
		n, err := h.d.StoreEntries("reorder-keys")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	h.pipe("k", event{ID: "open", Open: true, Seq: 1}, at(0))
	h.pipe("k", event{ID: "e2", Seq: 2}, at(1))
	h.pipe("j", event{ID: "j-open", Open: true}, at(2))
	if got, want := h.released(), "k/open k/e2 j/j-open"; got != want {
		t.Fatalf("released %q, want %q", got, want)
	}
	if n := keyStates(); n != 2 {
		t.Fatalf("%d key states remembered, want 2 (k and j)", n)
	}
	h.pipe("x", event{ID: "x-open", Open: true}, at(120)) // k and j are forgotten
	if n := keyStates(); n != 1 {
		t.Fatalf("%d key states remembered two hours on, want 1 (x)", n)
	}
	h.pipe("k", event{ID: "e4", Seq: 4}, at(121)) // 3 is missing: waits
	h.pipe("k", event{ID: "plain"}, at(122))      // no number: k is open, released
	h.pipe("j", event{ID: "j-late"}, at(123))
	h.pipe("n", event{ID: "n-early"}, at(124)) // a new key: waits for its opening event
	if got, want := h.released(), "x/x-open k/plain j/j-late"; got != want {
		t.Fatalf("released %q, want %q", got, want)
	}
	h.pipe("k", event{ID: "e3", Seq: 3}, at(125))
	if got, want := h.released(), "k/e3 k/e4"; got != want {
		t.Fatalf("after filling 3: released %q, want %q", got, want)
	}
	dlq := testdriver.CreateOutputTopic(h.d, "events-dlq", serde.Bytes, serde.Bytes)
	if n := dlq.QueueSize(); n != 0 {
		t.Fatalf("%d dead letters, want none", n)
	}
}

func headers(rec exactly.Record[[]byte, []byte]) map[string]string {
	m := map[string]string{}
	for _, h := range rec.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

// value is the value of the metric called name in reg.
func value(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	v, err := metrics.Sum(reg, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestEventsWaitingLongerThanTheTTLAreDeadLetteredWithTheirOriginalRecord(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := reorder.Options[string, event]{Opens: func(e event) bool { return e.Open }, BufferTTL: time.Hour, Registerer: reg}
	h := start(t, build(t, opts, nil), testdriver.Config{})
	h.pipe("k", event{ID: "keep"}, at(0)) // offset 0
	raw := []byte(`{"id":"orphan","extra":"kept as sent"}`)
	if err := h.d.PipeBytes("events", []byte("k"), raw, at(10), exactly.Header{Key: "traceId", Value: []byte("t-9")}); err != nil { // offset 1
		t.Fatal(err)
	}
	h.pipe("k", event{ID: "late"}, at(50)) // offset 2, buffered at stream time 50m
	if g := value(t, reg, "buffer_size"); g != 3 {
		t.Fatalf("buffer_size %v, want 3", g)
	}
	dlq := testdriver.CreateOutputTopic(h.d, "events-dlq", serde.Bytes, serde.Bytes)
	h.pipe("x", event{ID: "tick", Open: true}, at(65)) // stream time passes 60m: keep expires, orphan (70m) not yet
	if n := dlq.QueueSize(); n != 1 {
		t.Fatalf("%d dead letters at 65m, want 1", n)
	}
	h.pipe("x", event{ID: "tick2", Open: true}, at(75)) // passes 70m: orphan expires
	dead, err := dlq.ReadRecords()
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want 2: %v", len(dead), dead)
	}
	orphan := dead[1]
	hs := headers(orphan)
	if string(orphan.Key) != "k" || string(orphan.Value) != string(raw) || hs["traceId"] != "t-9" ||
		hs[exactly.HeaderErrorReason] != reorder.ReasonExpired || hs[exactly.HeaderSourceTopic] != "events" ||
		hs[exactly.HeaderSourcePartition] != "0" || hs[exactly.HeaderSourceOffset] != "1" || !orphan.Timestamp.Equal(at(10)) {
		t.Fatalf("dead letter %q %q at %v with headers %v: want the original record of offset 1", orphan.Key, orphan.Value, orphan.Timestamp, hs)
	}
	if got := headers(dead[0])[exactly.HeaderSourceOffset]; got != "0" {
		t.Fatalf("first dead letter is offset %s, want 0", got)
	}
	h.pipe("k", event{ID: "open", Open: true}, at(80))
	if got, want := h.released(), "x/tick x/tick2 k/open k/late"; got != want {
		t.Fatalf("released %q, want %q (expired events are not released)", got, want)
	}
	if b, e, s := value(t, reg, "events_buffered_total"), value(t, reg, "events_expired_total"), value(t, reg, "buffer_size"); b != 3 || e != 2 || s != 0 {
		t.Fatalf("buffered %v expired %v size %v, want 3, 2, 0", b, e, s)
	}
}

// TestTheBufferCommitsAndAbortsWithTheTransaction crashes with events
// waiting, committed and not: what was committed is released after the
// restart, what was not is redelivered and waits again, nothing twice.
func TestTheBufferCommitsAndAbortsWithTheTransaction(t *testing.T) {
	for _, persistent := range []bool{false, true} {
		t.Run(fmt.Sprintf("persistent=%v", persistent), func(t *testing.T) {
			opts := reorder.Options[string, event]{Opens: func(e event) bool { return e.Open }, Persistent: persistent}
			h := start(t, build(t, opts, nil), testdriver.Config{ManualCommit: true})
			h.pipe("k", event{ID: "b"}, at(2))
			if err := h.d.CrashMidCommit(); err != nil {
				t.Fatal(err)
			}
			if err := h.d.Restart(); err != nil {
				t.Fatal(err)
			}
			h.pipe("k", event{ID: "a"}, at(1))
			h.pipe("k", event{ID: "open", Open: true}, at(0))
			h.d.Crash() // a and open are lost with the transaction and redelivered
			if err := h.d.Restart(); err != nil {
				t.Fatal(err)
			}
			if err := h.d.Commit(); err != nil {
				t.Fatal(err)
			}
			if got, want := h.released(), "k/open k/a k/b"; got != want {
				t.Fatalf("released %q, want %q", got, want)
			}
		})
	}
}

func TestBuildRejectsIncompleteOptions(t *testing.T) {
	for name, opts := range map[string]reorder.Options[string, event]{
		"no condition":                 base(reorder.Options[string, event]{}),
		"no serdes":                    {EventID: func(e event) string { return e.ID }, Opens: func(event) bool { return true }},
		"no event id":                  {Keys: serde.String, Values: serde.JSON[event](), Opens: func(event) bool { return true }},
		"key state TTL without Recall": base(reorder.Options[string, event]{Opens: func(event) bool { return true }, KeyStateTTL: time.Hour}),
		"Recall without Opens or Sequence": base(reorder.Options[string, event]{
			Ready: func(exactly.ProcessorContext[string, event]) (reorder.ReadyFunc[string, event], error) {
				return nil, nil
			},
			Recall: func(exactly.ProcessorContext[string, event]) (reorder.RecallFunc[string], error) { return nil, nil },
		}),
	} {
		b := exactly.NewBuilder()
		exactly.AddSource(b, "in", exactly.Source[string, event]{Topics: []string{"events"}, Keys: serde.String, Values: serde.JSON[event]()})
		reorder.Add(b, "r", opts, "in")
		if _, err := b.Build(); err == nil || !strings.Contains(err.Error(), `reorder "r": `) {
			t.Errorf("%s: Build: %v, want an error naming the processor", name, err)
		}
	}
}

// retime forwards each record with its timestamp moved by shift, as a
// processor that takes event time from the payload may do: sources refuse
// times before the epoch, processors may forward them.
type retime struct {
	ctx   exactly.ProcessorContext[string, event]
	shift time.Duration
}

func (r *retime) Init(ctx exactly.ProcessorContext[string, event]) error {
	r.ctx = ctx
	return nil
}

func (r *retime) Process(rec exactly.Record[string, event]) error {
	rec.Timestamp = rec.Timestamp.Add(r.shift)
	r.ctx.Forward(rec)
	return nil
}

func (r *retime) Close() error { return nil }

// TestEventsBeforeTheEpochAreReleasedInTimestampOrder buffers events on
// both sides of the Unix epoch: they are released by signed timestamp.
func TestEventsBeforeTheEpochAreReleasedInTimestampOrder(t *testing.T) {
	const shift = -2 * time.Hour
	top := buildAround(t, reorder.Options[string, event]{Opens: func(e event) bool { return e.Open }}, func(b *exactly.Builder) string {
		exactly.AddProcessor(b, "retime", func() exactly.Processor[string, event, string, event] { return &retime{shift: shift} }, "in")
		return "retime"
	}, nil)
	h := start(t, top, testdriver.Config{})
	eventTime := func(d time.Duration) time.Time { return time.UnixMilli(0).Add(d - shift) }
	h.pipe("k", event{ID: "after"}, eventTime(time.Second))
	h.pipe("k", event{ID: "just-before"}, eventTime(-time.Millisecond))
	h.pipe("k", event{ID: "long-before"}, eventTime(-time.Hour))
	h.pipe("k", event{ID: "at"}, eventTime(0))
	h.pipe("k", event{ID: "open", Open: true}, eventTime(2*time.Second))
	if got, want := h.released(), "k/open k/long-before k/just-before k/at k/after"; got != want {
		t.Fatalf("released %q, want %q", got, want)
	}
}
