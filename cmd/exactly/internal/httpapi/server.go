// Package httpapi serves one running application instance over HTTP:
// liveness (/healthz), readiness (/readyz), Prometheus metrics (/metrics),
// and a live status page (/) fed by /status.json. Queries of the state
// stores are package httpquery's; mount its handler with Handle.
//
// Every response other than /metrics and the page is JSON.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/exactly-go/exactly"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	// Routing, if set, says which tasks this instance holds and where the
	// others are, for /status.json and the status page.
	Routing func() Routing
	// Restores, if set, reports the instance's restores from changelogs
	// (App.Restores), for /status.json and the progress bars of the status
	// page.
	Restores func() []exactly.RestoreProgress
}

// Routing is what the status says of the group's assignment.
type Routing struct {
	// Self is the address this instance advertises ("" if none).
	Self string `json:"self"`
	// LocalTasks are the tasks this instance holds, restoring or running.
	LocalTasks []exactly.TaskMetadata `json:"localTasks"`
	// StandbyTasks are the standby tasks this instance keeps, with their
	// lag.
	StandbyTasks []exactly.StandbyTaskMetadata `json:"standbyTasks"`
	// Instances are every instance advertising an address, with its tasks.
	Instances []exactly.InstanceMetadata `json:"instances"`
}

// Server is the HTTP face of one instance. Its handlers are safe for
// concurrent use; Serve runs it until its context ends.
type Server struct {
	opts    Options
	mux     *http.ServeMux
	history *history
	started time.Time
}

// New returns a server with /healthz, /readyz, /metrics, /status.json and
// the status page at /. Add more routes with Handle before serving.
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

// Handle serves pattern (http.ServeMux syntax, e.g. "GET /orders/{id}")
// with h.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

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
