package chaos

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures a run. Command, ApplicationID, and either Brokers or
// BrokerCommand are required; every other field has a default.
type Config struct {
	// Command is the command line of one application instance. Before each
	// start of an instance, these placeholders in its arguments are
	// replaced (see Placeholders for the environment variables that carry
	// the same values):
	//
	//	{brokers}          the seed brokers, host:port[,host:port]
	//	{application-id}   ApplicationID
	//	{instance}         the instance's slot: 0, 1, 2 …
	//	{instance-id}      a stable id per slot, <application-id>-<slot>
	//	{state-dir}        a directory of the slot's own, kept across restarts
	//	{http}             a free loopback address, host:port
	//	{session-timeout}  SessionTimeout, as a Go duration ("3s")
	//	{partitions}       Partitions
	Command []string
	// Env is added to the environment of every instance.
	Env []string

	// Instances is how many instances run at the start; default 3.
	Instances int
	// MaxInstances bounds the instances running at once while instances
	// are added and removed; default Instances+2. Instance churn never
	// brings the count below max(1, Instances-1).
	MaxInstances int
	// ApplicationID is the instances' application id: their consumer
	// group, whose committed offsets on InputTopics tell how far the run
	// has come, and the verifiers' subject.
	ApplicationID string
	// SessionTimeout is the instances' group session timeout (the
	// harness passes it to them, see Command): a zombie is frozen for
	// ZombieFor, which must exceed it. Default 3s.
	SessionTimeout time.Duration

	// Brokers are the seed brokers of a running cluster to use. Leave it
	// empty to have the harness start its own broker with BrokerCommand.
	Brokers []string
	// BrokerCommand starts the broker the harness owns, as a child
	// process that it can kill with SIGKILL and start again: "{listen}"
	// in its arguments becomes a loopback host:port, the same at every
	// start, and "{data-dir}" a directory kept across restarts, where the
	// broker must keep its records, transactions and group offsets. For
	// the exactly command: exactly broker --listen {listen} --data-dir
	// {data-dir}.
	BrokerCommand []string
	// Topics are created before the instances start, unless they exist.
	Topics []Topic
	// Partitions is the partition count of Topics that give none, and is
	// passed to the instances; default 4.
	Partitions int32
	// ClientOptions are added to the harness's own Kafka clients (TLS,
	// SASL for an existing cluster).
	ClientOptions []kgo.Opt

	// Input is produced over Duration, at an even pace, while the chaos
	// happens. Nil produces nothing: the input is then whatever
	// InputTopics already hold.
	Input []*kgo.Record
	// InputTopics are the topics the application consumes from its
	// committed offsets; the run ends when the group has committed every
	// record of them. Required.
	InputTopics []string

	// Duration is how long the schedule and the input are spread over;
	// default one minute. The run lasts longer: instances catch up with
	// the input afterwards (see CatchUp) and the verifiers run.
	Duration time.Duration
	// Seed makes the schedule reproducible: equal configurations give
	// equal schedules (see Schedule).
	Seed uint64
	// Kills is the number of SIGKILLs delivered to instances over
	// Duration; a killed instance starts again after RestartDelay.
	Kills int
	// Zombies is the number of instances frozen with SIGSTOP for
	// ZombieFor, then resumed with SIGCONT: their group has moved on
	// without them, and they must not be able to publish anything.
	Zombies int
	// BrokerRestarts is the number of times the broker is killed with
	// SIGKILL and started again on the same port and data after
	// BrokerDowntime. It needs BrokerCommand.
	BrokerRestarts int
	// QuiesceBrokerKills kills the broker only at a quiet moment: the
	// input is held, instance events wait, and the kill comes once the
	// group has committed the input produced so far and no transaction is
	// open on any topic (or after a minute). The instances must still
	// ride out the dead broker, its restart and the group state it lost.
	// kfake, the broker of exactly broker, needs it: when it starts again
	// after a SIGKILL, it aborts the transactions that were open without
	// writing abort markers, and Kafka clients reading read_committed then
	// skip every later transaction of those producers in those partitions.
	QuiesceBrokerKills bool
	// Churn is the number of instances added or removed (gracefully, with
	// SIGTERM) over Duration, between max(1, Instances-1) and
	// MaxInstances running at once: each change is a rebalance.
	Churn int
	// RestartDelay is how long a killed instance stays dead; default
	// 200ms.
	RestartDelay time.Duration
	// ZombieFor is how long a zombie stays frozen; default twice
	// SessionTimeout.
	ZombieFor time.Duration
	// BrokerDowntime is how long a killed broker stays dead; default 1s.
	BrokerDowntime time.Duration
	// StopGrace is how long a stopping instance may take to commit and
	// close before it is killed; default 15s.
	StopGrace time.Duration
	// CatchUp bounds how long, after Duration, the instances may take to
	// commit the whole input; default three minutes.
	CatchUp time.Duration

	// Verifiers check the committed result once the instances have
	// stopped; the run holds only if every one passes. At least one is
	// required.
	Verifiers []Verifier

	// Dir keeps the instances' state directories, the broker's data and
	// every process's log (<name>.log), and events.log, the schedule as
	// it was carried out. Default: a new temporary directory, removed
	// after a run that held.
	Dir string
	// Progress receives a progress bar (on a terminal) or a progress line
	// every few seconds; nil shows nothing.
	Progress io.Writer
	// Logger receives the harness's events as they happen, besides
	// events.log; nil logs them to slog.Default(). Pass
	// slog.New(slog.DiscardHandler) to keep them to events.log.
	Logger *slog.Logger
}

// Topic is a topic the harness creates.
type Topic struct {
	Name string
	// Partitions defaults to Config.Partitions.
	Partitions int32
	// Configs are topic configs, e.g. cleanup.policy=compact.
	Configs map[string]string
}

// Placeholders lists the placeholders of Config.Command and the
// environment variable each instance also finds its value in.
var Placeholders = []struct{ Name, Env, Meaning string }{
	{"{brokers}", "EXACTLY_BROKERS", "seed brokers, host:port[,host:port]"},
	{"{application-id}", "EXACTLY_APPLICATION_ID", "the application id (consumer group)"},
	{"{instance}", "EXACTLY_INSTANCE", "the instance's slot: 0, 1, 2 …"},
	{"{instance-id}", "EXACTLY_INSTANCE_ID", "a stable id per slot, <application-id>-<slot> (static membership)"},
	{"{state-dir}", "EXACTLY_STATE_DIR", "a state directory of the slot's own, kept across restarts"},
	{"{http}", "EXACTLY_HTTP", "a free loopback address, host:port"},
	{"{session-timeout}", "EXACTLY_SESSION_TIMEOUT", "the group session timeout (\"3s\")"},
	{"{partitions}", "EXACTLY_PARTITIONS", "partitions of the topics the harness creates"},
}

func (c Config) withDefaults() (Config, error) {
	if c.Instances == 0 {
		c.Instances = 3
	}
	if c.MaxInstances == 0 {
		c.MaxInstances = c.Instances + 2
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 3 * time.Second
	}
	if c.Partitions == 0 {
		c.Partitions = 4
	}
	if c.Duration == 0 {
		c.Duration = time.Minute
	}
	if c.RestartDelay == 0 {
		c.RestartDelay = 200 * time.Millisecond
	}
	if c.ZombieFor == 0 {
		c.ZombieFor = 2 * c.SessionTimeout
	}
	if c.BrokerDowntime == 0 {
		c.BrokerDowntime = time.Second
	}
	if c.StopGrace == 0 {
		c.StopGrace = 15 * time.Second
	}
	if c.CatchUp == 0 {
		c.CatchUp = 3 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	var errs []error
	switch {
	case len(c.Command) == 0:
		errs = append(errs, errors.New("chaos: no Command: give the command line of an application instance"))
	case c.ApplicationID == "":
		errs = append(errs, errors.New("chaos: no ApplicationID: give the instances' application id (their consumer group)"))
	}
	if len(c.Brokers) == 0 && len(c.BrokerCommand) == 0 {
		errs = append(errs, errors.New("chaos: give Brokers of a running cluster, or a BrokerCommand for a broker of the harness's own"))
	}
	if len(c.Brokers) > 0 && c.BrokerRestarts > 0 {
		errs = append(errs, errors.New("chaos: BrokerRestarts needs a broker the harness owns: use BrokerCommand instead of Brokers"))
	}
	if len(c.InputTopics) == 0 {
		errs = append(errs, errors.New("chaos: no InputTopics: name the topics the application consumes"))
	}
	if len(c.Verifiers) == 0 {
		errs = append(errs, errors.New("chaos: no Verifiers: a run proves nothing without one (see Replay, OrdersAudit, Command)"))
	}
	if c.Instances < 1 || c.MaxInstances < c.Instances {
		errs = append(errs, fmt.Errorf("chaos: Instances %d, MaxInstances %d: want 1 ≤ Instances ≤ MaxInstances", c.Instances, c.MaxInstances))
	}
	if c.Churn > 0 && c.MaxInstances <= max(1, c.Instances-1) {
		errs = append(errs, fmt.Errorf("chaos: Churn needs room to add and remove instances: raise MaxInstances above %d", max(1, c.Instances-1)))
	}
	if c.Kills < 0 || c.Zombies < 0 || c.BrokerRestarts < 0 || c.Churn < 0 {
		errs = append(errs, errors.New("chaos: Kills, Zombies, BrokerRestarts and Churn must not be negative"))
	}
	if c.ZombieFor <= c.SessionTimeout {
		errs = append(errs, fmt.Errorf("chaos: ZombieFor %s must exceed SessionTimeout %s, or the group never moves on without the zombie", c.ZombieFor, c.SessionTimeout))
	}
	return c, errors.Join(errs...)
}

// instanceVars are the values of the placeholders for one start of the
// instance in slot.
func (c Config) instanceVars(brokers []string, slot int, stateDir, httpAddr string) map[string]string {
	return map[string]string{
		"brokers":         strings.Join(brokers, ","),
		"application-id":  c.ApplicationID,
		"instance":        strconv.Itoa(slot),
		"instance-id":     fmt.Sprintf("%s-%d", c.ApplicationID, slot),
		"state-dir":       stateDir,
		"http":            httpAddr,
		"session-timeout": c.SessionTimeout.String(),
		"partitions":      strconv.Itoa(int(c.Partitions)),
	}
}

// expand replaces {name} in args by vars[name]; other braces stay.
func expand(args []string, vars map[string]string) []string {
	pairs := make([]string, 0, 2*len(vars))
	for k, v := range vars {
		pairs = append(pairs, "{"+k+"}", v)
	}
	r := strings.NewReplacer(pairs...)
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = r.Replace(a)
	}
	return out
}

// environ turns vars into EXACTLY_* variables, as Placeholders lists them.
func environ(vars map[string]string) []string {
	var env []string
	for _, p := range Placeholders {
		name := strings.Trim(p.Name, "{}")
		env = append(env, p.Env+"="+vars[name])
	}
	return env
}
