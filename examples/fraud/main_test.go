package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly/verify"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestFlagsConfigureTheRulesAndRefuseStrayArguments(t *testing.T) {
	c, err := parseFlags([]string{"-brokers", "a:1,b:2", "-velocity-threshold", "9", "-travel-window", "2h", "-application-id", "risk"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Brokers, " ") != "a:1 b:2" || c.Rules.VelocityThreshold != 9 || c.Rules.TravelWindow != 2*time.Hour ||
		c.Rules.ApplicationID != "risk" || c.Rules.VelocityWindow != time.Minute {
		t.Fatalf("config %+v", c)
	}
	if _, err := parseFlags([]string{"extra"}, io.Discard); err == nil {
		t.Fatal("a stray argument was accepted")
	}
}

// TestServiceRunsOnABrokerServesHTTPAndStopsGracefully runs the service as
// main does, against an in-process broker: it creates its topic, produces
// samples with -produce, becomes ready, commits alerts, serves /metrics
// and the health endpoints, and returns nil once its context ends.
func TestServiceRunsOnABrokerServesHTTPAndStopsGracefully(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := strings.Join(cluster.ListenAddrs(), ",")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()

	producer, err := parseFlags([]string{"-brokers", brokers, "-produce", "600", "-partitions", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, producer, log, nil); err != nil {
		t.Fatal(err)
	}

	c, err := parseFlags([]string{"-brokers", brokers, "-state-dir", t.TempDir(), "-http", "127.0.0.1:0", "-session-timeout", "1s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, c, log, func(a net.Addr) { addr <- a }) }()
	base := "http://" + (<-addr).String()

	deadline := time.Now().Add(60 * time.Second)
	for {
		alerts, err := verify.ReadCommitted(ctx, []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, AlertsTopic)
		if err == nil && len(alerts) > 0 {
			var a Alert
			if err := json.Unmarshal(alerts[0].Value, &a); err != nil || a.AlertID == "" {
				t.Fatalf("alert %q: %v", alerts[0].Value, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no alert committed in time (last error %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for path, want := range map[string]string{"/readyz": "ready", "/healthz": "ok", "/metrics": "exactly_"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d %.200q, want 200 with %q", path, resp.StatusCode, body, want)
		}
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("graceful stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the service did not stop within 30 s of its context ending")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("HTTP still served after the stop")
	}
}
