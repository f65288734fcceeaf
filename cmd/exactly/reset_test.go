package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly/chaos"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/verify"
)

// TestResetThenRerunGivesTheFirstRunsOutput runs `exactly run orders` over
// generated order events (duplicates, reordering, orphans, malformed
// records) until it has committed them all. `exactly reset` refuses while
// it runs, naming the member; once it stopped, a dry run lists the plan
// and changes nothing, and the reset with --state-dir rewinds the input,
// deletes the changelogs and the local state. A second run over the same
// input then commits, key by key, exactly the projections the first run
// committed.
func TestResetThenRerunGivesTheFirstRunsOutput(t *testing.T) {
	brokers := newBroker(t).ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	c := testRunOrdersConfig(t, brokers, 3)
	input := chaos.OrdersInput(c.InputTopic, 7, 60, c.Partitions)

	// run runs the projection until it has committed the whole input;
	// during runs it calls during with the application running.
	run := func(during func()) {
		t.Helper()
		base, stop := startRunOrders(t, c)
		defer func() {
			if err := stop(); err != nil {
				t.Fatalf("run orders: %v", err)
			}
		}()
		waitReady(t, base)
		waitFor(t, 60*time.Second, "the whole input to be committed", func() bool {
			ends, err := adm.ListEndOffsets(context.Background(), c.InputTopic)
			committed, err2 := adm.FetchOffsets(context.Background(), c.ApplicationID)
			if err != nil || err2 != nil {
				return false
			}
			caughtUp := true
			ends.Each(func(e kadm.ListedOffset) {
				if r, ok := committed.Lookup(e.Topic, e.Partition); !ok || r.At < e.Offset {
					caughtUp = false
				}
			})
			return caughtUp
		})
		if during != nil {
			during()
		}
	}
	reset := func(args ...string) (string, error) {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(append([]string{"reset", "--brokers", strings.Join(brokers, ","), "--application-id", c.ApplicationID, "--timeout", "30s"}, args...))
		err := root.ExecuteContext(context.Background())
		return out.String(), err
	}
	readOutput := func() []*kgo.Record {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		recs, err := verify.ReadCommitted(ctx, []kgo.Opt{kgo.SeedBrokers(brokers...)}, c.OutputTopic)
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}

	if err := createOrderTopics(context.Background(), c, slog.Default()); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(context.Background(), input...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	run(func() {
		_, err := reset()
		if err == nil || !strings.Contains(err.Error(), "has 1 active member:") || !strings.Contains(err.Error(), "member orders-") {
			t.Errorf("reset while an instance runs = %v; want a refusal naming the member", err)
		}
	})
	first := readOutput()
	if len(first) == 0 {
		t.Fatal("the first run committed no projection")
	}

	changelog := "orders-" + orders.ProjectionStore + "-changelog"
	out, err := reset("--dry-run", "--state-dir", c.StateDir)
	if err != nil {
		t.Fatalf("reset --dry-run: %v\n%s", err, out)
	}
	for _, want := range []string{"topology: orders", "order-events partition 0: ", " -> 0\n", "  " + changelog + "\n", filepath.Join(c.StateDir, c.ApplicationID), "dry run: nothing changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("the dry run lacks %q:\n%s", want, out)
		}
	}
	if topics, _ := adm.ListTopics(context.Background()); !topics.Has(changelog) {
		t.Error("the dry run deleted the changelog")
	}
	if _, err := os.Stat(filepath.Join(c.StateDir, c.ApplicationID)); err != nil {
		t.Errorf("the dry run touched the state: %v", err)
	}

	out, err = reset("--state-dir", c.StateDir)
	if err != nil {
		t.Fatalf("reset: %v\n%s", err, out)
	}
	t.Log("\n" + out)
	if topics, _ := adm.ListTopics(context.Background()); topics.Has(changelog) {
		t.Error("the reset left the changelog")
	}
	if _, err := os.Stat(filepath.Join(c.StateDir, c.ApplicationID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the reset left the local state: %v", err)
	}

	run(nil)
	all := readOutput()
	firstEnd := map[int32]int64{}
	for _, r := range first {
		firstEnd[r.Partition] = max(firstEnd[r.Partition], r.Offset+1)
	}
	var second []*kgo.Record
	for _, r := range all {
		if r.Offset >= firstEnd[r.Partition] {
			second = append(second, r)
		}
	}
	perKey := func(recs []*kgo.Record) map[string][]string {
		m := map[string][]string{}
		for _, r := range recs {
			m[string(r.Key)] = append(m[string(r.Key)], string(r.Value))
		}
		return m
	}
	want, got := perKey(first), perKey(second)
	if len(got) != len(want) {
		t.Errorf("the rerun committed projections of %d orders; the first run of %d", len(got), len(want))
	}
	for key, values := range want {
		if strings.Join(got[key], "\n") != strings.Join(values, "\n") {
			t.Errorf("order %s: the rerun committed\n%s\nthe first run\n%s", key, strings.Join(got[key], "\n"), strings.Join(values, "\n"))
		}
	}
}

// TestResetFlagsChooseThePositionAndTopology: the position flags exclude
// one another and parse as documented; auto picks the reference
// application the id names.
func TestResetFlagsChooseThePositionAndTopology(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	base := resetConfig{Brokers: []string{"127.0.0.1:1"}, ApplicationID: "shop", Topology: "auto"}
	for _, tc := range []struct {
		name     string
		modify   func(*resetConfig)
		position string
		topology string
		err      string
	}{
		{"defaults", func(*resetConfig) {}, "the earliest offset", "none", ""},
		{"latest", func(c *resetConfig) { c.ToLatest = true }, "the latest offset", "none", ""},
		{"datetime", func(c *resetConfig) { c.ToDatetime = "2026-11-29T10:00:00Z" }, "the first offset at or after 2026-11-29T10:00:00Z", "none", ""},
		{"duration", func(c *resetConfig) { c.ByDuration = 24 * time.Hour }, "the first offset at or after 2026-11-28T12:00:00Z", "none", ""},
		{"auto names orders", func(c *resetConfig) { c.ApplicationID = "orders" }, "the earliest offset", "orders", ""},
		{"explicit topology", func(c *resetConfig) { c.Topology = "exposure" }, "the earliest offset", "exposure", ""},
		{"two positions", func(c *resetConfig) { c.ToLatest, c.ToEarliest = true, true }, "", "", "give one of"},
		{"bad datetime", func(c *resetConfig) { c.ToDatetime = "yesterday" }, "", "", "use RFC 3339"},
		{"negative duration", func(c *resetConfig) { c.ByDuration = -time.Hour }, "", "", "positive duration"},
		{"unknown topology", func(c *resetConfig) { c.Topology = "billing" }, "", "", "use one of counting, exposure, orders"},
		{"no application", func(c *resetConfig) { c.ApplicationID = "" }, "", "", "--application-id is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.modify(&c)
			o, topology, err := c.options(now)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("options = %v; want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.To.String() != tc.position || topology != tc.topology || (topology == "none") != (o.Topology == nil) {
				t.Errorf("position %q, topology %q (%v); want %q, %q", o.To, topology, o.Topology != nil, tc.position, tc.topology)
			}
		})
	}
}
