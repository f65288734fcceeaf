package dsl_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/dsl"
	"github.com/exactly-go/exactly/serde"
	"github.com/exactly-go/exactly/testdriver"
)

type user struct {
	Region string `json:"region"`
	Amount int64  `json:"amount"`
}

// tableUpdate is one record of a table's topic; a nil value is a
// tombstone.
type tableUpdate struct {
	topic string
	key   string
	value *user
	ts    int64
}

func randomTableUpdates(rng *rand.Rand, n int, topics ...string) []tableUpdate {
	out := make([]tableUpdate, n)
	for i := range out {
		u := tableUpdate{topic: topics[rng.IntN(len(topics))], key: fmt.Sprint("u", rng.IntN(6)), ts: int64(i) * 1000}
		if rng.IntN(4) != 0 {
			u.value = &user{Region: fmt.Sprint("r", rng.IntN(3)), Amount: rng.Int64N(100)}
		}
		out[i] = u
	}
	return out
}

func pipeUpdate(d *testdriver.Driver, u tableUpdate) error {
	var value []byte
	if u.value != nil {
		value, _ = json.Marshal(u.value)
	}
	return d.PipeBytes(u.topic, []byte(u.key), value, time.UnixMilli(u.ts))
}

func tableTopology(t *testing.T) *exactly.Topology {
	sb := dsl.NewStreamsBuilder(dsl.Options{ApplicationID: "test"})
	users := dsl.Table(sb, "users", serde.String, serde.JSON[user](), "users-store", dsl.Materialized{})
	big := users.Filter(func(_ string, u user) bool { return u.Amount >= 50 })
	dsl.TableMapValues(big, func(_ string, u user) string { return fmt.Sprint(u.Region, ":", u.Amount) }, serde.String).
		Materialize("big-users", dsl.Materialized{}).To("big-users")
	users.ToStream().To("user-updates")
	byRegion := dsl.TableGroupBy(users, func(_ string, u user) dsl.KeyValue[string, int64] {
		return dsl.KeyValue[string, int64]{Key: u.Region, Value: u.Amount}
	}, serde.String, serde.Int64)
	dsl.AggregateTable(byRegion, "region-sums", func() int64 { return 0 },
		func(_ string, v, acc int64) int64 { return acc + v }, func(_ string, v, acc int64) int64 { return acc - v },
		serde.Int64, dsl.Materialized{}).ToStream().To("region-sums")
	dsl.CountTable(byRegion, "region-counts", dsl.Materialized{}).ToStream().To("region-counts")
	top, err := sb.Build()
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// recordsByKey reads topic's committed records as key → values in order;
// a tombstone reads "<nil>".
func recordsByKey(d *testdriver.Driver, topic string, decode func([]byte) string) map[string][]string {
	out := map[string][]string{}
	for _, r := range d.TopicRecords(topic, 0) {
		v := "<nil>"
		if r.Value != nil {
			v = decode(r.Value)
		}
		out[string(r.Key)] = append(out[string(r.Key)], v)
	}
	return out
}

func asString(b []byte) string { return string(b) }
func asInt64(b []byte) string  { n, _ := serde.Int64.Deserialize(b); return fmt.Sprint(n) }

func sameByKey(t *testing.T, what string, got, want map[string][]string) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if !slices.Equal(got[k], want[k]) {
			t.Fatalf("%s[%s]:\n got %v\nwant %v", what, k, got[k], want[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Fatalf("%s[%s]: got %v, want nothing", what, k, got[k])
		}
	}
}

// TestTableOperationsMatchBruteForce replays random upserts and
// tombstones and recomputes, after every update, what each table
// operation must have emitted: Filter and TableMapValues retract entries
// that leave them, ToStream carries new values only, and a table
// aggregation's value always equals the fold of its group's current
// entries.
func TestTableOperationsMatchBruteForce(t *testing.T) {
	for seed := range uint64(8) {
		updates := randomTableUpdates(rand.New(rand.NewPCG(seed, 21)), 300, "users")
		d, err := testdriver.New(tableTopology(t), testdriver.Config{Partitions: map[string]int32{"users": 2}})
		if err != nil {
			t.Fatal(err)
		}
		table := map[string]user{}
		big, updatesOut, sums, counts := map[string][]string{}, map[string][]string{}, map[string][]string{}, map[string][]string{}
		deletes := 0
		regionOf := func(region string) (sum, n int64) {
			for _, u := range table {
				if u.Region == region {
					sum, n = sum+u.Amount, n+1
				}
			}
			return sum, n
		}
		for _, u := range updates {
			if err := pipeUpdate(d, u); err != nil {
				t.Fatal(err)
			}
			old, had := table[u.key]
			if u.value == nil {
				if !had {
					continue
				}
				deletes++
				delete(table, u.key)
			} else {
				table[u.key] = *u.value
				updatesOut[u.key] = append(updatesOut[u.key], fmt.Sprintf(`{"region":%q,"amount":%d}`, u.value.Region, u.value.Amount))
			}
			oldBig, newBig := had && old.Amount >= 50, u.value != nil && u.value.Amount >= 50
			switch {
			case newBig:
				big[u.key] = append(big[u.key], fmt.Sprint(u.value.Region, ":", u.value.Amount))
			case oldBig:
				big[u.key] = append(big[u.key], "<nil>")
			}
			var touched []string
			if had {
				touched = append(touched, old.Region)
			}
			if u.value != nil && (!had || u.value.Region != old.Region) {
				touched = append(touched, u.value.Region)
			}
			for _, r := range touched {
				sum, n := regionOf(r)
				sums[r] = append(sums[r], fmt.Sprint(sum))
				counts[r] = append(counts[r], fmt.Sprint(n))
			}
		}
		if deletes == 0 {
			t.Fatalf("seed %d: no deletion to check", seed)
		}
		sameByKey(t, fmt.Sprint("seed ", seed, " big-users"), recordsByKey(d, "big-users", asString), big)
		sameByKey(t, fmt.Sprint("seed ", seed, " user-updates"), recordsByKey(d, "user-updates", asString), updatesOut)
		sameByKey(t, fmt.Sprint("seed ", seed, " region-sums"), recordsByKey(d, "region-sums", asInt64), sums)
		sameByKey(t, fmt.Sprint("seed ", seed, " region-counts"), recordsByKey(d, "region-counts", asInt64), counts)
		// The materialized filter holds exactly the big users, across both
		// partitions, and answers queries.
		got := map[string]string{}
		for p := range int32(2) {
			kv, err := testdriver.KeyValueStore[string, string](d, "big-users", p)
			if err != nil {
				t.Fatal(err)
			}
			it, _ := kv.All()
			for it.Next() {
				got[it.Key()] = it.Value()
			}
			it.Close()
		}
		want := map[string]string{}
		for k, u := range table {
			if u.Amount >= 50 {
				want[k] = fmt.Sprint(u.Region, ":", u.Amount)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("seed %d: store big-users %v, want %v", seed, got, want)
		}
		d.Close()
	}
}

func TestTableOperationsSurviveCrashes(t *testing.T) {
	updates := randomTableUpdates(rand.New(rand.NewPCG(3, 3)), 200, "users")
	checkCrashEquivalence(t, crashCase{
		build:   tableTopology,
		cfg:     testdriver.Config{Partitions: map[string]int32{"users": 2}},
		steps:   len(updates),
		step:    func(d *testdriver.Driver, i int) error { return pipeUpdate(d, updates[i]) },
		outputs: []string{"big-users", "user-updates"},
		tables:  []string{"region-sums", "region-counts"},
	}, 8)
}

func joinTablesTopology(kind dsl.JoinKind) func(t *testing.T) *exactly.Topology {
	return func(t *testing.T) *exactly.Topology {
		sb := dsl.NewStreamsBuilder(dsl.Options{})
		left := dsl.Table(sb, "left", serde.String, serde.JSON[user](), "left-store", dsl.Materialized{})
		// The right side is derived, not materialized: the join gives it a
		// store.
		right := dsl.Table(sb, "right", serde.String, serde.JSON[user](), "right-store", dsl.Materialized{}).
			Filter(func(_ string, u user) bool { return u.Amount%5 != 0 })
		joined := dsl.JoinTables(left, right, kind, func(_ string, j dsl.Joined[user, user]) string {
			return joinedString(j)
		}, serde.String)
		joined.To("joined")
		joined.Changes().To("joined-changes")
		top, err := sb.Build()
		if err != nil {
			t.Fatal(err)
		}
		return top
	}
}

func joinedString(j dsl.Joined[user, user]) string {
	l, r := "-", "-"
	if j.HasLeft {
		l = fmt.Sprint(j.Left.Amount)
	}
	if j.HasRight {
		r = fmt.Sprint(j.Right.Amount)
	}
	return l + "+" + r
}

func TestTableJoinsMatchBruteForce(t *testing.T) {
	changes := dsl.ChangeSerde(serde.String)
	for _, kind := range []dsl.JoinKind{dsl.JoinInner, dsl.JoinLeft, dsl.JoinOuter} {
		for seed := range uint64(8) {
			updates := randomTableUpdates(rand.New(rand.NewPCG(seed, 40+uint64(kind))), 300, "left", "right")
			parts := map[string]int32{"left": 3, "right": 3}
			d, err := testdriver.New(joinTablesTopology(kind)(t), testdriver.Config{Partitions: parts})
			if err != nil {
				t.Fatal(err)
			}
			sides := map[string]map[string]user{"left": {}, "right": {}}
			result := func(k string) (string, bool) {
				l, hasL := sides["left"][k]
				r, hasR := sides["right"][k]
				hasR = hasR && r.Amount%5 != 0
				if !map[dsl.JoinKind]bool{dsl.JoinInner: hasL && hasR, dsl.JoinLeft: hasL, dsl.JoinOuter: hasL || hasR}[kind] {
					return "", false
				}
				return joinedString(dsl.Joined[user, user]{Left: l, HasLeft: hasL, Right: r, HasRight: hasR}), true
			}
			want, wantChanges := map[string][]string{}, map[string][]string{}
			for _, u := range updates {
				if err := pipeUpdate(d, u); err != nil {
					t.Fatal(err)
				}
				before, hadBefore := result(u.key)
				prev, had := sides[u.topic][u.key]
				// Whether the update reaches the join: a deletion of an
				// absent key changes nothing, and the right side's filter
				// passes only changes that touch its entries.
				reaches := u.value != nil || had
				if u.topic == "right" {
					reaches = had && prev.Amount%5 != 0 || u.value != nil && u.value.Amount%5 != 0
				}
				if u.value == nil {
					delete(sides[u.topic], u.key)
				} else {
					sides[u.topic][u.key] = *u.value
				}
				after, hasAfter := result(u.key)
				if !reaches || !hadBefore && !hasAfter {
					continue
				}
				if hasAfter {
					want[u.key] = append(want[u.key], after)
				} else {
					want[u.key] = append(want[u.key], "<nil>")
				}
				wantChanges[u.key] = append(wantChanges[u.key], fmt.Sprintf("%q/%v -> %q/%v", before, hadBefore, after, hasAfter))
			}
			if len(want) == 0 {
				t.Fatal("the oracle expects no join result")
			}
			sameByKey(t, fmt.Sprint("kind ", kind, " seed ", seed, " joined"), recordsByKey(d, "joined", asString), want)
			sameByKey(t, fmt.Sprint("kind ", kind, " seed ", seed, " changes"), recordsByKey(d, "joined-changes", func(b []byte) string {
				c, err := changes.Deserialize(b)
				if err != nil {
					t.Fatal(err)
				}
				return fmt.Sprintf("%q/%v -> %q/%v", c.Old, c.HasOld, c.New, c.HasNew)
			}), wantChanges)
			d.Close()
		}
	}
}

func TestTableJoinsSurviveCrashes(t *testing.T) {
	updates := randomTableUpdates(rand.New(rand.NewPCG(5, 5)), 200, "left", "right")
	checkCrashEquivalence(t, crashCase{
		build:   joinTablesTopology(dsl.JoinOuter),
		cfg:     testdriver.Config{Partitions: map[string]int32{"left": 2, "right": 2}},
		steps:   len(updates),
		step:    func(d *testdriver.Driver, i int) error { return pipeUpdate(d, updates[i]) },
		outputs: []string{"joined", "joined-changes"},
	}, 8)
}
