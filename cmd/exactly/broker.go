package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/exactly-go/exactly/cmd/exactly/internal/kafkaflags"
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
		security *kafkaflags.ServerFlags
	)
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run an embedded Kafka-protocol broker (franz-go kfake) on loopback",
		Long: `Runs a Kafka-protocol broker in this process until interrupted. Any Kafka
client can connect to the printed address. It keeps data in memory unless
--data-dir is given. It creates no topic unless --topic is given.

For trials of secured connections it can serve TLS only (--tls-cert and
--tls-key) and require SASL (--sasl-user, with the password in
--sasl-password-file or EXACTLY_SASL_PASSWORD): the user may then
authenticate with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, and is a superuser.`,
		Example: `  exactly broker --listen 127.0.0.1:9092 --topic order-events --partitions 4

  # TLS and SASL, for clients started with --tls --tls-ca ca.pem
  # --sasl-mechanism scram-sha-256 --sasl-user app --sasl-password-file pass
  exactly broker --tls-cert broker.pem --tls-key broker-key.pem \
      --sasl-user app --sasl-password-file pass`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sec, err := security.Load()
			if err != nil {
				return err
			}
			var opts []kfake.Opt
			if sec.TLS != nil {
				opts = append(opts, kfake.TLS(sec.TLS))
			}
			if sec.User != "" {
				opts = append(opts, kfake.EnableSASL())
				for _, mechanism := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
					opts = append(opts, kfake.Superuser(mechanism, sec.User, sec.Password))
				}
			}
			c, err := startBroker(listen, brokers, dataDir, syncData, parts, topics, opts...)
			if err != nil {
				return err
			}
			defer c.Close()
			var secured []string
			if sec.TLS != nil {
				secured = append(secured, "TLS")
			}
			if sec.User != "" {
				secured = append(secured, "SASL user "+sec.User)
			}
			if len(secured) == 0 {
				secured = append(secured, "plaintext")
			}
			fmt.Fprintf(cmd.OutOrStdout(), "broker listening on %s (%s)\n", strings.Join(c.ListenAddrs(), ","), strings.Join(secured, ", "))
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
	security = kafkaflags.RegisterServer(cmd.Flags())
	return cmd
}

// startBroker starts a kfake cluster on loopback ports starting at listen,
// with extra options added.
func startBroker(listen string, brokers int, dataDir string, syncWrites bool, partitions int32, topics []string, extra ...kfake.Opt) (*kfake.Cluster, error) {
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
	c, err := kfake.NewCluster(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("start broker on %s: %w", listen, err)
	}
	return c, nil
}
