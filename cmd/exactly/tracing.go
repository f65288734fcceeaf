package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// tracingConfig is what the command's tracing flags ask for.
type tracingConfig struct {
	// Stdout writes every span to Output (standard output when nil) as
	// JSON lines.
	Stdout bool
	Output io.Writer
	// OTLPEndpoint, if set, exports spans over OTLP/HTTP (protobuf) to
	// this URL, e.g. http://127.0.0.1:4318 (the path /v1/traces is added
	// when the URL has none).
	OTLPEndpoint string
	// SampleRatio is the share of traces started here that are recorded
	// (1 = every record); a record whose traceparent says sampled is
	// always recorded.
	SampleRatio float64
}

// enabled reports whether any exporter is asked for.
func (c tracingConfig) enabled() bool { return c.Stdout || c.OTLPEndpoint != "" }

// newTracing returns a tracer provider exporting as c asks, with service as
// the service name, and the function that flushes and stops it. The spans
// an exporter fails to send (a collector that is down) are logged to log
// as warnings.
func newTracing(c tracingConfig, service string, log *slog.Logger) (*sdktrace.TracerProvider, func(), error) {
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return nil, nil, fmt.Errorf("--trace-sample-ratio %v: want a number from 0 to 1", c.SampleRatio)
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
	}
	if c.Stdout {
		w := c.Output
		if w == nil {
			w = os.Stdout
		}
		exporter, err := stdouttrace.New(stdouttrace.WithWriter(w))
		if err != nil {
			return nil, nil, fmt.Errorf("--trace-stdout: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exporter))
	}
	if c.OTLPEndpoint != "" {
		// The exporter also reads the standard OTEL_EXPORTER_OTLP_*
		// variables (headers, certificates, timeout); the flag's URL wins
		// over OTEL_EXPORTER_OTLP_ENDPOINT.
		u, err := url.Parse(c.OTLPEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, nil, fmt.Errorf("--otlp-endpoint %q: want an http:// or https:// URL of an OTLP/HTTP collector, e.g. http://127.0.0.1:4318", c.OTLPEndpoint)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces" // the OTLP/HTTP traces path, as OTEL_EXPORTER_OTLP_ENDPOINT
		}
		exporter, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(u.String()))
		if err != nil {
			return nil, nil, fmt.Errorf("--otlp-endpoint %s: %w", c.OTLPEndpoint, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exporter))
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: spans not exported", "err", err)
	}))
	tp := sdktrace.NewTracerProvider(append(opts, sdktrace.WithResource(res))...)
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tp.Shutdown(ctx)
	}
	return tp, stop, nil
}
