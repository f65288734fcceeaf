package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Server is a Simulator listening on a TCP address: the in-process gateway
// of tests and demos.
type Server struct {
	*Simulator
	// URL is the base URL clients use, e.g. http://127.0.0.1:40123.
	URL string

	srv    *http.Server
	served chan error
}

// Start listens on addr (host:port; port 0 picks a free one) and serves a
// new Simulator there until Close.
func Start(addr string, opts Options) (*Server, error) {
	sim, err := New(opts)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		sim.Close()
		return nil, fmt.Errorf("gateway: listen on %s: %w: choose a free address", addr, err)
	}
	s := &Server{
		Simulator: sim,
		URL:       "http://" + ln.Addr().String(),
		srv:       &http.Server{Handler: sim, ReadHeaderTimeout: 5 * time.Second},
		served:    make(chan error, 1),
	}
	go func() { s.served <- s.srv.Serve(ln) }()
	return s, nil
}

// Close stops serving, waits for requests under way (at most a few
// seconds), and closes the charges file.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serveErr := <-s.served; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	return errors.Join(err, s.Simulator.Close())
}
