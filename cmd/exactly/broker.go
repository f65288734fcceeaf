package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"
)

func init() { commands = append(commands, newBrokerCommand) }

func newBrokerCommand() *cobra.Command {
	var (
		listen   string
		brokers  int
		dataDir  string
		topics   []string
		parts    int32
		syncData bool
	)
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run an embedded Kafka-protocol broker (franz-go kfake) on loopback",
		Long: `Runs a Kafka-protocol broker in this process until interrupted. Any Kafka
client can connect to the printed address. It keeps data in memory unless
--data-dir is given. It creates no topic unless --topic is given.`,
		Example: "  exactly broker --listen 127.0.0.1:9092 --topic order-events --partitions 4",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := startBroker(listen, brokers, dataDir, syncData, parts, topics)
			if err != nil {
				return err
			}
			defer c.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "broker listening on %s\n", strings.Join(c.ListenAddrs(), ","))
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9092", "address of the first broker; more brokers take the following ports")
	cmd.Flags().IntVar(&brokers, "brokers", 1, "number of brokers")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "directory to persist records, transactions and offsets (default: memory only)")
	cmd.Flags().BoolVar(&syncData, "sync", false, "fsync writes to --data-dir")
	cmd.Flags().StringSliceVar(&topics, "topic", nil, "topic to create at start (repeatable)")
	cmd.Flags().Int32Var(&parts, "partitions", 4, "partitions of topics created with --topic")
	return cmd
}

// startBroker starts a kfake cluster on loopback ports starting at listen.
func startBroker(listen string, brokers int, dataDir string, syncWrites bool, partitions int32, topics []string) (*kfake.Cluster, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: want host:port", listen)
	}
	if host != "127.0.0.1" && host != "localhost" {
		return nil, fmt.Errorf("--listen %q: the embedded broker listens on loopback only (127.0.0.1)", listen)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: bad port", listen)
	}
	var ports []int
	for i := range brokers {
		if port == 0 {
			ports = append(ports, 0)
		} else {
			ports = append(ports, port+i)
		}
	}
	// A development broker accepts short group session timeouts, so that
	// killed members leave the group within seconds.
	opts := []kfake.Opt{kfake.NumBrokers(brokers), kfake.Ports(ports...), kfake.GroupMinSessionTimeout(500 * time.Millisecond)}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
		if syncWrites {
			opts = append(opts, kfake.SyncWrites())
		}
	}
	if len(topics) > 0 {
		opts = append(opts, kfake.SeedTopics(partitions, topics...))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start broker on %s: %w", listen, err)
	}
	return c, nil
}
