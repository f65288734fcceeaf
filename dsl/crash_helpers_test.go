package dsl_test

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/testdriver"
)

// crashCase is a topology and a sequence of steps whose committed results
// must not depend on crashes.
type crashCase struct {
	build func(t *testing.T) *exactly.Topology
	cfg   testdriver.Config
	steps int
	// step pipes the i-th input.
	step func(d *testdriver.Driver, i int) error
	// outputs are the topics whose records are compared, per key in
	// order (records of several partitions may interleave differently).
	outputs []string
	// tables are topics compared by their last value per key only: where
	// records of several input partitions meet, a crash may change how
	// they interleave, and so the intermediate results.
	tables []string
}

// committedState is what a run left committed: each output topic's values
// per key in order, and each store's changelog read as a table.
type committedState map[string]map[string][]string

func readCommitted(d *testdriver.Driver, outputs, tables []string) committedState {
	st := committedState{}
	for _, topic := range tables {
		last := map[string][]string{}
		for _, r := range d.TopicRecords(topic, 0) {
			last[string(r.Key)] = []string{render(r.Value)}
		}
		st["table "+topic] = last
	}
	for _, topic := range outputs {
		per := map[string][]string{}
		for _, r := range d.TopicRecords(topic, 0) {
			per[string(r.Key)] = append(per[string(r.Key)], render(r.Value))
		}
		st[topic] = per
	}
	for _, name := range d.StoreNames() {
		topic := "test-" + name + "-changelog"
		table := map[string][]string{}
		for _, r := range d.TopicRecords(topic, 0) {
			key := fmt.Sprintf("%d/%x", r.Partition, r.Key)
			if r.Value == nil {
				delete(table, key)
				continue
			}
			table[key] = []string{render(r.Value)}
		}
		st["store "+name] = table
	}
	return st
}

func render(b []byte) string {
	if b == nil {
		return "<nil>"
	}
	if bytes.ContainsFunc(b, func(r rune) bool { return r < ' ' }) {
		return fmt.Sprintf("%x", b)
	}
	return string(b)
}

// diff describes the first differences between two committed states.
func (a committedState) diff(b committedState) string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(a)) {
		for _, k := range slices.Sorted(maps.Keys(a[name])) {
			if !slices.Equal(a[name][k], b[name][k]) {
				out = append(out, fmt.Sprintf("%s[%s]: %v vs %v", name, k, a[name][k], b[name][k]))
			}
		}
		for k := range b[name] {
			if _, ok := a[name][k]; !ok {
				out = append(out, fmt.Sprintf("%s[%s]: missing vs %v", name, k, b[name][k]))
			}
		}
	}
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("... %d more", len(out)-5))
	}
	return strings.Join(out, "\n")
}

// checkCrashEquivalence runs c without crashes, then under seeded crash
// schedules, and requires the same committed output and stores.
func checkCrashEquivalence(t *testing.T, c crashCase, seeds int) {
	t.Helper()
	run := func(schedule *testdriver.CrashSchedule) (committedState, testdriver.CrashRun) {
		t.Helper()
		d, err := testdriver.New(c.build(t), c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		var stats testdriver.CrashRun
		if schedule == nil {
			for i := range c.steps {
				if err := c.step(d, i); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			if err := d.Drain(); err != nil {
				t.Fatal(err)
			}
		} else {
			stats, err = d.RunWithCrashes(*schedule, c.steps, func(i int) error { return c.step(d, i) })
			if err != nil {
				t.Fatal(err)
			}
		}
		return readCommitted(d, c.outputs, c.tables), stats
	}
	want, _ := run(nil)
	if len(c.outputs) > 0 && len(want[c.outputs[0]]) == 0 {
		t.Fatalf("the uninterrupted run wrote nothing to %s", c.outputs[0])
	}
	crashes := 0
	for seed := range uint64(seeds) {
		got, stats := run(&testdriver.CrashSchedule{Seed: seed, Crash: 0.05, CrashMidCommit: 0.05})
		crashes += stats.Crashes + stats.MidCommitCrashes
		if d := want.diff(got); d != "" {
			t.Fatalf("crash schedule %d (%v): committed results differ from an uninterrupted run:\n%s", seed, stats, d)
		}
	}
	if crashes == 0 {
		t.Fatal("no schedule crashed")
	}
}
