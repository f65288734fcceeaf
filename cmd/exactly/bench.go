package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"

	"github.com/exactly-go/exactly/internal/bench"
)

func init() { commands = append(commands, newBenchCommand, newBenchChildCommand) }

func newBenchCommand() *cobra.Command {
	var (
		quick, asJSON          bool
		reps                   int
		only                   []string
		cpuProfile, memProfile string
		moduleDir              string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run the benchmark suite and print its results and ratios",
		Long: `Runs the benchmark scenarios against an in-process Kafka-protocol broker
(kfake, loopback only), with a warm-up and several repetitions, and prints a
table of median, min and max per scenario, then the ratios the product is
judged by and whether each target is met.

Scenario families (--only): ceiling (raw franz-go consume→produce), counting
(store + changelog under at_least_once and exactly_once_v2 at 100 ms, 1 s and
30 s commit intervals, 100 B and 1 KB records), orders (the order projection
under both guarantees, audited by the verifier), goka (the same projection
written with goka, built from bench/goka), restore (full and delta), failover
(an instance leaves; the time until the other runs its tasks, with and
without a standby replica, over the same Pebble store), state
(store size and RSS after 1x and 10x events, each in a child process),
latency (record timestamp to read_committed output at 100 ms commits),
postgres (inbox and relay benchmarks; needs the PostgreSQL server binaries).

Absolute numbers on shared machines drift by 30-50 %; compare the ratios of
one run. goka and postgres need the source tree (found from the working
directory, or --module-dir) and the Go toolchain.`,
		Example: `  exactly bench --quick
  exactly bench --json > bench.json
  exactly bench --only orders,goka --cpuprofile cpu.out`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			if moduleDir == "" {
				moduleDir = findModuleDir()
			}
			exe, _ := os.Executable()
			progress := cmd.ErrOrStderr()
			rep, err := bench.Run(cmd.Context(), bench.Options{
				Quick: quick, Repetitions: reps, Only: only, ModuleDir: moduleDir,
				Executable: exe, ChildArgs: []string{"bench-child"}, Progress: progress,
			})
			if err != nil {
				return err
			}
			if memProfile != "" {
				if err := writeHeapProfile(memProfile); err != nil {
					return err
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			rep.WriteTable(out)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&quick, "quick", false, "small inputs and 2 repetitions: under a minute")
	f.BoolVar(&asJSON, "json", false, "print one JSON object with ratios, targets and results")
	f.IntVar(&reps, "reps", 0, "repetitions per scenario (default 3, 2 with --quick)")
	f.StringSliceVar(&only, "only", nil, "run only these families: ceiling, counting, orders, goka, restore, failover, state, latency, postgres")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	f.StringVar(&memProfile, "memprofile", "", "write a heap profile (allocations) at the end to this file")
	f.StringVar(&moduleDir, "module-dir", "", "root of the exactly source tree (default: found from the working directory)")
	return cmd
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.Lookup("allocs").WriteTo(f, 0)
}

// findModuleDir walks up from the working directory to the go.mod of the
// exactly module; "" when there is none.
func findModuleDir() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if isExactlyModule(filepath.Join(dir, "go.mod")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

func isExactlyModule(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	return strings.TrimSpace(line) == "module github.com/exactly-go/exactly"
}

// newBenchChildCommand is the child process of scenarios that measure a
// process of their own (RSS); `exactly bench` starts it.
func newBenchChildCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "bench-child",
		Short:              "Child process of exactly bench (internal)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.RunChild(cmd.Context(), args, cmd.OutOrStdout())
		},
	}
}
