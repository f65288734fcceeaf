// Package gateway simulates a payment gateway over HTTP, for the payments
// example, its tests and `exactly gateway`: it charges orders, honours or
// ignores idempotency keys, injects latency, transient and permanent
// failures, and counts every real charge, so a test can prove "charged
// exactly once" or watch it fail.
//
// The HTTP contract (the payments section of the product specification's
// Appendix A):
//
//	POST /charges   header Idempotency-Key, body {"orderId", "amountCents", "currency"}
//	                200 {"transactionId"}: charged, or (same key, honouring keys)
//	                    the earlier charge, with nothing charged anew
//	                402 {"error": "card_declined"}: permanent, for orders the
//	                    DeclineRate picks (always the same orders)
//	                422 {"error": "idempotency_key_reused"}: the key was used
//	                    for a different order or amount
//	                503 {"error": "unavailable"}: transient, nothing charged
//	                400: a body it cannot read
//	GET  /charges   200 [{"transactionId", "idempotencyKey", "orderId",
//	                "amountCents", "currency"}, ...] every real charge, oldest first
//	GET  /stats     200 the counts of Stats
//
// Charges live in memory, or also in a file (one JSON line per charge) when
// Options.File is set, so that a simulator restarted on the same file knows
// the charges and keys of its predecessor.
package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"time"
)

// HeaderIdempotencyKey is the request header carrying the idempotency key.
const HeaderIdempotencyKey = "Idempotency-Key"

// ChargeRequest is the body of POST /charges.
type ChargeRequest struct {
	// OrderID names the order charged; required.
	OrderID string `json:"orderId"`
	// AmountCents is the amount in the currency's minor unit.
	AmountCents int64 `json:"amountCents"`
	// Currency is an ISO 4217 code; required.
	Currency string `json:"currency"`
}

// ChargeResponse is the body of a successful POST /charges.
type ChargeResponse struct {
	// TransactionID names the charge; a replayed key returns the first.
	TransactionID string `json:"transactionId"`
}

// Charge is one real charge: money moved once.
type Charge struct {
	// TransactionID names the charge, unique per charge.
	TransactionID string `json:"transactionId"`
	// IdempotencyKey is the key of the request that made it, if any.
	IdempotencyKey string `json:"idempotencyKey,omitempty"`
	// OrderID, AmountCents and Currency are the request's.
	OrderID     string `json:"orderId"`
	AmountCents int64  `json:"amountCents"`
	Currency    string `json:"currency"`
}

// Stats counts what the simulator did since it started (requests) and in
// all (charges, including those loaded from the file).
type Stats struct {
	// Requests is the number of POST /charges received.
	Requests int `json:"requests"`
	// Charges is the number of real charges.
	Charges int `json:"charges"`
	// Replays counts requests answered with an earlier charge because
	// their idempotency key was known: each is a call repeated after a
	// crash or a lost response, made harmless.
	Replays int `json:"replays"`
	// Transient counts 503 answers.
	Transient int `json:"transient"`
	// Declined counts 402 answers.
	Declined int `json:"declined"`
	// MaxInFlight is the most POST /charges under way at once: the
	// concurrency a client reached.
	MaxInFlight int `json:"maxInFlight"`
}

// Options configure a Simulator. The zero Options honour keys, answer at
// once, never fail and keep charges in memory.
type Options struct {
	// IgnoreKeys makes the simulator charge every request, as a gateway
	// without idempotency support would.
	IgnoreKeys bool
	// Latency delays every POST /charges before it is handled.
	Latency time.Duration
	// TransientRate is the probability that a request is answered 503
	// without charging.
	TransientRate float64
	// TransientFirst answers the first TransientFirst requests of each
	// order 503 without charging (deterministic transient failures).
	TransientFirst int
	// DeclineRate is the share of orders whose charge is declined with
	// 402. Which orders is a function of the order id alone, so retries
	// and restarts decline the same orders.
	DeclineRate float64
	// File, if set, keeps the charges in this file too (created if
	// missing), so a new Simulator on it continues where the last stopped.
	File string
	// Seed seeds the random choice of transient failures.
	Seed uint64
	// HoldUntilInFlight, when above 1, holds every POST /charges before
	// it is handled until that many are under way at once; from then on
	// nothing is held. With Stats.MaxInFlight a test sees, without relying
	// on timing, that a client makes that many calls at once.
	HoldUntilInFlight int
	// HoldFor bounds how long a request is held; once one was held that
	// long, nothing is held any more, so a client that never makes
	// HoldUntilInFlight calls at once is slowed once, not stalled.
	// Default 10 s. Give the client a longer timeout, or the calls it
	// abandons and repeats count as under way until the server notices.
	HoldFor time.Duration
	// AfterCharge, if set, runs after each real charge is recorded and
	// before the response is written: the moment a client crash turns into
	// a charge its caller never learns of.
	AfterCharge func(r *http.Request, c Charge)
}

// Simulator is the gateway as an http.Handler. It is safe for concurrent
// use.
type Simulator struct {
	opts Options

	mu       sync.Mutex
	rng      *rand.Rand
	charges  []Charge
	byKey    map[string]int // idempotency key -> index in charges
	attempts map[string]int // order id -> requests seen
	stats    Stats
	inFlight int
	// released is closed once HoldUntilInFlight requests were under way
	// at once, or one was held HoldFor.
	released    chan struct{}
	releaseOnce sync.Once
	file        *os.File
}

// New returns a simulator, loading the charges of Options.File if it
// exists.
func New(opts Options) (*Simulator, error) {
	if opts.TransientRate < 0 || opts.TransientRate > 1 || opts.DeclineRate < 0 || opts.DeclineRate > 1 {
		return nil, errors.New("gateway: TransientRate and DeclineRate must lie in [0, 1]")
	}
	if opts.HoldFor <= 0 {
		opts.HoldFor = 10 * time.Second
	}
	s := &Simulator{
		opts:     opts,
		rng:      rand.New(rand.NewPCG(opts.Seed, 0x6761746577617921)),
		byKey:    map[string]int{},
		attempts: map[string]int{},
		released: make(chan struct{}),
	}
	if opts.HoldUntilInFlight <= 1 {
		s.release()
	}
	if opts.File != "" {
		f, err := os.OpenFile(opts.File, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("gateway: open charges file: %w", err)
		}
		if err := s.load(f); err != nil {
			f.Close()
			return nil, err
		}
		s.file = f
	}
	return s, nil
}

// load reads the charges of a file; a last line cut short by a crash is
// dropped.
func (s *Simulator) load(f *os.File) error {
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var c Charge
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			break
		}
		s.add(c)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("gateway: read charges file %s: %w", f.Name(), err)
	}
	return nil
}

func (s *Simulator) add(c Charge) {
	if c.IdempotencyKey != "" && !s.opts.IgnoreKeys {
		if _, ok := s.byKey[c.IdempotencyKey]; !ok {
			s.byKey[c.IdempotencyKey] = len(s.charges)
		}
	}
	s.charges = append(s.charges, c)
	s.stats.Charges = len(s.charges)
}

// Close closes the charges file, if any.
func (s *Simulator) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	return err
}

// Charges returns every real charge, oldest first.
func (s *Simulator) Charges() []Charge {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Charge(nil), s.charges...)
}

// Stats returns the counts so far.
func (s *Simulator) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Declines reports whether the simulator declines orderID, as it would
// answer any request for it.
func (s *Simulator) Declines(orderID string) bool { return Declined(orderID, s.opts.DeclineRate) }

// Declined reports whether a simulator with DeclineRate rate declines
// orderID: the same answer for every request, restart and simulator.
func Declined(orderID string, rate float64) bool {
	if rate <= 0 {
		return false
	}
	h := fnv.New64a()
	h.Write([]byte(orderID))
	return float64(h.Sum64()%1_000_000) < rate*1_000_000
}

// ServeHTTP implements the contract of the package documentation.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/charges" && r.Method == http.MethodPost:
		s.postCharge(w, r)
	case r.URL.Path == "/charges" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Charges())
	case r.URL.Path == "/stats" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Stats())
	case r.URL.Path == "/charges" || r.URL.Path == "/stats":
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{"method_not_allowed"})
	default:
		writeJSON(w, http.StatusNotFound, errorBody{"not_found"})
	}
}

type errorBody struct {
	Error string `json:"error"`
}

// enter counts a request under way until the returned function is called,
// and holds it as Options.HoldUntilInFlight asks; it reports false if the
// request was cancelled while held.
func (s *Simulator) enter(r *http.Request) (leave func(), ok bool) {
	s.mu.Lock()
	s.inFlight++
	s.stats.MaxInFlight = max(s.stats.MaxInFlight, s.inFlight)
	if s.inFlight >= s.opts.HoldUntilInFlight {
		s.release()
	}
	s.mu.Unlock()
	leave = func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}
	select {
	case <-s.released:
	case <-time.After(s.opts.HoldFor):
		s.release()
	case <-r.Context().Done():
		return leave, false
	}
	return leave, true
}

func (s *Simulator) release() { s.releaseOnce.Do(func() { close(s.released) }) }

func (s *Simulator) postCharge(w http.ResponseWriter, r *http.Request) {
	leave, ok := s.enter(r)
	defer leave()
	if !ok {
		return
	}
	var req ChargeRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(&req)
	}
	if err != nil || req.OrderID == "" || req.Currency == "" {
		writeJSON(w, http.StatusBadRequest, errorBody{"invalid_request: want {\"orderId\", \"amountCents\", \"currency\"}"})
		return
	}
	if s.opts.Latency > 0 {
		select {
		case <-time.After(s.opts.Latency):
		case <-r.Context().Done():
			return
		}
	}
	key := r.Header.Get(HeaderIdempotencyKey)

	s.mu.Lock()
	s.stats.Requests++
	s.attempts[req.OrderID]++
	if i, ok := s.byKey[key]; ok && key != "" && !s.opts.IgnoreKeys {
		c := s.charges[i]
		if c.OrderID != req.OrderID || c.AmountCents != req.AmountCents || c.Currency != req.Currency {
			s.mu.Unlock()
			writeJSON(w, http.StatusUnprocessableEntity, errorBody{"idempotency_key_reused"})
			return
		}
		s.stats.Replays++
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, ChargeResponse{TransactionID: c.TransactionID})
		return
	}
	if s.attempts[req.OrderID] <= s.opts.TransientFirst || (s.opts.TransientRate > 0 && s.rng.Float64() < s.opts.TransientRate) {
		s.stats.Transient++
		s.mu.Unlock()
		writeJSON(w, http.StatusServiceUnavailable, errorBody{"unavailable"})
		return
	}
	if s.Declines(req.OrderID) {
		s.stats.Declined++
		s.mu.Unlock()
		writeJSON(w, http.StatusPaymentRequired, errorBody{"card_declined"})
		return
	}
	c := Charge{
		TransactionID:  fmt.Sprintf("txn-%08d", len(s.charges)+1),
		IdempotencyKey: key,
		OrderID:        req.OrderID,
		AmountCents:    req.AmountCents,
		Currency:       req.Currency,
	}
	if s.file != nil {
		line, _ := json.Marshal(c)
		if _, err := s.file.Write(append(line, '\n')); err != nil {
			s.mu.Unlock()
			writeJSON(w, http.StatusServiceUnavailable, errorBody{"unavailable: " + err.Error()})
			return
		}
	}
	s.add(c)
	s.mu.Unlock()
	if s.opts.AfterCharge != nil {
		s.opts.AfterCharge(r, c)
	}
	writeJSON(w, http.StatusOK, ChargeResponse{TransactionID: c.TransactionID})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
