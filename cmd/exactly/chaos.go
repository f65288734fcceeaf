package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/exactly-go/exactly/chaos"
	"github.com/exactly-go/exactly/cmd/exactly/internal/kafkaflags"
	"github.com/exactly-go/exactly/examples/counting"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/verify"
)

func init() { commands = append(commands, newChaosCommand) }

// chaosOptions are the flags of `exactly chaos`.
type chaosOptions struct {
	Topology       string
	ApplicationID  string
	Instances      int
	MaxInstances   int
	Kills          int
	Zombies        int
	BrokerRestarts int
	Churn          int
	Duration       time.Duration
	Seed           uint64
	SessionTimeout time.Duration
	Partitions     int32
	Orders         int
	Records        int
	Keys           int
	InputTopic     string
	OutputTopic    string
	Brokers        []string
	VerifyCommand  string
	VerifyTimeout  time.Duration
	Dir            string
	CatchUp        time.Duration
	RestartDelay   time.Duration
	ZombieFor      time.Duration
	BrokerDowntime time.Duration
	Quiesce        bool
	DryRun         bool
	// Security is the TLS and SASL of the cluster named by Brokers.
	Security kafkaflags.Security
}

func newChaosCommand() *cobra.Command {
	o := chaosOptions{Topology: "orders", Instances: 3, Kills: 10, Zombies: 1, BrokerRestarts: 1, Duration: time.Minute,
		Seed: 1, SessionTimeout: 3 * time.Second, Partitions: 4, Orders: 2000, Records: 20000, Keys: 100,
		VerifyTimeout: 5 * time.Minute, CatchUp: 3 * time.Minute, RestartDelay: 200 * time.Millisecond, BrokerDowntime: time.Second,
		Quiesce: true}
	var placeholders strings.Builder
	for _, p := range chaos.Placeholders {
		fmt.Fprintf(&placeholders, "  %-18s %-24s %s\n", p.Name, p.Env, p.Meaning)
	}
	var security *kafkaflags.Flags
	cmd := &cobra.Command{
		Use:   "chaos [flags] [-- instance command line]",
		Short: "Run an application's instances under SIGKILLs, zombies, broker restarts and rebalance storms, then verify",
		Long: `Starts a Kafka-protocol broker as a child process with a data directory
(unless --brokers names a running cluster), starts --instances instances of
the command line after "--", produces the input over --duration, and
meanwhile carries out a schedule drawn from --seed: --kills SIGKILLs of
instances (each started again after --restart-delay), --zombies instances
frozen with SIGSTOP past the session timeout and then resumed with SIGCONT,
--broker-restarts SIGKILLs of the broker (started again on the same port and
data), and --churn instances added or removed (a rebalance each). Then it
waits for the application's group to commit the whole input, stops the
instances gracefully, verifies what they committed, and prints a report:
kills, zombies, broker restarts, rebalances, records in and out, duplicates,
lost and different records. Exit status 0 only if the group caught up and
every verifier holds.

The instance command learns where to run from placeholders in its
arguments, replaced at each start, and from environment variables with the
same values (the exactly command reads the variables as its flags, so
"exactly run orders" needs no flag at all):
` + placeholders.String() + `
"exactly" as the program runs this very executable when no exactly is on
PATH. Without a command line, --topology orders runs "exactly run orders".

--topology says what the instances run, which input to generate and how to
verify:
  orders    the order projection: --orders orders' events with duplicates,
            reordering, orphans and malformed records; verified by the
            replay verifier and the orders audit
  counting  examples/counting (or your binary built on it): --records
            records "r<i>" over --keys keys "k<i>"; verified by replay
  custom    your own topology: the same string records as counting;
            verified only by --verify-command, which must exit 0
--verify-command (run with sh -c, {brokers} and {application-id} replaced)
adds a verifier of your own to any topology. --orders 0 or --records 0
produces nothing: the input topic holds the input already.

The embedded broker (exactly broker, franz-go's kfake) is killed only at a
quiet moment (--quiesce-broker-kills): the input is held and the kill comes
once the group has committed it and no transaction is open. After a SIGKILL
kfake aborts the transactions that were open without writing abort markers,
and read_committed readers then skip every later transaction of those
producers: a broker fault, not the application's, which the verifiers would
report as lost records.

Kills, zombies and broker restarts are spread evenly over --duration: for
a soak of 1000 kills, give the kills the time to land, e.g. --kills 1000
--duration 20m. Logs of every process, the instances' state and the broker's
data are kept in --dir (default: a temporary directory removed after a run
that holds); events.log there lists the schedule as it was carried out.

Against a secured cluster (--brokers with the --tls-* and --sasl-* flags)
the harness's own clients and the verifiers use them, and the instances
receive them as EXACTLY_TLS*, EXACTLY_SASL_* environment variables (the
password as EXACTLY_SASL_PASSWORD_FILE when it came from a file); a
--verify-command must be given them itself.`,
		Example: `  # the order projection, 3 instances, 10 kills, a zombie and a broker restart in a minute
  exactly chaos

  # the same, spelled out, with a rebalance storm
  exactly chaos --kills 20 --zombies 2 --broker-restarts 2 --churn 20 --duration 1m -- \
      exactly run orders --log-level info

  # your own binary built on examples/counting, verified by replay
  exactly chaos --topology counting --application-id counting --kills 5 -- \
      ./mycounter --brokers {brokers} --state-dir {state-dir} --instance-id {instance-id}

  # your own topology, verified by your own program
  exactly chaos --topology custom --application-id shop --input-topic events \
      --verify-command './shop verify --brokers {brokers}' -- ./shop --brokers {brokers}

  # print the schedule only
  exactly chaos --kills 1000 --duration 20m --dry-run`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 0 || dash < 0 && len(args) > 0 {
				return fmt.Errorf("unexpected argument %q: put the instance command line after --", args[0])
			}
			var err error
			if o.Security, err = security.Load(); err != nil {
				return err
			}
			return o.Security.Explain(runChaos(cmd, o, args))
		},
	}
	f := cmd.Flags()
	security = kafkaflags.Register(f)
	f.StringVar(&o.Topology, "topology", o.Topology, "what the instances run: orders, counting or custom (see above)")
	f.StringVar(&o.ApplicationID, "application-id", "", "the instances' application id (consumer group); default: the topology's name (required for custom)")
	f.IntVar(&o.Instances, "instances", o.Instances, "instances running at the start")
	f.IntVar(&o.MaxInstances, "max-instances", 0, "most instances running at once under --churn (default --instances + 2)")
	f.IntVar(&o.Kills, "kills", o.Kills, "SIGKILLs of instances over --duration")
	f.IntVar(&o.Zombies, "zombies", o.Zombies, "instances frozen with SIGSTOP past the session timeout, then resumed")
	f.IntVar(&o.BrokerRestarts, "broker-restarts", o.BrokerRestarts, "SIGKILLs and restarts of the broker (not with --brokers)")
	f.IntVar(&o.Churn, "churn", 0, "instances added or removed over --duration (a rebalance storm: e.g. --churn 30 --duration 1m changes membership every 1-3 s)")
	f.DurationVar(&o.Duration, "duration", o.Duration, "time over which the schedule and the input are spread")
	f.Uint64Var(&o.Seed, "seed", o.Seed, "seed of the schedule and of the generated input")
	f.DurationVar(&o.SessionTimeout, "session-timeout", o.SessionTimeout, "the instances' group session timeout (passed to them)")
	f.Int32Var(&o.Partitions, "partitions", o.Partitions, "partitions of the topics the harness creates")
	f.IntVar(&o.Orders, "orders", o.Orders, "--topology orders: orders to generate, about 11 events each (0: produce nothing)")
	f.IntVar(&o.Records, "records", o.Records, "--topology counting or custom: records to generate (0: produce nothing)")
	f.IntVar(&o.Keys, "keys", o.Keys, "--topology counting or custom: distinct keys of the generated records")
	f.StringVar(&o.InputTopic, "input-topic", "", "input topic (default: order-events for orders, input otherwise)")
	f.StringVar(&o.OutputTopic, "output-topic", "", "--topology counting: output topic (default output)")
	f.StringSliceVar(&o.Brokers, "brokers", nil, "use this running cluster instead of starting a broker (no broker restarts then)")
	f.StringVar(&o.VerifyCommand, "verify-command", "", "a verifier of your own, run with sh -c after the instances stopped; must exit 0")
	f.DurationVar(&o.VerifyTimeout, "verify-timeout", o.VerifyTimeout, "bound of each verifier")
	f.StringVar(&o.Dir, "dir", "", "directory for logs, state and broker data, kept (default: temporary, removed after a run that holds)")
	f.DurationVar(&o.CatchUp, "catch-up", o.CatchUp, "how long after --duration the instances may take to commit the whole input")
	f.DurationVar(&o.RestartDelay, "restart-delay", o.RestartDelay, "how long a killed instance stays dead")
	f.DurationVar(&o.ZombieFor, "zombie-for", 0, "how long a zombie stays frozen (default twice --session-timeout)")
	f.DurationVar(&o.BrokerDowntime, "broker-downtime", o.BrokerDowntime, "how long a killed broker stays dead")
	f.BoolVar(&o.Quiesce, "quiesce-broker-kills", o.Quiesce, "kill the broker only once the group has committed the input so far and no transaction is open (needed by the embedded broker, see above)")
	f.BoolVar(&o.DryRun, "dry-run", false, "print the schedule and exit")
	return cmd
}

func runChaos(cmd *cobra.Command, o chaosOptions, command []string) error {
	cfg, err := o.config(command)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if o.DryRun {
		for _, ev := range cfg.Schedule() {
			fmt.Fprintln(out, ev)
		}
		return nil
	}
	printChaosSetup(out, cfg)
	cfg.Progress = out
	rep, err := chaos.Run(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%s", rep)
	if !rep.OK() {
		return &exitError{code: 1, err: errors.New("the chaos run did not hold")}
	}
	return nil
}

// config turns the flags into the harness's configuration.
func (o chaosOptions) config(command []string) (chaos.Config, error) {
	exe, err := os.Executable()
	if err != nil {
		return chaos.Config{}, fmt.Errorf("find this program to start the broker: %w", err)
	}
	cfg := chaos.Config{
		ApplicationID: o.ApplicationID, Instances: o.Instances, MaxInstances: o.MaxInstances,
		SessionTimeout: o.SessionTimeout, Brokers: o.Brokers, Partitions: o.Partitions,
		Duration: o.Duration, Seed: o.Seed, Kills: o.Kills, Zombies: o.Zombies, BrokerRestarts: o.BrokerRestarts, Churn: o.Churn,
		RestartDelay: o.RestartDelay, ZombieFor: o.ZombieFor, BrokerDowntime: o.BrokerDowntime, CatchUp: o.CatchUp, Dir: o.Dir,
		QuiesceBrokerKills: o.Quiesce,
		// The progress line reports the run; its events go to events.log.
		Logger: slog.New(slog.DiscardHandler),
	}
	if len(o.Brokers) == 0 {
		if o.Security.TLS != nil || o.Security.SASL != nil {
			return cfg, errors.New("the --tls-* and --sasl-* flags are for a cluster named by --brokers: the broker chaos starts itself is plaintext")
		}
		cfg.BrokerCommand = []string{exe, "broker", "--listen", "{listen}", "--data-dir", "{data-dir}"}
	}
	cfg.ClientOptions = o.Security.ClientOptions()
	cfg.Env = o.Security.Env()
	if cfg.ApplicationID == "" && o.Topology != "custom" {
		cfg.ApplicationID = o.Topology
	}
	input := o.InputTopic
	switch o.Topology {
	case "orders":
		if input == "" {
			input = orders.DefaultInputTopic
		}
		opts := orders.Options{InputTopic: input, OutputTopic: orders.DefaultOutputTopic, DeadLetterTopic: orders.DefaultDeadLetterTopic}
		top, err := orders.Topology(opts)
		if err != nil {
			return cfg, err
		}
		cfg.Topics = []chaos.Topic{{Name: input}, {Name: opts.OutputTopic, Configs: map[string]string{"cleanup.policy": "compact"}}, {Name: opts.DeadLetterTopic}}
		if o.Orders > 0 {
			cfg.Input = chaos.OrdersInput(input, o.Seed, o.Orders, o.Partitions)
		}
		cfg.Verifiers = []chaos.Verifier{
			chaos.Replay(top, verify.ReplayConfig{Timeout: o.VerifyTimeout, ClientOptions: cfg.ClientOptions}),
			chaos.OrdersAudit(verify.Config{Options: opts, Timeout: o.VerifyTimeout, ClientOptions: cfg.ClientOptions}),
		}
		if len(command) == 0 {
			command = []string{exe, "run", "orders"}
		}
	case "counting", "custom":
		if input == "" {
			input = "input"
		}
		output := o.OutputTopic
		if output == "" {
			output = "output"
		}
		cfg.Topics = []chaos.Topic{{Name: input}}
		if o.Records > 0 {
			cfg.Input = chaos.KeyedInput(input, o.Records, o.Keys)
		}
		if o.Topology == "counting" {
			top, err := counting.Topology(input, output, false)
			if err != nil {
				return cfg, err
			}
			cfg.Topics = append(cfg.Topics, chaos.Topic{Name: output})
			cfg.Verifiers = []chaos.Verifier{chaos.Replay(top, verify.ReplayConfig{Timeout: o.VerifyTimeout, ClientOptions: cfg.ClientOptions})}
		} else if o.VerifyCommand == "" {
			return cfg, errors.New("--topology custom needs --verify-command: a program that checks your application's committed output and exits 0 when it holds")
		}
	default:
		return cfg, fmt.Errorf("--topology %q: use orders, counting or custom", o.Topology)
	}
	if len(command) == 0 {
		return cfg, fmt.Errorf("--topology %s: give the instance command line after --, e.g. -- ./myapp --brokers {brokers}", o.Topology)
	}
	if o.VerifyCommand != "" {
		cfg.Verifiers = append(cfg.Verifiers, chaos.Command("sh", "-c", o.VerifyCommand))
	}
	cfg.InputTopics = []string{input}
	cfg.Command = resolveExactly(command, exe)
	return cfg, nil
}

// resolveExactly runs this executable for the program "exactly" when no
// exactly is on PATH (go run, a fresh checkout).
func resolveExactly(command []string, exe string) []string {
	if command[0] != "exactly" {
		return command
	}
	if _, err := exec.LookPath("exactly"); err == nil {
		return command
	}
	return append([]string{exe}, command[1:]...)
}

func printChaosSetup(out io.Writer, cfg chaos.Config) {
	broker := "owned: a child process with a data directory, killed for real"
	if len(cfg.Brokers) > 0 {
		broker = strings.Join(cfg.Brokers, ",")
	}
	fmt.Fprintf(out, "broker      %s\n", broker)
	fmt.Fprintf(out, "instances   %d × %s\n", cfg.Instances, strings.Join(cfg.Command, " "))
	fmt.Fprintf(out, "input       %d records into %s over %s\n", len(cfg.Input), strings.Join(cfg.InputTopics, ","), cfg.Duration)
	fmt.Fprintf(out, "schedule    seed %d: %d kills, %d zombies, %d broker restarts, %d instance changes\n\n",
		cfg.Seed, cfg.Kills, cfg.Zombies, cfg.BrokerRestarts, cfg.Churn)
}
