package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

// fleet runs a demo's processes as children of this program, by name, so
// that they can be killed for real (SIGKILL) and restarted with the same
// arguments.
type fleet struct {
	exe, dir string

	mu      sync.Mutex
	specs   map[string][]string
	http    []string // each process's HTTP address, in the order added
	running map[string]*child
	stopped bool
	exited  int
}

// child is one running process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// add names a process, the HTTP address it serves and its arguments.
func (f *fleet) add(name, httpAddr string, args ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.specs == nil {
		f.specs = map[string][]string{}
	}
	f.specs[name] = args
	f.http = append(f.http, httpAddr)
}

func (f *fleet) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for n := range f.specs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (f *fleet) start(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || f.running[name] != nil {
		return nil
	}
	if f.running == nil {
		f.running = map[string]*child{}
	}
	logFile, err := os.OpenFile(filepath.Join(f.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(f.exe, f.specs[name]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = withoutExactlyEnv(os.Environ())
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start process %s: %w", name, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	f.running[name] = c
	go func() {
		err := cmd.Wait()
		logFile.Close()
		close(c.done)
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.running[name] == c && err != nil {
			f.exited++ // neither killed nor stopped by us
			delete(f.running, name)
		}
	}()
	return nil
}

// kill delivers SIGKILL to the named process and waits for it to die; false
// if it is not running.
func (f *fleet) kill(name string) bool {
	f.mu.Lock()
	c := f.running[name]
	delete(f.running, name)
	f.mu.Unlock()
	if c == nil {
		return false
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	return true
}

// stopAll stops every process gracefully (SIGTERM; SIGKILL after 15 s) and
// starts none after.
func (f *fleet) stopAll() {
	f.mu.Lock()
	running := f.running
	f.running, f.stopped = nil, true
	f.mu.Unlock()
	for _, c := range running {
		c.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range running {
		select {
		case <-c.done:
		case <-time.After(15 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
	}
}

func (f *fleet) failures() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.exited
}
