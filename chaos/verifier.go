package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/internal/fleet"
	"github.com/exactly-go/exactly/verify"
)

// Target is the application a verifier checks: where it ran, and under
// which application id.
type Target struct {
	Brokers       []string
	ApplicationID string
}

// Verifier checks what an application committed, once every instance has
// stopped after its last commit.
type Verifier interface {
	// Verify returns the verdict, or an error when it could not check at
	// all (cluster unreachable, bad configuration).
	Verify(ctx context.Context, t Target) (Verdict, error)
}

// VerifierFunc is a function that is a Verifier.
type VerifierFunc func(ctx context.Context, t Target) (Verdict, error)

// Verify calls f.
func (f VerifierFunc) Verify(ctx context.Context, t Target) (Verdict, error) { return f(ctx, t) }

// Verdict is one verifier's outcome.
type Verdict struct {
	// Name says which verifier it is ("replay", "orders audit").
	Name string
	OK   bool
	// Counted says that the figures below were measured: a verifier that
	// only passes or fails leaves them zero.
	Counted bool
	// RecordsOut counts the committed output records checked (dead
	// letters included, changelogs not).
	RecordsOut int
	// Duplicates, Lost, Different, Unexpected and OutOfOrder count the
	// committed records that break exactly-once, as verify.Difference
	// classifies them.
	Duplicates, Lost, Different, Unexpected, OutOfOrder int
	// Report is the verifier's own report, for a person.
	Report string
}

// Replay checks the run with verify.Replay: the committed output must
// equal what topology produces when the committed input is replayed
// through it in one uninterrupted pass. The topology must be the one the
// instances ran, configured as they configured it. cfg.Brokers and
// cfg.ApplicationID are replaced by the target's.
func Replay(topology *exactly.Topology, cfg verify.ReplayConfig) Verifier {
	return VerifierFunc(func(ctx context.Context, t Target) (Verdict, error) {
		cfg.Brokers, cfg.ApplicationID = t.Brokers, t.ApplicationID
		rep, err := verify.Replay(ctx, topology, cfg)
		if err != nil {
			return Verdict{}, fmt.Errorf("replay verifier: %w", err)
		}
		v := Verdict{Name: "replay", OK: rep.OK(), Counted: true, Report: rep.String()}
		for _, tc := range rep.Topics {
			if tc.Role == "output" || tc.Role == "dead letters" {
				v.RecordsOut += tc.Committed
			}
		}
		for _, d := range rep.Differences {
			switch d.Kind {
			case verify.Duplicate:
				v.Duplicates++
			case verify.Missing:
				v.Lost++
			case verify.Different:
				v.Different++
			case verify.Unexpected:
				v.Unexpected++
			case verify.OutOfOrder:
				v.OutOfOrder++
			}
		}
		return v, nil
	})
}

// OrdersAudit checks a run of the orders application with verify.Orders:
// the projections, their every update and the dead letters recomputed
// from the input by an oracle written apart from the topology. cfg.Options
// must equal the application's (its topics and TTLs); cfg.Brokers is
// replaced by the target's.
func OrdersAudit(cfg verify.Config) Verifier {
	return VerifierFunc(func(ctx context.Context, t Target) (Verdict, error) {
		cfg.Brokers = t.Brokers
		rep, err := verify.Orders(ctx, cfg)
		if err != nil {
			return Verdict{}, fmt.Errorf("orders audit: %w", err)
		}
		return Verdict{Name: "orders audit", OK: rep.OK(), RecordsOut: rep.Outputs + rep.DeadLetters, Report: rep.String()}, nil
	})
}

// Command checks the run with a program of the user's: the verdict holds
// if it exits 0. The placeholders {brokers} and {application-id} in args
// are replaced, and the program also finds them in EXACTLY_BROKERS and
// EXACTLY_APPLICATION_ID. Its output becomes the verdict's report.
func Command(args ...string) Verifier {
	return VerifierFunc(func(ctx context.Context, t Target) (Verdict, error) {
		if len(args) == 0 {
			return Verdict{}, errors.New("command verifier: no command")
		}
		vars := map[string]string{"brokers": strings.Join(t.Brokers, ","), "application-id": t.ApplicationID}
		argv := expand(args, vars)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(fleet.WithoutExactlyEnv(os.Environ()), "EXACTLY_BROKERS="+vars["brokers"], "EXACTLY_APPLICATION_ID="+t.ApplicationID)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			return Verdict{}, fmt.Errorf("command verifier %s: %w", argv[0], err)
		}
		v := Verdict{Name: strings.Join(argv, " "), OK: err == nil, Report: out.String()}
		if err != nil {
			v.Report += fmt.Sprintf("(%s)\n", err)
		}
		return v, nil
	})
}
