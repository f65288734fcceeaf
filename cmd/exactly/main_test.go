package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalContextNamesTheSignal: the first SIGTERM cancels the command's
// context with a cause that names the signal and says how to end the stop
// at once, which the applications log as the first line of their stop.
func TestSignalContextNamesTheSignal(t *testing.T) {
	ctx, stop := signalContext()
	defer stop()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("SIGTERM did not cancel the context")
	}
	cause := context.Cause(ctx)
	if cause == nil || !strings.Contains(cause.Error(), "received SIGTERM") || !strings.Contains(cause.Error(), "a second signal ends the process at once") {
		t.Errorf("cause = %v; want it to name SIGTERM and the second signal", cause)
	}
	if ctx.Err() != context.Canceled {
		t.Errorf("ctx.Err() = %v; want context.Canceled, which the commands treat as a clean stop", ctx.Err())
	}
}

// TestSignalContextStopWithoutSignal: stop cancels the context with no
// signal as its cause, and releases the signals.
func TestSignalContextStopWithoutSignal(t *testing.T) {
	ctx, stop := signalContext()
	stop()
	if context.Cause(ctx) != context.Canceled {
		t.Errorf("cause after stop = %v; want context.Canceled", context.Cause(ctx))
	}
}
