// Package reset resets an application of exactly so that it processes its
// input again, as Kafka Streams' application reset tool does: it refuses
// while the application's consumer group has members, rewinds (or
// forwards) the group's committed offsets on the input topics, moves them
// to the end of intermediate topics, deletes the internal topics
// (changelogs and repartition topics, which the application rebuilds) and
// wipes the instance's local state.
//
// [Prepare] works out a [Plan] without changing anything, so that a dry
// run can show it; [Plan.Apply] carries it out.
//
// Which topics are internal: those of the topology, when one is given,
// and in any case every topic named <application id>-…-changelog,
// <application id>-…-repartition or, for a foreign-key join,
// <application id>-…-subscription-registration-topic and
// <application id>-…-subscription-response-topic, the names the runtime
// and the DSL give them (Kafka Streams' too); a topic of that shape that starts with the name of another
// existing consumer group (application "orders-v2" beside "orders") is
// left alone.
package reset

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/exactly-go/exactly"
)

// Position is where the input offsets go: [Earliest], [Latest] or [At] a
// time.
type Position struct {
	latest bool
	at     time.Time
}

// Earliest is the first offset still in each partition.
func Earliest() Position { return Position{} }

// Latest is the end of each partition: the application skips what is
// there and processes only what arrives after.
func Latest() Position { return Position{latest: true} }

// At is, in each partition, the first record whose timestamp is at or
// after t, or the end when there is none.
func At(t time.Time) Position { return Position{at: t} }

// String names the position as the plan shows it.
func (p Position) String() string {
	switch {
	case p.latest:
		return "the latest offset"
	case !p.at.IsZero():
		return "the first offset at or after " + p.at.UTC().Format(time.RFC3339Nano)
	}
	return "the earliest offset"
}

// Options say what to reset.
type Options struct {
	// ApplicationID is the application's id: its consumer group and the
	// prefix of its internal topics. Required.
	ApplicationID string
	// Topology is the application's topology, when known: it names the
	// input, intermediate, changelog and repartition topics. Nil finds
	// them by name and by the group's committed offsets.
	Topology *exactly.Topology
	// InputTopics are the topics whose offsets are reset; default the
	// topology's inputs or, without a topology, every topic the group has
	// committed offsets on that is not internal.
	InputTopics []string
	// To is where the input offsets go; default Earliest.
	To Position
	// StateDir, if set, is the StateDir the application's instance ran
	// with: StateDir/ApplicationID is deleted. Run reset on every machine
	// that holds state of the application.
	StateDir string
}

// OffsetChange is the committed offset of one partition, before and
// after.
type OffsetChange struct {
	Topic     string
	Partition int32
	// From is the committed offset; -1 when none is committed.
	From int64
	To   int64
}

// Plan is what a reset does, worked out without changing anything.
type Plan struct {
	ApplicationID string
	// GroupState is the group's state as the coordinator reports it
	// (Empty, or Dead when the group does not exist).
	GroupState string
	// InputsFrom says how the input topics were found.
	InputsFrom string
	// To is where the input offsets go.
	To Position
	// Inputs are the new offsets of the input topics, Intermediate those
	// of the topics the topology writes and reads under a name of the
	// user's (they go to their end: the records there were derived from
	// input that is processed again).
	Inputs, Intermediate []OffsetChange
	// Delete are the internal topics to delete, sorted.
	Delete []string
	// Kept are topics with an internal topic's name that are not deleted,
	// with the reason.
	Kept []string
	// StateDir is the local state directory to delete, "" for none;
	// StateExists says whether it exists.
	StateDir    string
	StateExists bool
}

// ActiveMembersError is the refusal to reset an application whose
// consumer group has members.
type ActiveMembersError struct {
	Group   string
	Members []string
}

// Error names the members and what to do.
func (e *ActiveMembersError) Error() string {
	members := "members"
	if len(e.Members) == 1 {
		members = "member"
	}
	return fmt.Sprintf("consumer group %s has %d active %s: stop every instance of the application first (a static member, one with an instance id, stays in the group for its session timeout after it stops unless it left the group): %s",
		e.Group, len(e.Members), members, strings.Join(e.Members, "; "))
}

// Prepare works out the plan of a reset, changing nothing. It returns an
// *ActiveMembersError while the group has members.
func Prepare(ctx context.Context, adm *kadm.Client, o Options) (*Plan, error) {
	if o.ApplicationID == "" {
		return nil, errors.New("the application id is required: it names the consumer group and prefixes the internal topics")
	}
	p := &Plan{ApplicationID: o.ApplicationID, To: o.To}
	state, err := checkNoMembers(ctx, adm, o.ApplicationID)
	if err != nil {
		return nil, err
	}
	p.GroupState = state

	topics, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	groups, err := adm.ListGroups(ctx)
	if err != nil {
		return nil, fmt.Errorf("list consumer groups: %w", err)
	}
	committed, err := adm.FetchOffsets(ctx, o.ApplicationID)
	if errors.Is(err, kerr.GroupIDNotFound) {
		committed, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fetch the committed offsets of group %s: %w", o.ApplicationID, err)
	}

	internal := map[string]bool{}
	var intermediate []string
	if o.Topology != nil {
		for _, t := range o.Topology.ChangelogTopics(o.ApplicationID) {
			internal[t] = true
		}
		for _, t := range o.Topology.RepartitionTopics() {
			if internalName(o.ApplicationID, t) {
				internal[t] = true
			} else {
				intermediate = append(intermediate, t)
			}
		}
	}
	for _, t := range topics.Names() {
		if !internalName(o.ApplicationID, t) {
			continue
		}
		if owner := otherOwner(o.ApplicationID, t, groups.Groups()); owner != "" {
			p.Kept = append(p.Kept, fmt.Sprintf("%s: the consumer group %s exists, whose internal topic it may be", t, owner))
			delete(internal, t)
			continue
		}
		internal[t] = true
	}
	for t := range internal {
		if topics.Has(t) {
			p.Delete = append(p.Delete, t)
		}
	}
	slices.Sort(p.Delete)

	inputs := o.InputTopics
	switch {
	case len(inputs) > 0:
		p.InputsFrom = "named"
	case o.Topology != nil:
		p.InputsFrom = "the topology's sources"
		for _, t := range o.Topology.SourceTopics() {
			if !slices.Contains(o.Topology.RepartitionTopics(), t) {
				inputs = append(inputs, t)
			}
		}
	default:
		p.InputsFrom = "the topics the group committed offsets on, internal ones aside"
		for t := range committed {
			if !internal[t] && !internalName(o.ApplicationID, t) {
				inputs = append(inputs, t)
			}
		}
		if len(inputs) == 0 {
			return nil, fmt.Errorf("consumer group %s has no committed offsets on any topic but internal ones: name the input topics", o.ApplicationID)
		}
	}
	slices.Sort(inputs)
	for _, t := range append(slices.Clone(inputs), intermediate...) {
		if !topics.Has(t) {
			return nil, fmt.Errorf("topic %s does not exist: check the input topics and the application id", t)
		}
		if internal[t] {
			return nil, fmt.Errorf("topic %s is an internal topic of %s, deleted by the reset: it is no input", t, o.ApplicationID)
		}
	}

	if p.Inputs, err = changes(ctx, adm, committed, inputs, o.To); err != nil {
		return nil, err
	}
	if p.Intermediate, err = changes(ctx, adm, committed, intermediate, Latest()); err != nil {
		return nil, err
	}

	if o.StateDir != "" {
		p.StateDir = filepath.Join(o.StateDir, o.ApplicationID)
		switch _, err := os.Stat(p.StateDir); {
		case err == nil:
			p.StateExists = true
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("state directory: %w", err)
		}
	}
	return p, nil
}

// internalSuffixes end the names of internal topics: changelogs,
// repartition topics and a foreign-key join's two topics, as the runtime,
// the DSL and Kafka Streams name them.
var internalSuffixes = []string{"-changelog", "-repartition", "-subscription-registration-topic", "-subscription-response-topic"}

// internalName reports whether topic has the name of an internal topic of
// the application.
func internalName(applicationID, topic string) bool {
	if !strings.HasPrefix(topic, applicationID+"-") {
		return false
	}
	for _, suffix := range internalSuffixes {
		if strings.HasSuffix(topic, suffix) {
			return true
		}
	}
	return false
}

// otherOwner returns the longest other consumer group whose id, followed
// by a dash, prefixes topic: the application that more likely owns it.
func otherOwner(applicationID, topic string, groups []string) string {
	owner := ""
	for _, g := range groups {
		if g != applicationID && strings.HasPrefix(g, applicationID+"-") && strings.HasPrefix(topic, g+"-") && len(g) > len(owner) {
			owner = g
		}
	}
	return owner
}

// checkNoMembers returns the group's state, or an *ActiveMembersError.
func checkNoMembers(ctx context.Context, adm *kadm.Client, group string) (string, error) {
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return "", fmt.Errorf("describe consumer group %s: %w", group, err)
	}
	g, ok := described[group]
	if !ok {
		return "", fmt.Errorf("describe consumer group %s: no answer for it", group)
	}
	if g.Err != nil && !errors.Is(g.Err, kerr.GroupIDNotFound) {
		return "", fmt.Errorf("describe consumer group %s: %w", group, g.Err)
	}
	if len(g.Members) == 0 {
		if g.State == "" {
			return "Dead", nil
		}
		return g.State, nil
	}
	e := &ActiveMembersError{Group: group}
	for _, m := range g.Members {
		desc := fmt.Sprintf("member %s (client %s on %s", m.MemberID, m.ClientID, m.ClientHost)
		if m.InstanceID != nil {
			desc += ", instance " + *m.InstanceID
		}
		e.Members = append(e.Members, desc+")")
	}
	return "", e
}

// changes lists, for every partition of topics, the committed offset and
// the offset at position to.
func changes(ctx context.Context, adm *kadm.Client, committed kadm.OffsetResponses, topics []string, to Position) ([]OffsetChange, error) {
	if len(topics) == 0 {
		return nil, nil
	}
	var listed kadm.ListedOffsets
	var err error
	switch {
	case to.latest:
		listed, err = adm.ListEndOffsets(ctx, topics...)
	case !to.at.IsZero():
		listed, err = adm.ListOffsetsAfterMilli(ctx, to.at.UnixMilli(), topics...)
	default:
		listed, err = adm.ListStartOffsets(ctx, topics...)
	}
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", strings.Join(topics, ", "), err)
	}
	var out []OffsetChange
	listed.Each(func(l kadm.ListedOffset) {
		c := OffsetChange{Topic: l.Topic, Partition: l.Partition, From: -1, To: l.Offset}
		if r, ok := committed.Lookup(l.Topic, l.Partition); ok && r.Err == nil {
			c.From = r.At
		}
		out = append(out, c)
	})
	slices.SortFunc(out, func(a, b OffsetChange) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	return out, nil
}

// String lists what the plan does, for a person.
func (p *Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "reset of application %s (consumer group %s: %s, no active members)\n", p.ApplicationID, p.ApplicationID, p.GroupState)
	fmt.Fprintf(&b, "\ninput offsets, to %s (inputs: %s):\n", p.To, p.InputsFrom)
	writeChanges(&b, p.Inputs)
	if len(p.Intermediate) > 0 {
		b.WriteString("\nintermediate topics, to their end:\n")
		writeChanges(&b, p.Intermediate)
	}
	b.WriteString("\ninternal topics to delete:\n")
	if len(p.Delete) == 0 {
		b.WriteString("  none\n")
	}
	for _, t := range p.Delete {
		fmt.Fprintf(&b, "  %s\n", t)
	}
	for _, k := range p.Kept {
		fmt.Fprintf(&b, "  kept %s\n", k)
	}
	b.WriteString("\nlocal state to delete:\n")
	switch {
	case p.StateDir == "":
		b.WriteString("  none (no --state-dir): delete each instance's <state-dir>/" + p.ApplicationID + " before it starts again, or its stores keep the old state\n")
	case p.StateExists:
		fmt.Fprintf(&b, "  %s\n", p.StateDir)
	default:
		fmt.Fprintf(&b, "  none: %s does not exist\n", p.StateDir)
	}
	return b.String()
}

func writeChanges(b *strings.Builder, cs []OffsetChange) {
	if len(cs) == 0 {
		b.WriteString("  none\n")
	}
	for _, c := range cs {
		from := "none"
		if c.From >= 0 {
			from = fmt.Sprint(c.From)
		}
		fmt.Fprintf(b, "  %s partition %d: %s -> %d\n", c.Topic, c.Partition, from, c.To)
	}
}

// Apply carries the plan out: it checks again that the group has no
// members and that no instance holds the state directory, commits the
// new offsets, deletes the internal topics' committed offsets and the
// topics themselves, waits until the brokers no longer list them, and
// deletes the state directory. Each step is idempotent: after a failure,
// prepare and apply again.
func (p *Plan) Apply(ctx context.Context, adm *kadm.Client) error {
	if _, err := checkNoMembers(ctx, adm, p.ApplicationID); err != nil {
		return err
	}
	if p.StateExists {
		unlock, err := lockState(p.StateDir)
		if err != nil {
			return err
		}
		defer unlock()
	}
	var offsets kadm.Offsets
	for _, c := range append(slices.Clone(p.Inputs), p.Intermediate...) {
		offsets.Add(kadm.Offset{Topic: c.Topic, Partition: c.Partition, At: c.To, LeaderEpoch: -1})
	}
	if len(offsets) > 0 {
		if err := adm.CommitAllOffsets(ctx, p.ApplicationID, offsets); err != nil {
			return fmt.Errorf("commit the new offsets of group %s: %w", p.ApplicationID, err)
		}
	}
	if len(p.Delete) > 0 {
		committed, err := adm.FetchOffsetsForTopics(ctx, p.ApplicationID, p.Delete...)
		if errors.Is(err, kerr.GroupIDNotFound) {
			committed, err = nil, nil
		}
		if err != nil {
			return fmt.Errorf("fetch the committed offsets of group %s: %w", p.ApplicationID, err)
		}
		var stale kadm.TopicsSet
		committed.Each(func(r kadm.OffsetResponse) {
			if r.Err == nil && r.At >= 0 {
				stale.Add(r.Topic, r.Partition)
			}
		})
		if len(stale) > 0 {
			resp, err := adm.DeleteOffsets(ctx, p.ApplicationID, stale)
			if err == nil {
				err = resp.Error()
			}
			if err != nil {
				return fmt.Errorf("delete the committed offsets of group %s on its internal topics: %w", p.ApplicationID, err)
			}
		}
		resp, err := adm.DeleteTopics(ctx, p.Delete...)
		if err != nil {
			return fmt.Errorf("delete the internal topics: %w", err)
		}
		for _, r := range resp.Sorted() {
			if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
				return fmt.Errorf("delete topic %s: %w", r.Topic, r.Err)
			}
		}
		if err := waitDeleted(ctx, adm, p.Delete); err != nil {
			return err
		}
	}
	if p.StateExists {
		if err := os.RemoveAll(p.StateDir); err != nil {
			return fmt.Errorf("delete the local state: %w", err)
		}
	}
	return nil
}

// waitDeleted waits until the brokers list none of topics: a broker
// deletes a topic in the background, and an application started before
// that would find its old changelog.
func waitDeleted(ctx context.Context, adm *kadm.Client, topics []string) error {
	for {
		listed, err := adm.ListTopics(ctx, topics...)
		if err != nil {
			return fmt.Errorf("list topics being deleted: %w", err)
		}
		var left []string
		for _, t := range topics {
			if listed.Has(t) {
				left = append(left, t)
			}
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics %s are still listed after their deletion: %w", strings.Join(left, ", "), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lockState takes the lock an instance of the application holds on its
// state directory (see exactly.ErrStateDirLocked), so that the state of a
// running instance is never deleted.
func lockState(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, ".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock the state directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("an instance of the application runs on %s (its lock %s is held): stop it first", dir, path)
	}
	return func() { f.Close() }, nil
}
