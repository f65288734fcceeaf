package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/exactly-go/exactly/cmd/exactly/internal/kafkaflags"
)

// TestChaosFlagsChooseInputVerifiersAndCommandPerTopology: each topology
// gets its input, topics and verifiers, and the errors say what to add.
func TestChaosFlagsChooseInputVerifiersAndCommandPerTopology(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir()) // no exactly on PATH
	base := chaosOptions{Topology: "orders", Orders: 10, Records: 100, Keys: 10, Partitions: 4, Seed: 1}
	tests := []struct {
		name      string
		opts      func(o *chaosOptions)
		command   []string
		wantErr   string
		wantCmd   []string
		verifiers int
		input     string
	}{
		{name: "orders runs exactly run orders by default", wantCmd: []string{exe, "run", "orders"}, verifiers: 2, input: "order-events"},
		{name: "exactly off PATH is this executable", command: []string{"exactly", "run", "orders", "--http", "{http}"},
			wantCmd: []string{exe, "run", "orders", "--http", "{http}"}, verifiers: 2, input: "order-events"},
		{name: "counting needs a command", opts: func(o *chaosOptions) { o.Topology = "counting" }, wantErr: "give the instance command line after --"},
		{name: "counting replays", opts: func(o *chaosOptions) { o.Topology = "counting" }, command: []string{"./mine"},
			wantCmd: []string{"./mine"}, verifiers: 1, input: "input"},
		{name: "custom needs a verify command", opts: func(o *chaosOptions) { o.Topology = "custom"; o.ApplicationID = "shop" },
			command: []string{"./shop"}, wantErr: "--topology custom needs --verify-command"},
		{name: "custom trusts the verify command", opts: func(o *chaosOptions) {
			o.Topology, o.ApplicationID, o.VerifyCommand, o.InputTopic = "custom", "shop", "./shop verify", "events"
		}, command: []string{"./shop"}, wantCmd: []string{"./shop"}, verifiers: 1, input: "events"},
		{name: "unknown topology", opts: func(o *chaosOptions) { o.Topology = "payments" }, wantErr: "use orders, counting or custom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			if tt.opts != nil {
				tt.opts(&o)
			}
			cfg, err := o.config(tt.command)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v; want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Command, tt.wantCmd) {
				t.Errorf("command %q; want %q", cfg.Command, tt.wantCmd)
			}
			if len(cfg.Verifiers) != tt.verifiers {
				t.Errorf("%d verifiers; want %d", len(cfg.Verifiers), tt.verifiers)
			}
			if len(cfg.Input) == 0 {
				t.Fatal("no input generated")
			}
			if !slices.Equal(cfg.InputTopics, []string{tt.input}) || cfg.Input[0].Topic != tt.input {
				t.Errorf("input topics %q, first record's topic %q; want %q", cfg.InputTopics, cfg.Input[0].Topic, tt.input)
			}
			if len(cfg.BrokerCommand) == 0 || cfg.BrokerCommand[0] != exe {
				t.Errorf("broker command %q; want this executable's exactly broker", cfg.BrokerCommand)
			}
		})
	}
}

// TestChaosPassesTheSecurityToItsClientsAndInstances: against a cluster
// named by --brokers, the harness's clients get the TLS and SASL options
// and the instances the EXACTLY_* variables (the password as its file);
// without --brokers the flags are refused, as the broker chaos starts is
// plaintext.
func TestChaosPassesTheSecurityToItsClientsAndInstances(t *testing.T) {
	passFile := filepath.Join(t.TempDir(), "password")
	os.WriteFile(passFile, []byte("chaos-Pa55\n"), 0o600)
	fs := pflag.NewFlagSet("chaos", pflag.ContinueOnError)
	flags := kafkaflags.Register(fs)
	if err := fs.Parse([]string{"--tls", "--sasl-mechanism", "scram-sha-256", "--sasl-user", "u", "--sasl-password-file", passFile}); err != nil {
		t.Fatal(err)
	}
	sec, err := flags.Load()
	if err != nil {
		t.Fatal(err)
	}
	o := chaosOptions{Topology: "orders", Orders: 1, Partitions: 1, Seed: 1, Security: sec}
	if _, err := o.config(nil); err == nil || !strings.Contains(err.Error(), "--brokers") {
		t.Errorf("security without --brokers: %v; want a refusal naming --brokers", err)
	}
	o.Brokers = []string{"127.0.0.1:9093"}
	cfg, err := o.config(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.ClientOptions) != 2 || len(cfg.BrokerCommand) != 0 {
		t.Errorf("%d client options, broker command %q; want TLS and SASL options and no broker of its own", len(cfg.ClientOptions), cfg.BrokerCommand)
	}
	env := strings.Join(cfg.Env, " ")
	for _, want := range []string{"EXACTLY_TLS=true", "EXACTLY_SASL_MECHANISM=scram-sha-256", "EXACTLY_SASL_USER=u", "EXACTLY_SASL_PASSWORD_FILE=" + passFile} {
		if !strings.Contains(env, want) {
			t.Errorf("instances' environment %s lacks %s", env, want)
		}
	}
	if strings.Contains(env, "chaos-Pa55") {
		t.Error("the instances' environment carries the password, not its file")
	}
}
