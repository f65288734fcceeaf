package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/exactly-go/exactly"
	"github.com/exactly-go/exactly/cmd/exactly/internal/httpapi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newRegistry returns the registry an instance serves on /metrics, with
// the Go and process collectors; the runtime and the topology's processors
// register their own.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// runServing runs app until ctx ends, serving srv on ln meanwhile (ln nil:
// no HTTP) and logging the progress of its restores to log, and stops
// both, logging the start of the stop with its cause (the signal). A
// cancelled context is a clean stop; what names the application in
// errors.
func runServing(ctx context.Context, app *exactly.App, srv *httpapi.Server, ln net.Listener, what string, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	restoresLogged := make(chan struct{})
	go func() {
		defer close(restoresLogged)
		(&restoreLogger{log: log}).run(ctx, app.Restores, restoreLogInterval)
	}()
	defer func() {
		cancel()
		<-restoresLogged
	}()
	served := make(chan error, 1)
	if ln != nil {
		go func() { served <- srv.Serve(ctx, ln) }()
	} else {
		served <- nil
	}
	// The app stops after the line that says why, so that the log tells
	// the stop in order.
	appCtx, stopApp := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopApp(nil)
	stopping := context.AfterFunc(ctx, func() {
		log.Info("stopping: committing what is pending, then closing the tasks", "cause", context.Cause(ctx).Error())
		stopApp(context.Cause(ctx))
	})
	runErr := app.Run(appCtx)
	stopping()
	cancel()
	httpErr := <-served
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return fmt.Errorf("%s: %w", what, runErr)
	}
	if httpErr != nil {
		return fmt.Errorf("--http %s: %w", ln.Addr(), httpErr)
	}
	return nil
}
