// Package fleet runs named child processes so that they can be killed for
// real (SIGKILL), frozen (SIGSTOP) and thawed (SIGCONT), stopped gracefully,
// and started again with the same command line. The demos and the chaos
// harness run their application instances and brokers with it.
//
// Each process runs in a process group of its own and every signal goes to
// the group, so that a command that starts the real program as its own
// child (a shell script, go run) is killed with it. On Linux a process
// also gets SIGKILL when the program that started it dies, so that no
// instance outlives its harness.
package fleet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec is how to start a process.
type Spec struct {
	// Path is the program; Args its arguments (without the program name).
	Path string
	Args []string
	// Env is the process's whole environment; nil gives it this program's
	// environment without the EXACTLY_* variables (see WithoutExactlyEnv).
	Env []string
	// Log is the file that receives the process's stdout and stderr,
	// appended to across restarts; "" discards them.
	Log string
}

// Fleet is a set of named processes. Its methods are safe for concurrent
// use. The zero value is ready to use.
type Fleet struct {
	mu      sync.Mutex
	specs   map[string]Spec
	running map[string]*process
	closed  bool
	exited  []string
}

// process is one running process.
type process struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	frozen bool
}

// ErrUnknown is returned by Start for a name no Set defined.
var ErrUnknown = errors.New("fleet: unknown process")

// Set defines or redefines the named process; a redefinition takes effect
// at its next start.
func (f *Fleet) Set(name string, s Spec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.specs == nil {
		f.specs = map[string]Spec{}
	}
	f.specs[name] = s
}

// Names lists the defined processes in order.
func (f *Fleet) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := make([]string, 0, len(f.specs))
	for n := range f.specs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Start starts the named process unless it is running or the fleet is
// closed.
func (f *Fleet) Start(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || f.running[name] != nil {
		return nil
	}
	spec, ok := f.specs[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknown, name)
	}
	if f.running == nil {
		f.running = map[string]*process{}
	}
	var out io.WriteCloser = nopCloser{io.Discard}
	if spec.Log != "" {
		file, err := os.OpenFile(spec.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("start %s: log file: %w", name, err)
		}
		out = file
	}
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = spec.Env
	if cmd.Env == nil {
		cmd.Env = WithoutExactlyEnv(os.Environ())
	}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s (%s): %w", name, spec.Path, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	f.running[name] = p
	go func() {
		cmd.Wait()
		out.Close()
		close(p.done)
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.running[name] == p { // neither killed nor stopped by the fleet
			f.exited = append(f.exited, name)
			delete(f.running, name)
		}
	}()
	return nil
}

// Running reports whether the named process runs (frozen or not).
func (f *Fleet) Running(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running[name] != nil
}

// Kill delivers SIGKILL to the named process and waits for it to die; false
// if it was not running.
func (f *Fleet) Kill(name string) bool {
	p := f.take(name)
	if p == nil {
		return false
	}
	p.signal(syscall.SIGKILL)
	<-p.done
	return true
}

// Freeze stops the named process with SIGSTOP: it keeps its sockets and
// memory but runs no instruction until Thaw. False if it is not running or
// already frozen.
func (f *Fleet) Freeze(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.running[name]
	if p == nil || p.frozen {
		return false
	}
	p.frozen = true
	p.signal(syscall.SIGSTOP)
	return true
}

// Thaw resumes a frozen process with SIGCONT; false if it is not frozen.
func (f *Fleet) Thaw(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.running[name]
	if p == nil || !p.frozen {
		return false
	}
	p.frozen = false
	p.signal(syscall.SIGCONT)
	return true
}

// Stop asks the named process to stop (SIGTERM, after SIGCONT if frozen)
// and waits for it; after grace it kills it. False if it was not running.
func (f *Fleet) Stop(name string, grace time.Duration) bool {
	p := f.take(name)
	if p == nil {
		return false
	}
	p.stop(grace)
	return true
}

// Close stops every process as Stop does, all at once, and starts none
// after.
func (f *Fleet) Close(grace time.Duration) {
	f.mu.Lock()
	running := f.running
	f.running, f.closed = nil, true
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range running {
		wg.Go(func() { p.stop(grace) })
	}
	wg.Wait()
}

// Exited lists, in order, the processes that exited on their own: neither
// killed nor stopped through the fleet.
func (f *Fleet) Exited() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.exited)
}

func (f *Fleet) take(name string) *process {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.running[name]
	delete(f.running, name)
	return p
}

// signal signals the process's group.
func (p *process) signal(sig syscall.Signal) {
	syscall.Kill(-p.cmd.Process.Pid, sig)
}

func (p *process) stop(grace time.Duration) {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.signal(syscall.SIGKILL)
		<-p.done
	}
}

// WithoutExactlyEnv drops EXACTLY_* variables, so that a parent's settings
// do not leak into its children's flags.
func WithoutExactlyEnv(env []string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, "EXACTLY_") {
			out = append(out, e)
		}
	}
	return out
}

// FreeLoopbackAddr returns a loopback address whose port is free right
// now, for a process to listen on.
func FreeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
