package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestDescribeOrdersNamesSourcesSinksAndStores runs `exactly describe
// orders` and checks its topics, stores and changelogs appear, named after
// --application-id.
func TestDescribeOrdersNamesSourcesSinksAndStores(t *testing.T) {
	for _, args := range [][]string{{"describe", "orders", "--application-id", "shop"}, {"describe", "--application-id", "shop"}} {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		for _, want := range []string{
			"Source: order-events-source (topics: [order-events])",
			"order-projections", "order-events-dlq",
			"deduplication-store", "out-of-order-buffer-store", "out-of-order-key-state-store", "order-projection-store",
			"shop-order-projection-store-changelog",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%v: output lacks %q:\n%s", args, want, out.String())
			}
		}
	}
	var out bytes.Buffer
	root := newRootCommand()
	root.SetOut(&out)
	root.SetArgs([]string{"describe", "revenue", "--application-id", "shop"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"shop-order-customer-subscription-registration-topic", "shop-order-customer-subscription-response-topic",
		"shop-final-revenue-buffer-changelog", "shop-final-revenue-buffer-index-changelog", "shop-revenue-changelog",
		"Global store: products (persistent, topic: products",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("describe revenue lacks %q:\n%s", want, out.String())
		}
	}
	root = newRootCommand()
	root.SetArgs([]string{"describe", "nonsense"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "use one of exposure, orders, revenue, suspicious-orders") {
		t.Errorf("describe nonsense = %v; want an error naming the known topologies", err)
	}
}

// TestREADMEShowsTheCurrentDescriptionOfRevenue: the README's section on
// the streams DSL quotes `exactly describe revenue` as the code prints it.
func TestREADMEShowsTheCurrentDescriptionOfRevenue(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const marker = "`exactly describe revenue` shows"
	i := strings.Index(string(readme), marker)
	if i < 0 {
		t.Fatalf("README.md lacks %q", marker)
	}
	block := string(readme[i:])
	start := strings.Index(block, "```\n") + len("```\n")
	quoted := block[start : start+strings.Index(block[start:], "```\n")]
	var out bytes.Buffer
	root := newRootCommand()
	root.SetOut(&out)
	root.SetArgs([]string{"describe", "revenue", "--application-id", "revenue"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if quoted != out.String() {
		t.Fatalf("README.md quotes an outdated description of revenue; replace it with the output of\n"+
			"  go run ./cmd/exactly describe revenue --application-id revenue\nwhich is\n%s", out.String())
	}
}
