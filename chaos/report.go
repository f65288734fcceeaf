package chaos

import (
	"fmt"
	"strings"
	"time"
)

// Report is what a run did and whether the committed result held.
type Report struct {
	Seed uint64
	// Elapsed is the run's wall time up to the verification.
	Elapsed time.Duration
	// Kills, Zombies, BrokerRestarts, Added and Removed count the
	// events carried out; Skipped counts those that found no instance
	// or slot to act on.
	Kills, Zombies, BrokerRestarts, Added, Removed, Skipped int
	// BrokerKillsInFlight counts the broker kills that found a
	// transaction open (see Config.QuiesceBrokerKills).
	BrokerKillsInFlight int
	// Rebalances counts the times the group was seen leaving the Stable
	// state (sampled a few times a second, so a lower bound).
	Rebalances int
	// Exits counts instances that exited on their own (the harness
	// started them again, as a supervisor would); BrokerExits the same
	// for the broker. Their logs say why.
	Exits, BrokerExits int
	// Generated counts the records the harness produced; Reproduced those
	// it produced again after the cluster refused them.
	Generated, Reproduced int
	// RecordsIn counts the records of the input topics at the end;
	// Committed those below the group's committed offsets.
	RecordsIn, Committed int64
	// CaughtUp says whether the group committed every input record within
	// CatchUp.
	CaughtUp bool
	// Verdicts are the verifiers' outcomes, in Config.Verifiers order.
	Verdicts []Verdict
	// Dir is where the logs, the state and the broker's data are (removed
	// when the run held and Config.Dir was empty).
	Dir string
}

// OK reports whether the run holds: the instances caught up with the
// input and every verifier passed.
func (r *Report) OK() bool {
	if !r.CaughtUp || len(r.Verdicts) == 0 {
		return false
	}
	for _, v := range r.Verdicts {
		if !v.OK {
			return false
		}
	}
	return true
}

// String renders the report for a person: what happened, the figures of
// each verifier, their own reports, and the verdict.
func (r *Report) String() string {
	var b strings.Builder
	line := func(name string, format string, args ...any) {
		fmt.Fprintf(&b, "  %-38s %s\n", name, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(&b, "what happened (seed %d, %s)\n", r.Seed, r.Elapsed.Round(time.Second))
	line("instances killed (SIGKILL)", "%d", r.Kills)
	line("zombies (SIGSTOP past the session)", "%d", r.Zombies)
	line("broker restarts (SIGKILL)", "%d (%d with transactions open)", r.BrokerRestarts, r.BrokerKillsInFlight)
	line("instances added / removed", "%d / %d", r.Added, r.Removed)
	line("rebalances seen", "%d", r.Rebalances)
	if r.Skipped > 0 {
		line("events skipped (nothing to act on)", "%d", r.Skipped)
	}
	if r.Exits+r.BrokerExits > 0 {
		line("exited on their own, restarted", "%d instances, %d brokers (see their logs)", r.Exits, r.BrokerExits)
	}
	line("records generated", "%d (%d produced again after a refusal)", r.Generated, r.Reproduced)
	line("records in", "%d (%d committed by the group)", r.RecordsIn, r.Committed)
	for _, v := range r.Verdicts {
		mark := "PASS"
		if !v.OK {
			mark = "FAIL"
		}
		if v.Counted {
			line(v.Name, "%s: records out %d, duplicates %d, lost %d, different %d, unexpected %d, out of order %d",
				mark, v.RecordsOut, v.Duplicates, v.Lost, v.Different, v.Unexpected, v.OutOfOrder)
		} else {
			line(v.Name, "%s: records out %d", mark, v.RecordsOut)
		}
	}
	for _, v := range r.Verdicts {
		fmt.Fprintf(&b, "\n%s\n%s", v.Name, indent(v.Report))
	}
	b.WriteString("\n")
	switch {
	case r.OK():
		fmt.Fprintf(&b, "OK: every verifier holds after %d kills, %d zombies, %d broker restarts and %d instance changes\n",
			r.Kills, r.Zombies, r.BrokerRestarts, r.Added+r.Removed)
	case !r.CaughtUp:
		fmt.Fprintf(&b, "FAILED: the instances committed %d of %d input records in time; see the logs in %s\n", r.Committed, r.RecordsIn, r.Dir)
	default:
		fmt.Fprintf(&b, "FAILED: see the verifiers' reports above and the logs in %s\n", r.Dir)
	}
	return b.String()
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ") + "\n"
}
