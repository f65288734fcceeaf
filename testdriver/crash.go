package testdriver

import (
	"fmt"
	"math/rand/v2"
)

// CrashSchedule draws, after each step of RunWithCrashes, what the
// application does next: commit, crash, crash in the middle of a commit,
// or go on to the next step. The same schedule and steps give the same
// run.
type CrashSchedule struct {
	// Seed seeds the schedule's random source.
	Seed uint64
	// Commit is the probability of a commit after a step; 0 means 0.2.
	Commit float64
	// Crash is the probability of a crash after a step: everything since
	// the last commit is lost and the application restarts at once. 0
	// means 0.03.
	Crash float64
	// CrashMidCommit is the probability of a crash in the middle of a
	// commit after a step: the commit is visible in the topics, the
	// stores have not applied it, and the application restarts at once.
	// 0 means 0.03.
	CrashMidCommit float64
}

// Probabilities of a CrashSchedule whose fields are zero. A negative
// probability means never.
const (
	DefaultCommitProbability         = 0.2
	DefaultCrashProbability          = 0.03
	DefaultCrashMidCommitProbability = 0.03
)

// CrashRun counts what RunWithCrashes did.
type CrashRun struct {
	// Steps is the number of steps that ran.
	Steps int
	// Commits counts the commits the schedule drew.
	Commits int
	// Crashes and MidCommitCrashes count the crashes of each kind, each
	// followed by a restart.
	Crashes, MidCommitCrashes int
}

// String summarizes the run, for test failure messages.
func (r CrashRun) String() string {
	return fmt.Sprintf("%d steps, %d commits, %d crashes, %d mid-commit crashes", r.Steps, r.Commits, r.Crashes, r.MidCommitCrashes)
}

// RunWithCrashes runs step(0) to step(n-1) in order, each typically piping
// one record or advancing the wall clock, and after each one commits,
// crashes and restarts, or crashes mid-commit and restarts, as schedule
// draws. While it runs, commits happen only where the schedule puts them,
// whatever Config.ManualCommit says; uncommitted records are processed
// again after each restart, as Kafka redelivers them. At the end it calls
// Drain, so every step's results are committed: an exactly-once topology
// then holds the same committed output and stores as after an
// uninterrupted run of the same steps (compare them per key or per
// partition where records of several partitions meet, since a crash can
// change how partitions interleave).
//
// The first error of a step, a commit or a restart ends the run; the
// application is then crashed if a task failed.
func (d *Driver) RunWithCrashes(schedule CrashSchedule, n int, step func(i int) error) (CrashRun, error) {
	var run CrashRun
	if err := d.checkRunning(); err != nil {
		return run, err
	}
	commit := orDefault(schedule.Commit, DefaultCommitProbability)
	crash := commit + orDefault(schedule.Crash, DefaultCrashProbability)
	midCommit := crash + orDefault(schedule.CrashMidCommit, DefaultCrashMidCommitProbability)
	rng := rand.New(rand.NewPCG(schedule.Seed, 0x6372617368))
	d.scheduled = true
	defer func() { d.scheduled = false }()
	for i := range n {
		if err := step(i); err != nil {
			return run, fmt.Errorf("step %d (%v): %w", i, run, err)
		}
		run.Steps++
		var err error
		switch x := rng.Float64(); {
		case x < commit:
			run.Commits++
			err = d.Commit()
		case x < crash:
			run.Crashes++
			d.Crash()
			err = d.Restart()
		case x < midCommit:
			run.MidCommitCrashes++
			if err = d.CrashMidCommit(); err == nil {
				err = d.Restart()
			}
		}
		if err != nil {
			return run, fmt.Errorf("after step %d (%v): %w", i, run, err)
		}
	}
	d.scheduled = false
	if err := d.Drain(); err != nil {
		return run, fmt.Errorf("drain after %v: %w", run, err)
	}
	return run, nil
}

func orDefault(p, def float64) float64 {
	switch {
	case p < 0:
		return 0
	case p == 0:
		return def
	}
	return p
}
