package exactly_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestConfigErrorFromNewSaysWhatToChange: every configuration New refuses
// is a *ConfigError whose message names the field to change.
func TestConfigErrorFromNewSaysWhatToChange(t *testing.T) {
	top := countingApp(t, false)
	valid := exactly.Config{Brokers: []string{"127.0.0.1:9092"}, ApplicationID: "app"}
	cases := map[string]struct {
		change func(*exactly.Config)
		want   string
	}{
		"no brokers":        {func(c *exactly.Config) { c.Brokers = nil }, "Brokers"},
		"no application id": {func(c *exactly.Config) { c.ApplicationID = "" }, "ApplicationID"},
		"unknown guarantee": {func(c *exactly.Config) { c.Guarantee = "exactly_once" }, "guarantee"},
		"unknown action":    {func(c *exactly.Config) { c.OnFatalError = 7 }, "OnFatalError"},
		"unknown SASL": {func(c *exactly.Config) {
			c.SASL = &exactly.SASL{Mechanism: "GSSAPI", User: "u", Password: "p"}
		}, "SASL mechanism"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := valid
			tc.change(&cfg)
			_, err := exactly.New(top, cfg)
			var ce *exactly.ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want a *ConfigError naming %s", err, tc.want)
			}
		})
	}
	if _, err := exactly.New(top, valid); err != nil {
		t.Fatalf("New with a valid configuration: %v", err)
	}
	t.Run("registry shared by two apps", func(t *testing.T) {
		cfg := valid
		cfg.Registerer = prometheus.NewRegistry()
		if _, err := exactly.New(top, cfg); err != nil {
			t.Fatal(err)
		}
		_, err := exactly.New(top, cfg)
		var ce *exactly.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "Registerer") {
			t.Fatalf("second New on one registry: %v, want a *ConfigError naming Registerer", err)
		}
	})
}

// TestConfigErrorFromRunWhenTheBrokerRefusesTheSessionTimeout: a session
// timeout outside the broker's bounds stops Run at once with a
// *ConfigError instead of rejoining forever.
func TestConfigErrorFromRunWhenTheBrokerRefusesTheSessionTimeout(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "input", "output"),
		kfake.GroupMinSessionTimeout(100*time.Millisecond), kfake.GroupMaxSessionTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := appConfig(c.ListenAddrs(), t.TempDir(), exactly.ExactlyOnceV2)
	cfg.SessionTimeout = 5 * time.Second
	app, err := exactly.New(countingApp(t, false), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = app.Run(ctx)
	var ce *exactly.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "SessionTimeout") {
		t.Fatalf("Run: %v, want a *ConfigError naming SessionTimeout", err)
	}
}

// TestConfigErrorFromRunWhenTheACLsRefuseTheTopics: a user the cluster's
// ACLs do not allow to create the application's changelog stops Run with
// a *ConfigError, not a wait for a cluster that did answer.
func TestConfigErrorFromRunWhenTheACLsRefuseTheTopics(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "input", "output"),
		kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("PLAIN", "admin", "admin"),
		kfake.User("PLAIN", "app", "s3cret", kfake.ACL{
			Resource: kmsg.ACLResourceTypeTopic, Name: "*", Pattern: kmsg.ACLResourcePatternTypeLiteral,
			Operation: kmsg.ACLOperationDescribe, Allow: true,
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := appConfig(c.ListenAddrs(), t.TempDir(), exactly.ExactlyOnceV2)
	cfg.SASL = &exactly.SASL{Mechanism: "PLAIN", User: "app", Password: "s3cret"}
	app, err := exactly.New(countingApp(t, false), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = app.Run(ctx)
	var ce *exactly.ConfigError
	if !errors.As(err, &ce) || ctx.Err() != nil {
		t.Fatalf("Run: %v, want a *ConfigError at once", err)
	}
}
