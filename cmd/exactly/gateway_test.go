package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/exactly-go/exactly/examples/payments/gateway"
)

// TestGatewayCommandServesTheContractOnLoopback runs `exactly gateway` and
// charges through it twice with one key: one charge.
func TestGatewayCommandServesTheContractOnLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, w := io.Pipe()
	root := newRootCommand()
	root.SetArgs([]string{"gateway", "--listen", "127.0.0.1:0", "--log-level", "warn"})
	root.SetOut(w)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx); w.Close() }()

	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, r)
	fields := strings.Fields(line) // gateway listening on http://127.0.0.1:port; ...
	if len(fields) < 4 || !strings.HasPrefix(fields[3], "http://127.0.0.1:") {
		t.Fatalf("first line %q does not name a loopback URL", line)
	}
	c := &gateway.Client{BaseURL: strings.TrimSuffix(fields[3], ";")}
	req := gateway.ChargeRequest{OrderID: "o-1", AmountCents: 1299, Currency: "EUR"}
	for range 2 {
		if _, err := c.Charge(ctx, "k-1", req); err != nil {
			t.Fatal(err)
		}
	}
	charges, err := c.Charges(ctx)
	if err != nil || len(charges) != 1 {
		t.Fatalf("GET /charges: %v, %+v; want one charge", err, charges)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
