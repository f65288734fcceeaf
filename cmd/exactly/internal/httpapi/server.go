// Package httpapi serves one running application instance over HTTP:
// liveness (/healthz), readiness (/readyz), Prometheus metrics (/metrics),
// key lookups in its state stores (interactive queries), and a live status
// page (/) fed by /status.json.
//
// Every response other than /metrics and the page is JSON. Lookups answer
// from this instance's committed state only; a key held by another
// instance is answered with 421 Misdirected Request naming the owner, so a
// client or a proxy can ask there instead.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/exactly-go/exactly"
)

// Options configure a Server.
type Options struct {
	// Application and Instance name what is served, on the status page and
	// in /status.json. Instance may be empty.
	Application, Instance string
	// Registry is served at /metrics and summarised in /status.json; the
	// application's metrics must be registered with it.
	Registry *prometheus.Registry
	// Ready is closed once the instance has restored its stores; /readyz
	// and lookups answer 503 until then. A nil Ready is never ready.
	Ready <-chan struct{}
	// Health reports whether the instance works (nil) or why not; /healthz
	// and /readyz answer 503 with the reason while it returns an error. Nil
	// is always healthy.
	Health func() error
	// SampleInterval is how often the status history is sampled; default
	// one second. History keeps the last HistoryLength samples (default
	// 300).
	SampleInterval time.Duration
	HistoryLength  int
	// Logger receives request failures; default slog.Default().
	Logger *slog.Logger
}

// LookupFunc reads key from the instance's state. It returns found=false
// for a key it does not hold, and *exactly.NotLocalError for a key another
// instance holds.
type LookupFunc func(ctx context.Context, key string) (value any, found bool, err error)

// Server is the HTTP face of one instance. Its handlers are safe for
// concurrent use; Serve runs it until its context ends.
type Server struct {
	opts    Options
	mux     *http.ServeMux
	history *history
	started time.Time
}

// New returns a server with /healthz, /readyz, /metrics, /status.json and
// the status page at /. Add lookups with HandleLookup before serving.
func New(opts Options) *Server {
	if opts.SampleInterval <= 0 {
		opts.SampleInterval = time.Second
	}
	if opts.HistoryLength <= 0 {
		opts.HistoryLength = 300
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	s := &Server{opts: opts, mux: http.NewServeMux(), history: newHistory(opts.HistoryLength), started: time.Now()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.health(); err != nil {
			writeError(w, http.StatusServiceUnavailable, "unhealthy: "+err.Error(), nil)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{Registry: opts.Registry}))
	s.mux.HandleFunc("GET /status.json", s.statusJSON)
	s.mux.HandleFunc("GET /{$}", s.page)
	return s
}

// HandleLookup answers GET pattern, which must contain the wildcard {key}
// (e.g. "/orders/{key}"), with the JSON of lookup's value: 200 when found;
// 404 when not; 421 naming the owner when another instance holds the key,
// or 503 with Retry-After while no instance does (a rebalance) or this one
// is not ready. noun names the value in error messages ("order").
func (s *Server) HandleLookup(pattern, noun string, lookup LookupFunc) {
	s.mux.HandleFunc("GET "+pattern, func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("key")
		if !s.ready() {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "this instance is still restoring its state: retry shortly", nil)
			return
		}
		v, found, err := lookup(r.Context(), key)
		var notLocal *exactly.NotLocalError
		switch {
		case errors.As(err, &notLocal) && notLocal.Owner != "":
			writeError(w, http.StatusMisdirectedRequest,
				fmt.Sprintf("%s %s is held by instance %s: ask it", noun, key, notLocal.Owner),
				map[string]any{"key": key, "owner": notLocal.Owner, "store": notLocal.Store, "partition": notLocal.Partition})
		case errors.As(err, &notLocal):
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable,
				fmt.Sprintf("%s %s is on a partition no instance holds right now (rebalancing): retry shortly", noun, key),
				map[string]any{"key": key, "store": notLocal.Store, "partition": notLocal.Partition})
		case err != nil:
			s.opts.Logger.Warn("lookup failed", "noun", noun, "key", key, "err", err)
			writeError(w, http.StatusInternalServerError, fmt.Sprintf("read %s %s: %v", noun, key, err), map[string]any{"key": key})
		case !found:
			writeError(w, http.StatusNotFound, fmt.Sprintf("%s %s not found: no event for it has been processed", noun, key), map[string]any{"key": key})
		default:
			writeJSON(w, http.StatusOK, v)
		}
	})
}

// ServeHTTP routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve serves on ln and samples the status history until ctx ends, then
// shuts down, letting requests in flight finish for up to five seconds. It
// closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		s.sample(ctx)
	}()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var err error
	select {
	case err = <-served:
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = srv.Shutdown(shutdownCtx)
		cancel()
		<-served
	}
	<-sampled
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// sample records the history every SampleInterval until ctx ends.
func (s *Server) sample(ctx context.Context) {
	tick := time.NewTicker(s.opts.SampleInterval)
	defer tick.Stop()
	for {
		if err := s.history.record(s.opts.Registry, time.Now()); err != nil {
			s.opts.Logger.Debug("gather metrics for the status page", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *Server) ready() bool {
	if s.opts.Ready == nil {
		return false
	}
	select {
	case <-s.opts.Ready:
		return true
	default:
		return false
	}
}

func (s *Server) health() error {
	if s.opts.Health == nil {
		return nil
	}
	return s.opts.Health()
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if !s.ready() {
		writeError(w, http.StatusServiceUnavailable, "not ready: joining the group and restoring state stores", nil)
		return
	}
	if err := s.health(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not ready: "+err.Error(), nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// writeError writes {"error": message, ...fields}.
func writeError(w http.ResponseWriter, status int, message string, fields map[string]any) {
	body := map[string]any{"error": message}
	for k, v := range fields {
		body[k] = v
	}
	writeJSON(w, status, body)
}
