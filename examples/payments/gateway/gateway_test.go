package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/exactly-go/exactly/examples/payments/gateway"
)

var req = gateway.ChargeRequest{OrderID: "o-1", AmountCents: 1299, Currency: "EUR"}

func start(t *testing.T, opts gateway.Options) (*gateway.Server, *gateway.Client) {
	t.Helper()
	s, err := gateway.Start("127.0.0.1:0", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &gateway.Client{BaseURL: s.URL}
}

func TestSameKeyChargesOnceAndReturnsTheSameTransaction(t *testing.T) {
	s, c := start(t, gateway.Options{})
	ctx := context.Background()
	a, err := c.Charge(ctx, "k-1", req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Charge(ctx, "k-1", req)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("same key, transactions %v and %v", a, b)
	}
	charges, err := c.Charges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(charges) != 1 || charges[0].IdempotencyKey != "k-1" {
		t.Fatalf("GET /charges = %+v, want one charge with key k-1", charges)
	}
	if st := s.Stats(); st.Requests != 2 || st.Replays != 1 {
		t.Fatalf("stats %+v, want 2 requests, 1 replay", st)
	}
	other := req
	other.AmountCents++
	_, err = c.Charge(ctx, "k-1", other)
	var se *gateway.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusUnprocessableEntity || !se.Permanent() {
		t.Fatalf("key reused for another amount: %v, want a permanent 422", err)
	}
}

func TestIgnoringKeysChargesEveryRequest(t *testing.T) {
	s, c := start(t, gateway.Options{IgnoreKeys: true})
	for range 3 {
		if _, err := c.Charge(context.Background(), "k-1", req); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.Charges()); n != 3 {
		t.Fatalf("%d charges, want 3", n)
	}
}

func TestFailuresAreTransientOrPermanentAsDeclared(t *testing.T) {
	_, c := start(t, gateway.Options{TransientFirst: 1, DeclineRate: 1})
	_, err := c.Charge(context.Background(), "k-1", req)
	var se *gateway.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || se.Permanent() {
		t.Fatalf("first request: %v, want a transient 503", err)
	}
	_, err = c.Charge(context.Background(), "k-1", req)
	if !errors.As(err, &se) || se.Code != http.StatusPaymentRequired || !se.Permanent() {
		t.Fatalf("second request: %v, want a permanent 402", err)
	}
}

func TestChargesSurviveARestartOnTheSameFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "charges.jsonl")
	s, err := gateway.Start("127.0.0.1:0", gateway.Options{File: file})
	if err != nil {
		t.Fatal(err)
	}
	c := &gateway.Client{BaseURL: s.URL}
	first, err := c.Charge(context.Background(), "k-1", req)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, c2 := start(t, gateway.Options{File: file})
	again, err := c2.Charge(context.Background(), "k-1", req)
	if err != nil {
		t.Fatal(err)
	}
	other := req
	other.OrderID = "o-2"
	second, err := c2.Charge(context.Background(), "k-2", other)
	if err != nil {
		t.Fatal(err)
	}
	if again != first || second == first {
		t.Fatalf("after restart: %v for the old key (want %v), %v for a new one", again, first, second)
	}
	if n := len(s2.Charges()); n != 2 {
		t.Fatalf("%d charges after restart, want 2", n)
	}
}

// TestHeldRequestsShowTheClientsConcurrency sends calls from several
// goroutines to a gateway holding them until that many are under way: they
// all complete, and MaxInFlight counts them; calls made one after another
// count one; a gateway waiting for more calls than come holds them HoldFor
// once, then no more.
func TestHeldRequestsShowTheClientsConcurrency(t *testing.T) {
	for _, tc := range []struct {
		name              string
		callers           int
		holdUntilInFlight int
		wantMaxInFlight   int
	}{
		{name: "as many callers as held", callers: 5, holdUntilInFlight: 5, wantMaxInFlight: 5},
		{name: "one caller", callers: 1, holdUntilInFlight: 1, wantMaxInFlight: 1},
		{name: "fewer callers than held", callers: 1, holdUntilInFlight: 2, wantMaxInFlight: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c := start(t, gateway.Options{HoldUntilInFlight: tc.holdUntilInFlight, HoldFor: 50 * time.Millisecond})
			errs := make(chan error, tc.callers)
			for i := range tc.callers {
				go func() {
					for j := range 3 {
						_, err := c.Charge(context.Background(), fmt.Sprintf("k-%d-%d", i, j), gateway.ChargeRequest{OrderID: fmt.Sprintf("o-%d-%d", i, j), AmountCents: 1, Currency: "EUR"})
						if err != nil {
							errs <- err
							return
						}
					}
					errs <- nil
				}()
			}
			for range tc.callers {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if st := s.Stats(); st.MaxInFlight != tc.wantMaxInFlight || st.Charges != 3*tc.callers {
				t.Fatalf("stats %+v, want MaxInFlight %d and %d charges", st, tc.wantMaxInFlight, 3*tc.callers)
			}
		})
	}
}
