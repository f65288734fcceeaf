package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config says where the application's topics are and how it was
// configured; Options must equal the orders application's, since the
// recomputation depends on its TTLs.
type Config struct {
	Brokers []string
	Options orders.Options
	// Timeout bounds the whole audit; default one minute.
	Timeout time.Duration
	// ClientOptions are added to the verifier's franz-go clients (TLS,
	// SASL).
	ClientOptions []kgo.Opt
}

// Check is one invariant and whether it held.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// writeChecks renders checks one a line, PASS or FAIL first.
func writeChecks(b *strings.Builder, checks []Check) {
	for _, c := range checks {
		mark := "PASS"
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(b, "  %s  %s", mark, c.Name)
		if c.Detail != "" {
			fmt.Fprintf(b, ": %s", c.Detail)
		}
		b.WriteString("\n")
	}
}

// Report is the outcome of an audit.
type Report struct {
	Checks []Check
	// Inputs, Outputs and DeadLetters count the committed records read.
	Inputs, Outputs, DeadLetters int
	// AbortedHidden counts records written to the output and dead-letter
	// topics by transactions that aborted: present in the log, invisible
	// to read_committed readers.
	AbortedHidden int
	// Expected is the independent recomputation from the input.
	Expected orders.Expected
}

// OK reports whether every check held.
func (r *Report) OK() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return len(r.Checks) > 0
}

// String renders the report for a person.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "input records %d, projection records %d, dead letters %d, aborted records hidden from read_committed %d\n",
		r.Inputs, r.Outputs, r.DeadLetters, r.AbortedHidden)
	writeChecks(&b, r.Checks)
	return b.String()
}

// Orders audits the orders application: it reads the
// input, projection and dead-letter topics read_committed, recomputes the
// expected projections, every projection update and the dead letters from
// the input with orders.Oracle, and compares.
func Orders(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	opts := cfg.Options
	input, output, dlq := orDefault(opts.InputTopic, orders.DefaultInputTopic), orDefault(opts.OutputTopic, orders.DefaultOutputTopic), orDefault(opts.DeadLetterTopic, orders.DefaultDeadLetterTopic)
	clientOpts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.ClientOptions...)
	cl, err := kgo.NewClient(clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %v: %w", cfg.Brokers, err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	rep := &Report{}
	hanging := []string{}
	read := func(topic string) ([]*kgo.Record, error) {
		pe, err := ends(ctx, adm, topic)
		if err != nil {
			return nil, err
		}
		for p, e := range pe {
			if e.stable != e.high {
				hanging = append(hanging, fmt.Sprintf("%s/%d (stable %d < end %d)", topic, p, e.stable, e.high))
			}
		}
		recs, err := readTopic(ctx, clientOpts, topic, pe, true)
		if err != nil {
			return nil, err
		}
		if topic != input {
			all, err := readTopic(ctx, clientOpts, topic, pe, false)
			if err != nil {
				return nil, err
			}
			rep.AbortedHidden += len(all) - len(recs)
		}
		return recs, nil
	}
	inRecs, err := read(input)
	if err != nil {
		return nil, err
	}
	outRecs, err := read(output)
	if err != nil {
		return nil, err
	}
	dlqRecs, err := read(dlq)
	if err != nil {
		return nil, err
	}
	rep.Inputs, rep.Outputs, rep.DeadLetters = len(inRecs), len(outRecs), len(dlqRecs)

	in := make([]orders.InputRecord, len(inRecs))
	byPosition := map[[2]int64]*kgo.Record{}
	for i, r := range inRecs {
		in[i] = orders.InputRecord{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
		byPosition[[2]int64{int64(r.Partition), r.Offset}] = r
	}
	exp := orders.Oracle(in, opts)
	rep.Expected = exp

	rep.Checks = append(rep.Checks, checkHanging(hanging))
	updates, dupCheck, decodeErrs := projectionUpdates(outRecs)
	rep.Checks = append(rep.Checks, dupCheck)
	rep.Checks = append(rep.Checks, checkUpdates(exp, updates, decodeErrs))
	rep.Checks = append(rep.Checks, checkFinal(exp, updates))
	rep.Checks = append(rep.Checks, checkDeadLetters(exp, dlqRecs, byPosition, input))
	return rep, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func checkHanging(hanging []string) Check {
	c := Check{Name: "no transaction left open", OK: len(hanging) == 0}
	if !c.OK {
		c.Detail = strings.Join(hanging, ", ")
	}
	return c
}

// projectionUpdates groups committed projection records by order, in
// partition order, and checks no (order, event id) pair repeats.
func projectionUpdates(recs []*kgo.Record) (map[string][]orders.Projection, Check, []string) {
	updates := map[string][]orders.Projection{}
	seen := map[string]int{}
	var dups []string
	var bad []string
	for _, r := range recs {
		eventID := header(r, orders.HeaderEventID)
		pair := string(r.Key) + "\x00" + eventID
		seen[pair]++
		if seen[pair] == 2 && len(dups) < 5 {
			dups = append(dups, fmt.Sprintf("order %s event %s", r.Key, eventID))
		}
		var p orders.Projection
		if err := json.Unmarshal(r.Value, &p); err != nil {
			bad = append(bad, fmt.Sprintf("%s/%d@%d: %v", r.Topic, r.Partition, r.Offset, err))
			continue
		}
		updates[string(r.Key)] = append(updates[string(r.Key)], p)
	}
	n := 0
	for _, c := range seen {
		if c > 1 {
			n += c - 1
		}
	}
	c := Check{Name: "no duplicate (order, event) in committed output", OK: n == 0}
	if n > 0 {
		c.Detail = fmt.Sprintf("%d duplicates, e.g. %s", n, strings.Join(dups, "; "))
	}
	return updates, c, bad
}

func same(a, b orders.Projection) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// checkUpdates compares every order's sequence of committed projections
// with the recomputed one: versions 1, 2, 3 … in order, each equal.
func checkUpdates(exp orders.Expected, got map[string][]orders.Projection, decodeErrs []string) Check {
	var problems []string
	bad := 0
	for _, id := range sortedKeys(exp.Updates, got) {
		want, have := exp.Updates[id], got[id]
		ok := len(want) == len(have)
		for i := 0; ok && i < len(want); i++ {
			ok = same(want[i], have[i])
		}
		if !ok {
			bad++
			if len(problems) < 3 {
				problems = append(problems, fmt.Sprintf("order %s: %d updates committed, %d expected (versions %v)", id, len(have), len(want), versions(have)))
			}
		}
	}
	bad += len(decodeErrs)
	c := Check{Name: "every update in order and equal to the recomputation (per-key order, pure function of the input)", OK: bad == 0}
	if bad > 0 {
		c.Detail = fmt.Sprintf("%d orders differ: %s", bad, strings.Join(append(problems, decodeErrs...), "; "))
	} else {
		c.Detail = fmt.Sprintf("%d orders", len(exp.Updates))
	}
	return c
}

func versions(ps []orders.Projection) []int64 {
	var out []int64
	for _, p := range ps {
		out = append(out, p.Version)
	}
	if len(out) > 8 {
		out = append(out[:8:8], -1)
	}
	return out
}

// checkFinal compares each order's last committed projection with the
// recomputed one: nothing acknowledged lost, nothing invented.
func checkFinal(exp orders.Expected, got map[string][]orders.Projection) Check {
	missing, wrong, extra := 0, 0, 0
	for id, want := range exp.Projections {
		have := got[id]
		switch {
		case len(have) == 0:
			missing++
		case !same(want, have[len(have)-1]):
			wrong++
		}
	}
	for id := range got {
		if _, ok := exp.Projections[id]; !ok {
			extra++
		}
	}
	c := Check{Name: "nothing lost: final projections equal the recomputation", OK: missing+wrong+extra == 0,
		Detail: fmt.Sprintf("%d orders, %d missing, %d different, %d unexpected", len(exp.Projections), missing, wrong, extra)}
	return c
}

// checkDeadLetters compares the dead-letter topic with the recomputed set:
// each expected record once, with its reason, its source position and its
// original bytes.
func checkDeadLetters(exp orders.Expected, recs []*kgo.Record, inputs map[[2]int64]*kgo.Record, inputTopic string) Check {
	want := map[[2]int64]string{}
	for _, d := range exp.DeadLetters {
		want[[2]int64{int64(d.Partition), d.Offset}] = d.Reason
	}
	got := map[[2]int64]int{}
	var problems []string
	note := func(format string, args ...any) {
		if len(problems) < 4 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	for _, r := range recs {
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		p, _ := strconv.ParseInt(h[exactly.HeaderSourcePartition], 10, 32)
		o, _ := strconv.ParseInt(h[exactly.HeaderSourceOffset], 10, 64)
		pos := [2]int64{p, o}
		got[pos]++
		reason, ok := want[pos]
		switch {
		case h[exactly.HeaderSourceTopic] != inputTopic:
			note("dead letter from topic %q", h[exactly.HeaderSourceTopic])
		case !ok:
			note("unexpected dead letter for %d@%d (%s)", p, o, h[exactly.HeaderErrorReason])
		case reason != h[exactly.HeaderErrorReason]:
			note("%d@%d dead-lettered as %s, expected %s", p, o, h[exactly.HeaderErrorReason], reason)
		case inputs[pos] == nil || !bytes.Equal(inputs[pos].Key, r.Key) ||
			!bytes.Equal(inputs[pos].Value, r.Value) && !(r.Value == nil && len(inputs[pos].Value) > deadLetterValueBound):
			note("%d@%d: dead letter does not carry the original bytes", p, o)
		}
	}
	missing, dups := 0, 0
	for pos := range want {
		if got[pos] == 0 {
			missing++
		}
	}
	for _, n := range got {
		if n > 1 {
			dups += n - 1
		}
	}
	c := Check{Name: "dead letters: each expected record once, with reason, source and original bytes",
		OK: missing == 0 && dups == 0 && len(problems) == 0}
	c.Detail = fmt.Sprintf("%d expected, %d missing, %d duplicated", len(want), missing, dups)
	if len(problems) > 0 {
		c.Detail += "; " + strings.Join(problems, "; ")
	}
	return c
}

// deadLetterValueBound is the size above which the runtime dead-letters a
// record without its value (a larger one could not be produced).
const deadLetterValueBound = 900_000

func sortedKeys[V any](a, b map[string]V) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
