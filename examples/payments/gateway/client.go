package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Client calls a gateway that speaks the contract of this package. It is
// safe for concurrent use.
type Client struct {
	// BaseURL is the gateway's base URL, e.g. http://127.0.0.1:8090.
	BaseURL string
	// HTTP is the client used; nil means http.DefaultClient.
	HTTP *http.Client
	// Headers are added to every request (for example to name the caller).
	Headers http.Header
}

// StatusError is a response other than 200: Code tells a permanent failure
// (4xx other than 408 and 429) from a transient one.
type StatusError struct {
	// Code is the HTTP status.
	Code int
	// Body is the response body, e.g. {"error": "card_declined"}.
	Body string
}

// Error names the status and the body.
func (e *StatusError) Error() string {
	return fmt.Sprintf("gateway answered %d %s: %s", e.Code, http.StatusText(e.Code), strings.TrimSpace(e.Body))
}

// Permanent reports whether repeating the request cannot succeed.
func (e *StatusError) Permanent() bool {
	return e.Code >= 400 && e.Code < 500 && e.Code != http.StatusRequestTimeout && e.Code != http.StatusTooManyRequests
}

// Charge posts one charge with idempotencyKey. An error is a *StatusError
// when the gateway answered, a transport error otherwise (transient: the
// charge may or may not have happened, so repeat it with the same key).
func (c *Client) Charge(ctx context.Context, idempotencyKey string, req ChargeRequest) (ChargeResponse, error) {
	var resp ChargeResponse
	body, err := json.Marshal(req)
	if err != nil {
		return resp, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+"/charges", bytes.NewReader(body))
	if err != nil {
		return resp, fmt.Errorf("gateway: %w: check the gateway URL", err)
	}
	for k, vs := range c.Headers {
		hreq.Header[k] = vs
	}
	hreq.Header.Set("Content-Type", "application/json")
	if idempotencyKey != "" {
		hreq.Header.Set(HeaderIdempotencyKey, idempotencyKey)
	}
	err = c.do(hreq, &resp)
	return resp, err
}

// Charges lists the gateway's real charges.
func (c *Client) Charges(ctx context.Context) ([]Charge, error) {
	var out []Charge
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/charges", nil)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w: check the gateway URL", err)
	}
	return out, c.do(req, &out)
}

// Stats reads the gateway's counts.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var out Stats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/stats", nil)
	if err != nil {
		return out, fmt.Errorf("gateway: %w: check the gateway URL", err)
	}
	return out, c.do(req, &out)
}

func (c *Client) do(req *http.Request, into any) error {
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("gateway %s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("gateway %s %s: read response: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return &StatusError{Code: resp.StatusCode, Body: string(b)}
	}
	if err := json.Unmarshal(b, into); err != nil {
		return fmt.Errorf("gateway %s %s: decode response: %w", req.Method, req.URL.Path, err)
	}
	return nil
}
