package reset

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// cluster is a broker with topics of two applications, "app" and
// "app-v2", and committed offsets of both groups.
func cluster(t *testing.T) (*kfake.Cluster, *kadm.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "in", "out", "app-counts-changelog", "app-x-repartition", "app-j-subscription-response-topic", "app-v2-counts-changelog", "other-changelog"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx := context.Background()
	var recs []*kgo.Record
	for i := range 10 {
		recs = append(recs, &kgo.Record{Topic: "in", Partition: int32(i % 2), Value: []byte("v"), Timestamp: time.UnixMilli(int64(1000 * i))})
	}
	pcl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer pcl.Close()
	if err := pcl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	var app, v2 kadm.Offsets
	app.Add(kadm.Offset{Topic: "in", Partition: 0, At: 5, LeaderEpoch: -1})
	app.Add(kadm.Offset{Topic: "in", Partition: 1, At: 3, LeaderEpoch: -1})
	app.Add(kadm.Offset{Topic: "app-x-repartition", Partition: 0, At: 0, LeaderEpoch: -1})
	v2.Add(kadm.Offset{Topic: "in", Partition: 0, At: 1, LeaderEpoch: -1})
	for group, o := range map[string]kadm.Offsets{"app": app, "app-v2": v2} {
		if err := adm.CommitAllOffsets(ctx, group, o); err != nil {
			t.Fatal(err)
		}
	}
	return c, adm
}

// TestPrepareFindsInternalTopicsByNameAndInputsByCommittedOffsets: without
// a topology, the inputs are the topics the group committed on, the
// internal topics those named after the application, less those of
// another application whose id extends it; Prepare changes nothing.
func TestPrepareFindsInternalTopicsByNameAndInputsByCommittedOffsets(t *testing.T) {
	_, adm := cluster(t)
	ctx := context.Background()
	plan, err := Prepare(ctx, adm, Options{ApplicationID: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"app-counts-changelog", "app-j-subscription-response-topic", "app-x-repartition"}; !slices.Equal(plan.Delete, want) {
		t.Errorf("Delete = %v; want %v", plan.Delete, want)
	}
	if len(plan.Kept) != 1 || !strings.HasPrefix(plan.Kept[0], "app-v2-counts-changelog: the consumer group app-v2 exists") {
		t.Errorf("Kept = %v; want app-v2's changelog, for its group", plan.Kept)
	}
	want := []OffsetChange{{"in", 0, 5, 0}, {"in", 1, 3, 0}}
	if !slices.Equal(plan.Inputs, want) {
		t.Errorf("Inputs = %v; want %v", plan.Inputs, want)
	}
	s := plan.String()
	for _, line := range []string{"in partition 0: 5 -> 0", "  app-counts-changelog\n", "kept app-v2-counts-changelog", "to the earliest offset"} {
		if !strings.Contains(s, line) {
			t.Errorf("the plan lacks %q:\n%s", line, s)
		}
	}
	topics, _ := adm.ListTopics(ctx)
	committed, _ := adm.FetchOffsets(ctx, "app")
	if !topics.Has("app-counts-changelog") || committed["in"][0].At != 5 {
		t.Error("Prepare changed the cluster")
	}

	latest, err := Prepare(ctx, adm, Options{ApplicationID: "app", To: Latest(), InputTopics: []string{"in"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []OffsetChange{{"in", 0, 5, 5}, {"in", 1, 3, 5}}; !slices.Equal(latest.Inputs, want) {
		t.Errorf("to latest: Inputs = %v; want %v", latest.Inputs, want)
	}
	at, err := Prepare(ctx, adm, Options{ApplicationID: "app", To: At(time.UnixMilli(4000))})
	if err != nil {
		t.Fatal(err)
	}
	// Partition 0 holds the records of seconds 0, 2, 4, 6, 8; partition 1
	// those of 1, 3, 5, 7, 9.
	if want := []OffsetChange{{"in", 0, 5, 2}, {"in", 1, 3, 2}}; !slices.Equal(at.Inputs, want) {
		t.Errorf("to 4s: Inputs = %v; want %v", at.Inputs, want)
	}
	if _, err := Prepare(ctx, adm, Options{ApplicationID: "app", InputTopics: []string{"app-counts-changelog"}}); err == nil || !strings.Contains(err.Error(), "internal topic") {
		t.Errorf("Prepare with an internal topic as input = %v; want a refusal", err)
	}
	if _, err := Prepare(ctx, adm, Options{ApplicationID: "fresh"}); err == nil || !strings.Contains(err.Error(), "name the input topics") {
		t.Errorf("Prepare for a group without offsets = %v; want to be asked for the inputs", err)
	}
}

// TestApplyRewindsDeletesAndWipesTheLocalState: the offsets move, the
// internal topics and their committed offsets go, the other application's
// topics stay, and the state directory is deleted unless an instance
// holds its lock.
func TestApplyRewindsDeletesAndWipesTheLocalState(t *testing.T) {
	_, adm := cluster(t)
	ctx := context.Background()
	stateDir := t.TempDir()
	store := filepath.Join(stateDir, "app", "0_0")
	if err := os.MkdirAll(store, 0o755); err != nil {
		t.Fatal(err)
	}

	held, err := lockState(filepath.Join(stateDir, "app"))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := Prepare(ctx, adm, Options{ApplicationID: "app", StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	if !plan.StateExists || !strings.Contains(plan.String(), filepath.Join(stateDir, "app")) {
		t.Errorf("the plan does not name the state directory:\n%s", plan)
	}
	if err := plan.Apply(ctx, adm); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("Apply while an instance holds the state = %v; want a refusal", err)
	}
	held()
	if err := plan.Apply(ctx, adm); err != nil {
		t.Fatal(err)
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]bool{"app-counts-changelog": false, "app-x-repartition": false, "app-v2-counts-changelog": true, "in": true, "out": true} {
		if topics.Has(topic) != want {
			t.Errorf("topic %s exists: %v; want %v", topic, topics.Has(topic), want)
		}
	}
	committed, err := adm.FetchOffsets(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if committed["in"][0].At != 0 || committed["in"][1].At != 0 {
		t.Errorf("committed offsets on in = %+v; want 0 and 0", committed["in"])
	}
	if _, ok := committed["app-x-repartition"]; ok {
		t.Error("the offsets on the deleted repartition topic are still committed")
	}
	if v2, _ := adm.FetchOffsets(ctx, "app-v2"); v2["in"][0].At != 1 {
		t.Errorf("app-v2's offset moved: %+v", v2["in"])
	}
	if _, err := os.Stat(filepath.Join(stateDir, "app")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the state directory is still there: %v", err)
	}
}

// TestPrepareRefusesWhileTheGroupHasMembersNamingThem: a running consumer
// of the group stops the reset, and the error names it.
func TestPrepareRefusesWhileTheGroupHasMembersNamingThem(t *testing.T) {
	c, adm := cluster(t)
	member, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumerGroup("app"), kgo.ConsumeTopics("in"),
		kgo.ClientID("instance-a"), kgo.InstanceID("a"), kgo.SessionTimeout(6*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		member.PollFetches(ctx)
		described, _ := adm.DescribeGroups(ctx, "app")
		if len(described["app"].Members) > 0 || ctx.Err() != nil {
			break
		}
	}
	_, err = Prepare(ctx, adm, Options{ApplicationID: "app"})
	var active *ActiveMembersError
	if !errors.As(err, &active) || len(active.Members) != 1 || !strings.Contains(err.Error(), "has 1 active member:") || !strings.Contains(err.Error(), "client instance-a") || !strings.Contains(err.Error(), "instance a") {
		t.Errorf("Prepare with a member = %v; want an ActiveMembersError naming client instance-a, instance a", err)
	}
}
