package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/examples/exposure"
	"github.com/exactly-go/exactly/examples/orders"
	"github.com/exactly-go/exactly/examples/revenue"
)

func init() { commands = append(commands, newDescribeCommand) }

// describable are the topologies `exactly describe` knows, by name.
var describable = map[string]func(applicationID string) (*exactly.Topology, error){
	"orders": func(string) (*exactly.Topology, error) { return orders.Topology(orders.Options{Persistent: true}) },
	"exposure": func(applicationID string) (*exactly.Topology, error) {
		return exposure.CustomerExposure(applicationID, 1_000_000)
	},
	"suspicious-orders": func(applicationID string) (*exactly.Topology, error) {
		return exposure.SuspiciousOrderCounts(applicationID, nil)
	},
	"revenue": func(applicationID string) (*exactly.Topology, error) {
		return revenue.Topology(revenue.Options{ApplicationID: applicationID, Persistent: true})
	},
}

func newDescribeCommand() *cobra.Command {
	var applicationID string
	names := make([]string, 0, len(describable))
	for name := range describable {
		names = append(names, name)
	}
	sort.Strings(names)
	cmd := &cobra.Command{
		Use:   "describe [" + strings.Join(names, "|") + "]",
		Short: "Print a reference application's topology",
		Long: `Prints the topology of a reference application: its sub-topologies, their
source and sink topics, processors, state stores and changelog topics, as
"exactly run" would run them with the given --application-id. Without an
argument it describes orders.`,
		Example: `  exactly describe orders
  exactly describe orders --application-id orders-staging
  exactly describe exposure --application-id risk
  exactly describe revenue --application-id revenue`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: names,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "orders"
			if len(args) == 1 {
				name = args[0]
			}
			build, ok := describable[name]
			if !ok {
				return fmt.Errorf("unknown topology %q: use one of %s", name, strings.Join(names, ", "))
			}
			t, err := build(applicationID)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), t.Describe(applicationID))
			return nil
		},
	}
	cmd.Flags().StringVar(&applicationID, "application-id", "orders", "application id that names the changelog topics")
	return cmd
}
