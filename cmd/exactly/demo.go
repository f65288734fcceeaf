package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/internal/feed"
	"github.com/exactly-go/exactly/internal/fleet"
	"github.com/exactly-go/exactly/internal/progress"
	"github.com/exactly-go/exactly/verify"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func init() { commands = append(commands, newDemoCommand) }

type demoOptions struct {
	listen     string
	orders     int
	partitions int32
	instances  int
	kills      int
	seed       uint64
	duration   time.Duration
	guarantee  string
	keep       bool
}

func newDemoCommand() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the order projection on an embedded broker, kill it mid-transaction, and verify the result",
		Long: `Starts an embedded Kafka-protocol broker (also reachable by any Kafka client on
the printed loopback address), generates a realistic stream of order events
with duplicates, reordering, missing prerequisites and malformed records,
and runs the order projection under exactly_once_v2 in several processes.
While the stream flows, processes are killed with SIGKILL (mid-transaction,
as often as not) and restarted. At the end the committed topics are audited
against a recomputation from the input.

Exit status 0 only if every check holds.`,
		Example: "  exactly demo\n  exactly demo --orders 20000 --instances 3 --kills 10",
		RunE:    func(cmd *cobra.Command, _ []string) error { return runDemo(cmd.Context(), cmd.OutOrStdout(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:0", "broker address (port 0: any free port)")
	f.IntVar(&o.orders, "orders", 10000, "orders to generate (about 10 events each)")
	f.Int32Var(&o.partitions, "partitions", 4, "partitions of the order topics")
	f.IntVar(&o.instances, "instances", 2, "projection processes")
	f.IntVar(&o.kills, "kills", 6, "SIGKILLs to deliver while the stream flows")
	f.Uint64Var(&o.seed, "seed", 1, "seed of the generated stream and of the kills")
	f.DurationVar(&o.duration, "duration", 20*time.Second, "how long the producer takes to send the stream")
	f.StringVar(&o.guarantee, "guarantee", "exactly_once_v2", "processing guarantee of the projection (exactly_once_v2, at_least_once)")
	f.BoolVar(&o.keep, "keep", false, "keep the broker and the projection instances (with their HTTP endpoints) running after the report, until interrupted")
	cmd.AddCommand(newDemoPaymentsCommand())
	return cmd
}

const demoApplicationID = "orders-demo"

func runDemo(ctx context.Context, out io.Writer, o demoOptions) error {
	if o.instances < 1 || o.orders < 1 || o.partitions < 1 {
		return errors.New("--instances, --orders and --partitions must be positive")
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this program to start projection processes: %w", err)
	}
	dir, err := os.MkdirTemp("", "exactly-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	cluster, err := startBroker(o.listen, 1, "", false, o.partitions, []string{orders.DefaultInputTopic, orders.DefaultDeadLetterTopic})
	if err != nil {
		return err
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	fmt.Fprintf(out, "broker      %s (any Kafka client can connect)\n", strings.Join(brokers, ","))

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(2*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	compact := "compact"
	if _, err := adm.CreateTopic(ctx, o.partitions, -1, map[string]*string{"cleanup.policy": &compact}, orders.DefaultOutputTopic); err != nil {
		return fmt.Errorf("create %s: %w", orders.DefaultOutputTopic, err)
	}

	records := orders.Generate(orders.DefaultGenerateOptions(o.seed, o.orders, o.partitions))
	fmt.Fprintf(out, "stream      %d records for %d orders: duplicates, out-of-order events, orders whose creation never comes, malformed records\n", len(records), o.orders)
	fmt.Fprintf(out, "projection  %d processes, %s, killed %d times with SIGKILL while the stream flows\n", o.instances, o.guarantee, o.kills)
	fmt.Fprintf(out, "logs        %s\n", dir)

	procs := &fleet.Fleet{}
	var httpAddrs []string
	for i := range o.instances {
		addr, err := fleet.FreeLoopbackAddr()
		if err != nil {
			return err
		}
		httpAddrs = append(httpAddrs, addr)
		procs.Set(instanceName(i), fleet.Spec{Path: exe, Log: filepath.Join(dir, instanceName(i)+".log"), Args: []string{"run", "orders",
			"--brokers", strings.Join(brokers, ","),
			"--application-id", demoApplicationID,
			"--state-dir", filepath.Join(dir, "state-"+instanceName(i)),
			"--instance-id", "demo-" + strconv.Itoa(i),
			"--guarantee", o.guarantee,
			"--partitions", strconv.Itoa(int(o.partitions)),
			"--session-timeout", "3s",
			"--http", addr,
			"--log-level", "warn",
		}})
	}
	fmt.Fprintf(out, "status      http://%s/ (live page of instance 0; /metrics, /orders/{id} on each instance)\n\n", httpAddrs[0])
	defer procs.Close(stopGrace)
	for i := range o.instances {
		if err := procs.Start(instanceName(i)); err != nil {
			return err
		}
	}

	started := time.Now()
	produced := make(chan error, 1)
	stream := make([]*kgo.Record, len(records))
	for i, r := range records {
		stream[i] = &kgo.Record{Topic: orders.DefaultInputTopic, Partition: r.Partition, Key: r.Key, Value: r.Value, Timestamp: r.Timestamp}
	}
	go func() {
		_, err := feed.Paced(ctx, cl, stream, o.duration, 50, nil)
		produced <- err
	}()

	bar := progress.New(out, "committed", int64(len(records)))
	rng := rand.New(rand.NewPCG(o.seed, 0x6b696c6c))
	killEvery := o.duration / time.Duration(o.kills+1)
	nextKill := time.Now().Add(killEvery)
	kills := 0
	var produceErr error
	producing := true
	deadline := time.Now().Add(o.duration + 3*time.Minute)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case produceErr = <-produced:
			producing = false
			if produceErr != nil {
				return fmt.Errorf("produce the stream: %w", produceErr)
			}
		case <-time.After(100 * time.Millisecond):
		}
		if kills < o.kills && time.Now().After(nextKill) {
			victim := instanceName(rng.IntN(o.instances))
			procs.Kill(victim)
			kills++
			time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
			if err := procs.Start(victim); err != nil {
				return err
			}
			nextKill = time.Now().Add(killEvery/2 + time.Duration(rng.Int64N(int64(killEvery))))
		}
		done := committedInput(ctx, adm)
		bar.Set(min(done, int64(len(records))), fmt.Sprintf("%d kills so far", kills))
		if !producing && kills >= o.kills && done >= int64(len(records)) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the projection did not catch up: %d of %d records committed; see the logs in %s", done, len(records), dir)
		}
	}
	bar.Finish()
	elapsed := time.Since(started)
	metricsSeen := scrapeMetrics(ctx, httpAddrs, demoMetrics)
	if !o.keep {
		procs.Close(stopGrace)
	}

	rep, err := verify.Orders(ctx, verify.Config{Brokers: brokers})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	printDemoReport(out, rep, kills, len(procs.Exited()))
	fmt.Fprintf(out, "throughput: %d records in %s (%.0f records/s while producing at the generator's pace and surviving %d kills)\n",
		len(records), elapsed.Round(100*time.Millisecond), float64(len(records))/elapsed.Seconds(), kills)
	fmt.Fprintf(out, "metrics on /metrics during the run: %s\n", strings.Join(metricsSeen, ", "))
	if o.keep {
		fmt.Fprintf(out, "\nbroker still running on %s, projection instances on http://%s/; interrupt to stop\n",
			strings.Join(brokers, ","), strings.Join(httpAddrs, "/ and http://"))
		<-ctx.Done()
	}
	if !rep.OK() {
		return &exitError{code: 1, err: errors.New("verification failed")}
	}
	return nil
}

// committedInput sums the projection's committed input offsets.
func committedInput(ctx context.Context, adm *kadm.Client) int64 {
	offs, err := adm.FetchOffsets(ctx, demoApplicationID)
	if err != nil {
		return 0
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) { sum += max(o.At, 0) })
	return sum
}

func printDemoReport(out io.Writer, rep *verify.Report, kills, unexpected int) {
	s := rep.Expected.Stats
	fmt.Fprintf(out, "\nwhat happened\n")
	fmt.Fprintf(out, "  processes killed with SIGKILL     %d\n", kills)
	fmt.Fprintf(out, "  records from aborted transactions %d (written, invisible to read_committed readers)\n", rep.AbortedHidden)
	fmt.Fprintf(out, "  events in                         %d\n", s.Records)
	fmt.Fprintf(out, "  distinct events applied           %d to %d order projections\n", s.Applied, len(rep.Expected.Projections))
	fmt.Fprintf(out, "  duplicates skipped                %d (%d with different content)\n", s.Duplicates, s.Conflicting)
	fmt.Fprintf(out, "  events that waited for their order %d (expired after the buffer TTL: %d)\n", s.Buffered, s.Expired)
	for _, r := range slices.Sorted(maps.Keys(s.DeadLettered)) {
		fmt.Fprintf(out, "  dead letters %-21s %d\n", r, s.DeadLettered[r])
	}
	if unexpected > 0 {
		fmt.Fprintf(out, "  processes that exited on their own %d (see their logs)\n", unexpected)
	}
	fmt.Fprintf(out, "\nverification\n%s", rep)
	if rep.OK() {
		fmt.Fprintf(out, "\nOK: every event reflected exactly once, in order, despite %d kills\n", kills)
	} else {
		fmt.Fprintf(out, "\nFAILED\n")
	}
}

func instanceName(i int) string { return "instance-" + strconv.Itoa(i) }

// stopGrace is how long a stopped process may take to commit and close
// before it is killed.
const stopGrace = 15 * time.Second

// demoMetrics are the metrics the demo shows are exported while it runs.
var demoMetrics = []string{"duplicates_skipped_total", "events_buffered_total", "buffer_size", "events_expired_total", "exactly_records_processed_total"}

// scrapeMetrics returns which of names some instance's /metrics exports.
func scrapeMetrics(ctx context.Context, addrs []string, names []string) []string {
	found := map[string]bool{}
	for _, addr := range addrs {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
		if err != nil {
			continue
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(body), "\n") {
			for _, n := range names {
				if strings.HasPrefix(line, n+" ") || strings.HasPrefix(line, n+"{") {
					found[n] = true
				}
			}
		}
	}
	var out []string
	for _, n := range names {
		if found[n] {
			out = append(out, n)
		} else {
			out = append(out, n+" (missing)")
		}
	}
	return out
}
