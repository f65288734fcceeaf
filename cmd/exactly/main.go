// Command exactly runs the exactly toolkit's processes: an embedded
// Kafka-protocol broker, the order projection demo, the reference
// applications, the outbox relay, the verifier and the benchmarks.
//
// Every flag can also be given as an environment variable (EXACTLY_ and the
// flag name in upper case with dashes and dots as underscores, e.g.
// EXACTLY_BROKERS, EXACTLY_ROUTE_BY_FIELD) or as a key of the YAML, JSON or TOML file named by
// --config (the flag name as the key). A flag on the command line wins over
// the environment, which wins over the file.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

func main() {
	ctx, stop := signalContext()
	defer stop()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "exactly:", err)
		var exit *exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		os.Exit(1)
	}
}

// signalContext returns a context cancelled at the first SIGINT or SIGTERM,
// with a *stopSignal naming the signal as its cause; the commands then stop
// cleanly (an application commits what is pending and leaves its group).
// A second signal ends the process at once, as if the first had not been
// caught: the way out of a stop that takes too long.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-signals:
			signal.Stop(signals)
			cancel(&stopSignal{sig})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(signals)
		close(done)
		cancel(context.Canceled)
	}
}

// stopSignal is the cause of the stop of a command that received a signal.
type stopSignal struct{ sig os.Signal }

func (s *stopSignal) Error() string {
	name := s.sig.String()
	if sig, ok := s.sig.(syscall.Signal); ok {
		switch sig {
		case syscall.SIGINT:
			name = "SIGINT"
		case syscall.SIGTERM:
			name = "SIGTERM"
		}
	}
	return "received " + name + " (a second signal ends the process at once)"
}

// exitError ends the command with a specific exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRootCommand() *cobra.Command {
	var configFile, logLevel string
	root := &cobra.Command{
		Use:           "exactly",
		Short:         "Exactly-once, order-aware stream processing on Kafka",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfig(cmd, configFile); err != nil {
				return err
			}
			return setLogLevel(logLevel)
		},
	}
	root.PersistentFlags().StringVar(&configFile, "config", "", "config file (YAML, JSON or TOML) whose keys are flag names")
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	for _, add := range commands {
		root.AddCommand(add())
	}
	return root
}

// commands lists the subcommand constructors; each file adds its own.
var commands []func() *cobra.Command

// applyConfig fills every flag the command line left unset from the
// environment (EXACTLY_FLAG_NAME), then from the config file.
func applyConfig(cmd *cobra.Command, configFile string) error {
	v := viper.New()
	v.SetEnvPrefix("EXACTLY")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_", ".", "_"))
	v.AutomaticEnv()
	if configFile != "" {
		v.SetConfigFile(configFile)
		if err := v.ReadInConfig(); err != nil {
			return fmt.Errorf("read config file %s: %w", configFile, err)
		}
	}
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "config" || !v.IsSet(f.Name) {
			return
		}
		val := v.Get(f.Name)
		var s string
		switch x := val.(type) {
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			s = strings.Join(parts, ",")
		default:
			s = fmt.Sprint(x)
		}
		if err := f.Value.Set(s); err != nil {
			errs = append(errs, fmt.Errorf("--%s from environment or config file: %w", f.Name, err))
		}
	})
	return errors.Join(errs...)
}

func setLogLevel(level string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})))
	return nil
}
