package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/cmd/exactly/internal/kafkaflags"
	"github.com/exactly-go/exactly/cmd/exactly/internal/reset"
	"github.com/exactly-go/exactly/examples/counting"
	"github.com/exactly-go/exactly/examples/exposure"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/examples/payments"
	"github.com/exactly-go/exactly/examples/payments/gateway"
)

func init() { commands = append(commands, newResetCommand) }

// builtInTopologies are the reference applications' topologies, built as
// the commands of exactly run them with their default topics, by the name
// `exactly reset --topology` takes. A reset only reads their topic names.
var builtInTopologies = map[string]func(applicationID string) (*exactly.Topology, error){
	"orders": func(string) (*exactly.Topology, error) { return orders.Topology(orders.Options{}) },
	"payments": func(string) (*exactly.Topology, error) {
		return payments.DirectTopology(payments.Options{Gateway: &gateway.Client{}})
	},
	"payments-validator": func(string) (*exactly.Topology, error) {
		return payments.ValidatorTopology(payments.Options{Gateway: &gateway.Client{}})
	},
	"payments-caller": func(string) (*exactly.Topology, error) {
		return payments.CallerTopology(payments.Options{Gateway: &gateway.Client{}})
	},
	"counting": func(string) (*exactly.Topology, error) { return counting.Topology("input", "output", false) },
	"exposure": func(id string) (*exactly.Topology, error) { return exposure.CustomerExposure(id, 1) },
	"suspicious-orders": func(id string) (*exactly.Topology, error) {
		return exposure.SuspiciousOrderCounts(id, nil)
	},
}

// resetConfig is the configuration of `exactly reset`, one field per flag.
type resetConfig struct {
	Brokers       []string
	ApplicationID string
	Topology      string
	InputTopics   []string
	ToEarliest    bool
	ToLatest      bool
	ToDatetime    string
	ByDuration    time.Duration
	StateDir      string
	DryRun        bool
	Timeout       time.Duration
	Security      kafkaflags.Security
}

func newResetCommand() *cobra.Command {
	c := resetConfig{Topology: "auto", Timeout: time.Minute}
	names := builtInNames()
	var security *kafkaflags.Flags
	cmd := &cobra.Command{
		Use:   "reset",
		Short: "Reset an application so that it processes its input again (offsets, internal topics, local state)",
		Long: `Resets an application as Kafka Streams' application reset tool does, so that
its next run processes the input again from a chosen position and produces
what a first run would:

  1. refuses while the consumer group --application-id has members, and
     names them: stop every instance first (an instance started with
     --instance-id stays a member for its session timeout after it stops);
  2. sets the group's committed offsets on the input topics to the earliest
     offset (--to-earliest, the default), the latest (--to-latest), the
     first at or after a time (--to-datetime 2026-11-29T10:00:00Z) or a
     duration ago (--by-duration 24h);
  3. sets them to the end of intermediate topics (topics the application
     writes and reads under names of yours): their records came from input
     that is processed again;
  4. deletes the internal topics: the changelogs and repartition topics,
     which the application rebuilds, and waits until they are gone;
  5. with --state-dir, deletes <state-dir>/<application-id>, the local
     stores of the instance that ran with that --state-dir (refused while
     an instance holds it). Run reset with --state-dir on every machine
     that ran an instance, or delete those directories yourself: an
     instance that keeps its old stores would resume from them.

Which topics: --topology names a reference application (` + strings.Join(names, ", ") + `),
whose topology says its inputs and internal topics; "auto" (the default)
takes the one the application id names, if any, else "none". Without a
topology, the inputs are the topics the group has committed offsets on,
and the internal topics are found by name: <application-id>-…-changelog,
-…-repartition, -…-subscription-registration-topic and
-…-subscription-response-topic, the names the runtime gives them,
except a topic that starts with the id of another consumer group (the
internal topics of application orders-v2 are not those of orders). In
every case every topic of that name is deleted, and --input-topics names
the inputs explicitly. The output topics are left as they are: consumers
of the output see the reprocessed results after the old ones.

--dry-run prints the plan (every offset from and to, every topic, the
directory) and changes nothing; so does every run, before it acts.`,
		Example: `  exactly reset --brokers 127.0.0.1:9092 --application-id orders --dry-run
  exactly reset --brokers 127.0.0.1:9092 --application-id orders --state-dir /var/lib/exactly
  exactly reset --brokers kafka:9093 --tls --sasl-mechanism scram-sha-512 --sasl-user ops \
      --sasl-password-file /run/secrets/kafka --application-id shop --input-topics events \
      --by-duration 24h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if c.Security, err = security.Load(); err != nil {
				return err
			}
			return c.Security.Explain(runReset(cmd, c))
		},
	}
	f := cmd.Flags()
	security = kafkaflags.Register(f)
	f.StringSliceVar(&c.Brokers, "brokers", nil, "Kafka seed brokers, host:port[,host:port] (required)")
	f.StringVar(&c.ApplicationID, "application-id", "", "the application to reset: its consumer group and the prefix of its internal topics (required)")
	f.StringVar(&c.Topology, "topology", c.Topology, "the application's topology: "+strings.Join(names, ", ")+", none, or auto (the one the application id names, else none)")
	f.StringSliceVar(&c.InputTopics, "input-topics", nil, "input topics whose offsets to reset (default: the topology's, or the topics the group has committed offsets on)")
	f.BoolVar(&c.ToEarliest, "to-earliest", false, "reset the input offsets to the earliest offset (the default)")
	f.BoolVar(&c.ToLatest, "to-latest", false, "reset the input offsets to the latest offset: skip the input there is")
	f.StringVar(&c.ToDatetime, "to-datetime", "", "reset the input offsets to the first record at or after this time: RFC 3339 (2026-11-29T10:00:00Z), or without a zone in local time")
	f.DurationVar(&c.ByDuration, "by-duration", 0, "reset the input offsets to the first record at or after this long ago (e.g. 24h)")
	f.StringVar(&c.StateDir, "state-dir", "", "the --state-dir the application's instance ran with: delete <state-dir>/<application-id> (default: leave local state alone)")
	f.BoolVar(&c.DryRun, "dry-run", false, "print what the reset would do and change nothing")
	f.DurationVar(&c.Timeout, "timeout", c.Timeout, "give up when the reset has not finished after this long")
	return cmd
}

// options turns the flags into the reset's options; now is the time
// --by-duration counts back from.
func (c resetConfig) options(now time.Time) (reset.Options, string, error) {
	o := reset.Options{ApplicationID: c.ApplicationID, InputTopics: c.InputTopics, StateDir: c.StateDir}
	if len(c.Brokers) == 0 {
		return o, "", errors.New("--brokers is required (or EXACTLY_BROKERS): Kafka seed brokers, host:port[,host:port]")
	}
	if c.ApplicationID == "" {
		return o, "", errors.New("--application-id is required: the application to reset")
	}
	chosen := 0
	for _, set := range []bool{c.ToEarliest, c.ToLatest, c.ToDatetime != "", c.ByDuration != 0} {
		if set {
			chosen++
		}
	}
	if chosen > 1 {
		return o, "", errors.New("give one of --to-earliest, --to-latest, --to-datetime and --by-duration")
	}
	switch {
	case c.ToLatest:
		o.To = reset.Latest()
	case c.ToDatetime != "":
		t, err := time.Parse(time.RFC3339Nano, c.ToDatetime)
		if err != nil {
			t, err = time.ParseInLocation("2006-01-02T15:04:05.999999999", c.ToDatetime, time.Local)
		}
		if err != nil {
			return o, "", fmt.Errorf("--to-datetime %q: use RFC 3339, e.g. 2026-11-29T10:00:00Z, or 2026-11-29T10:00:00 in local time", c.ToDatetime)
		}
		o.To = reset.At(t)
	case c.ByDuration < 0:
		return o, "", fmt.Errorf("--by-duration %s: give a positive duration, how long ago", c.ByDuration)
	case c.ByDuration > 0:
		o.To = reset.At(now.Add(-c.ByDuration))
	}
	name := c.Topology
	if name == "auto" {
		name = "none"
		if _, ok := builtInTopologies[c.ApplicationID]; ok {
			name = c.ApplicationID
		}
	}
	if name != "none" {
		build, ok := builtInTopologies[name]
		if !ok {
			return o, "", fmt.Errorf("--topology %q: use one of %s, none or auto", c.Topology, strings.Join(builtInNames(), ", "))
		}
		top, err := build(c.ApplicationID)
		if err != nil {
			return o, "", fmt.Errorf("build the %s topology: %w", name, err)
		}
		o.Topology = top
	}
	return o, name, nil
}

// builtInNames are the names of builtInTopologies, sorted.
func builtInNames() []string {
	return slices.Sorted(maps.Keys(builtInTopologies))
}

func runReset(cmd *cobra.Command, c resetConfig) error {
	o, topology, err := c.options(time.Now())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), c.Timeout)
	defer cancel()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, c.Security.ClientOptions()...)...)
	if err != nil {
		return fmt.Errorf("--brokers %s: %w", strings.Join(c.Brokers, ","), err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	plan, err := reset.Prepare(ctx, adm, o)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "topology: %s\n%s", topology, plan)
	if c.DryRun {
		fmt.Fprintln(out, "\ndry run: nothing changed")
		return nil
	}
	if err := plan.Apply(ctx, adm); err != nil {
		return fmt.Errorf("reset %s: %w", c.ApplicationID, err)
	}
	fmt.Fprintf(out, "\ndone: %s processes its input again from %s when it starts\n", c.ApplicationID, plan.To)
	return nil
}
