// Package httpquery serves the state stores of an exactly application over
// HTTP from any of its instances (Kafka Streams' interactive queries with
// the routing layer users usually write themselves).
//
// A Handler answers
//
//	GET /stores/{store}/keys/{key}                 one key, from any instance
//	GET /stores/{store}/keys?from=&to=&limit=      a range of this instance's keys
//	GET /instances                                 which instance holds which tasks
//
// and Handler.ServeKey answers the same key lookups on routes of the
// application's own (GET /orders/{id}).
//
// A key lookup with ?standby=true may be answered from the asked
// instance's standby copy of the key's partition (exactly.QueryOptions
// AllowStandby) instead of being forwarded: the answer then carries the
// StandbyLagHeader with how far the copy trails. Without a copy there, it
// is forwarded to the active as usual.
//
// # Routing
//
// Every instance sets exactly.Config.ApplicationServer to the host:port at
// which it serves this handler; after each rebalance every instance knows
// the address of the instance holding each key, without asking the brokers.
// A key held here is answered from this instance's committed state: 200
// with the value as JSON, or 404. A key held by another instance is
// forwarded to it (a reverse proxy, one hop) and its answer returned
// unchanged.
//
// Forwarding rather than redirecting (307) was chosen so that a client
// needs to reach one instance only — a load balancer or a service in front
// of them — while the advertised addresses may be internal ones only the
// instances can reach (pod addresses); and so that clients such as curl
// need no option to follow redirects. It costs one hop inside the
// deployment. A forwarded request is marked with the ForwardedHeader and
// is never forwarded again: when routing changed in between (a rebalance),
// the second instance answers 503 rather than passing it on, so requests
// never loop.
//
// # Unavailable answers
//
// 503 Service Unavailable with a Retry-After header and a JSON error means
// "ask again shortly": this instance (or the one asked) is restoring the
// key's partition from its changelog, no instance holds the partition
// right now (a rebalance is moving it), or the holder did not answer. 400
// is a key the store's ParseKey refuses; 404 an unknown key or store.
//
// Every instance of an application must serve the same routes: a request
// is forwarded to the same path on the owner.
package httpquery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"

	"github.com/exactly-go/exactly"
)

// ForwardedHeader marks a request one instance forwarded to another; its
// value is the forwarding instance's address. An instance answers such a
// request from its own state or with 503, and never forwards it again.
const ForwardedHeader = "Exactly-Forwarded-By"

// StandbyLagHeader is set on a key answered from a standby copy (a lookup
// with ?standby=true, Config.StandbyReplicas): the number of changelog
// records the copy trailed the changelog's end by at its last fetch.
const StandbyLagHeader = "Exactly-Standby-Lag"

// Options configure a Handler. The zero value is usable.
type Options struct {
	// Transport carries forwarded requests; default http.DefaultTransport.
	Transport http.RoundTripper
	// Scheme is how the instances' advertised addresses are reached:
	// "http" (default) or "https".
	Scheme string
	// ForwardTimeout bounds a forwarded request; default 10 seconds.
	ForwardTimeout time.Duration
	// RetryAfter is sent with every 503; default one second.
	RetryAfter time.Duration
	// DefaultLimit and MaxLimit bound range answers: limit defaults to
	// DefaultLimit (100) and may not exceed MaxLimit (1000).
	DefaultLimit, MaxLimit int
	// Logger receives failures to reach other instances; default
	// slog.Default().
	Logger *slog.Logger
}

// Handler serves an App's stores. Add stores with Add before serving; its
// methods are then safe for concurrent use.
type Handler struct {
	app    *exactly.App
	opts   Options
	mux    *http.ServeMux
	stores map[string]storeQueries
	proxy  *httputil.ReverseProxy
}

// storeQueries are one store's typed queries behind untyped functions.
type storeQueries struct {
	get  func(ctx context.Context, key string, opts exactly.QueryOptions) (value any, res answer, err error)
	scan func(ctx context.Context, from, to *string, limit int) ([]Entry, error)
}

// answer is how a key lookup was answered.
type answer struct {
	found, standby bool
	lag            int64
}

// Entry is one key and value of a range answer.
type Entry struct {
	Key   any `json:"key"`
	Value any `json:"value"`
}

// RangeAnswer is the body of a range answer.
type RangeAnswer struct {
	// Instance is the address of the instance that answered.
	Instance string `json:"instance"`
	// Entries are in the byte order of the serialized keys.
	Entries []Entry `json:"entries"`
	// More is true when the instance holds more entries in the range than
	// the limit let through.
	More bool `json:"more"`
}

// Instances is the body of /instances.
type Instances struct {
	// Self is the address of the instance that answered.
	Self string `json:"self"`
	// LocalTasks are the tasks it holds.
	LocalTasks []exactly.TaskMetadata `json:"localTasks"`
	// Instances are every instance that advertises an address.
	Instances []exactly.InstanceMetadata `json:"instances"`
}

// New returns a handler for app's stores.
func New(app *exactly.App, opts Options) *Handler {
	if opts.Transport == nil {
		opts.Transport = http.DefaultTransport
	}
	if opts.Scheme == "" {
		opts.Scheme = "http"
	}
	if opts.ForwardTimeout <= 0 {
		opts.ForwardTimeout = 10 * time.Second
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = time.Second
	}
	if opts.MaxLimit <= 0 {
		opts.MaxLimit = 1000
	}
	if opts.DefaultLimit <= 0 {
		opts.DefaultLimit = min(100, opts.MaxLimit)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	h := &Handler{app: app, opts: opts, mux: http.NewServeMux(), stores: map[string]storeQueries{}}
	h.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: opts.Scheme, Host: pr.In.Context().Value(targetKey{}).(string)})
			pr.SetXForwarded()
			self := app.ApplicationServer()
			if self == "" {
				self = "an instance without an application server"
			}
			pr.Out.Header.Set(ForwardedHeader, self)
		},
		Transport:    opts.Transport,
		ErrorHandler: h.forwardFailed,
	}
	h.mux.HandleFunc("GET /stores/{store}/keys/{key...}", func(w http.ResponseWriter, r *http.Request) {
		h.ServeKey(w, r, r.PathValue("store"), r.PathValue("key"))
	})
	h.mux.HandleFunc("GET /stores/{store}/keys", h.serveRange)
	h.mux.HandleFunc("GET /instances", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, Instances{Self: app.ApplicationServer(), LocalTasks: app.LocalTasks(), Instances: app.Instances()})
	})
	return h
}

// Store says how a Handler serves one store holding K -> V.
type Store[K, V any] struct {
	// Name is the store's name in the topology.
	Name string
	// ParseKey turns a key as written in a URL into K; its errors answer
	// 400. StringKey and Int64Key suit the common cases.
	ParseKey func(string) (K, error)
	// Render turns a value into what is written as JSON; nil writes the
	// value itself.
	Render func(V) any
}

// Add makes h serve store s. A store added twice is served as added last.
func Add[K, V any](h *Handler, s Store[K, V]) {
	render := s.Render
	if render == nil {
		render = func(v V) any { return v }
	}
	parse := func(raw string) (K, error) {
		k, err := s.ParseKey(raw)
		if err != nil {
			return k, &keyError{key: raw, err: err}
		}
		return k, nil
	}
	h.stores[s.Name] = storeQueries{
		get: func(ctx context.Context, raw string, opts exactly.QueryOptions) (any, answer, error) {
			k, err := parse(raw)
			if err != nil {
				return nil, answer{}, err
			}
			res, err := exactly.QueryWith[K, V](ctx, h.app, s.Name, k, opts)
			a := answer{found: res.Found, standby: res.Standby, lag: res.Lag}
			if err != nil || !res.Found {
				return nil, a, err
			}
			return render(res.Value), a, nil
		},
		scan: func(ctx context.Context, from, to *string, limit int) ([]Entry, error) {
			var kvs []exactly.KeyValue[K, V]
			var err error
			if from == nil {
				kvs, err = exactly.QueryAll[K, V](ctx, h.app, s.Name, limit)
			} else {
				var f, t K
				if f, err = parse(*from); err != nil {
					return nil, err
				}
				if t, err = parse(*to); err != nil {
					return nil, err
				}
				kvs, err = exactly.QueryRange[K, V](ctx, h.app, s.Name, f, t, limit)
			}
			if err != nil {
				return nil, err
			}
			out := make([]Entry, len(kvs))
			for i, kv := range kvs {
				out[i] = Entry{Key: kv.Key, Value: render(kv.Value)}
			}
			return out, nil
		},
	}
}

// StringKey is a ParseKey for string keys: the key as written.
func StringKey(s string) (string, error) { return s, nil }

// Int64Key is a ParseKey for int64 keys written in decimal.
func Int64Key(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }

// keyError is a key ParseKey refused.
type keyError struct {
	key string
	err error
}

func (e *keyError) Error() string { return fmt.Sprintf("key %q: %v", e.key, e.err) }

// ServeHTTP serves the routes listed in the package comment.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// ServeKey answers a lookup of key in store as GET
// /stores/{store}/keys/{key} does, so that an application can serve keys
// on routes of its own. A forwarded lookup goes to the same path on the
// instance holding the key.
func (h *Handler) ServeKey(w http.ResponseWriter, r *http.Request, store, key string) {
	q, ok := h.stores[store]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown store %q", store), nil)
		return
	}
	v, res, err := q.get(r.Context(), key, exactly.QueryOptions{AllowStandby: r.URL.Query().Get("standby") == "true"})
	if res.standby {
		w.Header().Set(StandbyLagHeader, strconv.FormatInt(res.lag, 10))
	}
	var notLocal *exactly.NotLocalError
	var badKey *keyError
	fields := map[string]any{"store": store, "key": key}
	switch {
	case errors.As(err, &badKey):
		writeError(w, http.StatusBadRequest, err.Error(), fields)
	case errors.Is(err, exactly.ErrRestoring):
		h.unavailable(w, "this instance is restoring the key's partition from its changelog: retry shortly", fields)
	case errors.As(err, &notLocal):
		fields["partition"] = notLocal.Partition
		switch {
		case r.Header.Get(ForwardedHeader) != "":
			h.unavailable(w, fmt.Sprintf("forwarded by %s, but this instance no longer holds partition %d (a rebalance moved it): retry shortly",
				r.Header.Get(ForwardedHeader), notLocal.Partition), fields)
		case notLocal.Host == "":
			h.unavailable(w, fmt.Sprintf("no instance serving queries holds partition %d right now (a rebalance is moving it, or its holder sets no application server): retry shortly",
				notLocal.Partition), fields)
		default:
			h.forward(w, r, notLocal.Host)
		}
	case err != nil:
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("read %s/%s: %v", store, key, err), fields)
	case !res.found:
		writeError(w, http.StatusNotFound, fmt.Sprintf("key %s not found in store %s", key, store), fields)
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

// serveRange answers a range (from and to) or all keys (neither) from this
// instance's partitions of the store.
func (h *Handler) serveRange(w http.ResponseWriter, r *http.Request) {
	store := r.PathValue("store")
	q, ok := h.stores[store]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown store %q", store), nil)
		return
	}
	params := r.URL.Query()
	limit := h.opts.DefaultLimit
	if s := params.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > h.opts.MaxLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: give a number from 1 to %d", s, h.opts.MaxLimit), nil)
			return
		}
		limit = n
	}
	var from, to *string
	switch {
	case params.Has("from") && params.Has("to"):
		f, t := params.Get("from"), params.Get("to")
		from, to = &f, &t
	case params.Has("from") || params.Has("to"):
		writeError(w, http.StatusBadRequest, "give both from (inclusive) and to (exclusive), or neither for all keys", nil)
		return
	}
	entries, err := q.scan(r.Context(), from, to, limit+1)
	var badKey *keyError
	switch {
	case errors.As(err, &badKey):
		writeError(w, http.StatusBadRequest, err.Error(), map[string]any{"store": store})
	case errors.Is(err, exactly.ErrRestoring):
		h.unavailable(w, "this instance is restoring a partition of the store from its changelog: retry shortly", map[string]any{"store": store})
	case err != nil:
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("read %s: %v", store, err), map[string]any{"store": store})
	default:
		more := len(entries) > limit
		writeJSON(w, http.StatusOK, RangeAnswer{Instance: h.app.ApplicationServer(), Entries: entries[:min(len(entries), limit)], More: more})
	}
}

type targetKey struct{}

// forward hands the request to the instance at host and copies its answer.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, host string) {
	ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), targetKey{}, host), h.opts.ForwardTimeout)
	defer cancel()
	h.proxy.ServeHTTP(w, r.WithContext(ctx))
}

func (h *Handler) forwardFailed(w http.ResponseWriter, r *http.Request, err error) {
	host, _ := r.Context().Value(targetKey{}).(string)
	h.opts.Logger.Warn("forwarding a query failed", "to", host, "path", r.URL.Path, "err", err)
	h.unavailable(w, fmt.Sprintf("the instance at %s holds the key but did not answer (%v): retry shortly", host, err), map[string]any{"host": host})
}

func (h *Handler) unavailable(w http.ResponseWriter, message string, fields map[string]any) {
	w.Header().Set("Retry-After", strconv.Itoa(int(max(h.opts.RetryAfter.Round(time.Second), time.Second)/time.Second)))
	writeError(w, http.StatusServiceUnavailable, message, fields)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError writes {"error": message, ...fields}.
func writeError(w http.ResponseWriter, status int, message string, fields map[string]any) {
	body := map[string]any{"error": message}
	for k, v := range fields {
		body[k] = v
	}
	writeJSON(w, status, body)
}
