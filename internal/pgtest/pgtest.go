// Package pgtest starts throwaway PostgreSQL clusters from the system's
// server binaries for tests: one shared cluster per test binary, started on
// first use, and a fresh database per test, dropped when the test ends.
//
// The server listens on a unix socket in a temporary directory only, runs
// with wal_level=logical (so logical replication works) and fsync off, and
// dies with the test binary: the postmaster is a direct child started with a
// parent-death signal, so even a killed test binary leaves no server behind.
//
// When the binaries are missing, tests that need PostgreSQL fail, unless
// EXACTLY_SKIP_PG=1 is set, in which case they skip. CI installs the
// binaries (.ci/run), so a missing server never passes silently there.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// SkipEnv names the environment variable that turns a missing PostgreSQL
// installation from a test failure into a skip.
const SkipEnv = "EXACTLY_SKIP_PG"

const (
	port         = 5432 // only names the socket file: the server listens on no TCP port
	superuser    = "postgres"
	templateName = "pgtest_template"
)

var (
	sharedOnce    sync.Once
	sharedCluster *Cluster
	sharedErr     error
	dbCounter     atomic.Int64
)

// Main runs the package's tests and then stops the shared cluster, if one was
// started, and removes its files. Call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Without it the server still dies with the test binary, but its temporary
// directory stays behind, and every cluster runs initdb (with it, later
// clusters copy the first one's fresh data directory).
func Main(m *testing.M) {
	pristine.Lock()
	pristine.keep = true
	pristine.Unlock()
	code := m.Run()
	if sharedCluster != nil {
		if err := sharedCluster.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		}
	}
	pristine.Lock()
	if pristine.dir != "" {
		os.RemoveAll(pristine.dir)
	}
	pristine.Unlock()
	os.Exit(code)
}

// NewDatabase creates a fresh, empty database on the shared cluster and
// returns its connection string. The database is dropped when t ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	sharedOnce.Do(func() {
		sharedCluster, sharedErr = start()
	})
	if sharedErr != nil {
		failOrSkip(t, sharedErr)
	}
	return sharedCluster.NewDatabase(t)
}

// Start starts a cluster of its own for t, for tests that stop or crash the
// server. It is closed when t ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	c, err := start()
	if err != nil {
		failOrSkip(t, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return c
}

// errNoBinaries marks a machine without the PostgreSQL server binaries.
var errNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found on PATH or in /usr/lib/postgresql/*/bin")

func failOrSkip(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, errNoBinaries) && os.Getenv(SkipEnv) == "1" {
		t.Skipf("pgtest: %v (%s=1)", err, SkipEnv)
	}
	if errors.Is(err, errNoBinaries) {
		t.Fatalf("pgtest: %v; install them (apt-get install postgresql) or set %s=1 to skip", err, SkipEnv)
	}
	t.Fatalf("pgtest: %v", err)
}

// Cluster is one running PostgreSQL server with its data directory. Its
// methods are safe for concurrent use, except Stop and Restart, which the
// owning test calls.
type Cluster struct {
	bin     string // directory holding initdb and postgres
	dir     string // owns data/ and the socket
	dataDir string
	cred    *syscall.Credential // non-nil when running as root

	mu      sync.Mutex
	proc    *exec.Cmd
	exited  chan struct{} // closed when proc has exited
	logFile *os.File
}

func findBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", errNoBinaries
}

// start creates, initialises and starts a new cluster.
func start() (*Cluster, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	removeStale()
	dir, err := os.MkdirTemp("", "exactly-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	c := &Cluster{bin: bin, dir: dir, dataDir: filepath.Join(dir, "data")}
	if os.Geteuid() == 0 {
		// The server refuses to run as root: run it as the postgres user,
		// which must own the directory.
		u, err := user.Lookup(superuser)
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root needs the %q OS user: %w", superuser, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("chown cluster directory: %w", err)
		}
	}
	if err := c.initdb(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.exec(context.Background(), "postgres", "CREATE DATABASE "+templateName); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

var staleOnce sync.Once

// removeStale removes the directories of clusters whose test binary was
// killed before it could clean up: their postmaster is gone.
func removeStale() {
	staleOnce.Do(func() {
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "exactly-pgtest-*"))
		for _, dir := range dirs {
			// initdb's bootstrap backends leave postmaster.pid files with
			// dead pids behind while another binary sets its cluster up:
			// only old directories are candidates.
			info, err := os.Stat(dir)
			if err != nil || time.Since(info.ModTime()) < 10*time.Minute {
				continue
			}
			pidFile, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
			if err == nil {
				pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(pidFile), "\n", 2)[0]))
				if pid > 0 && alive(pid) {
					continue
				}
			}
			os.RemoveAll(dir)
		}
	})
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// cleanEnv is the environment without PG* variables, which would otherwise
// move the socket or redirect connections.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Env = cleanEnv()
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	return cmd
}

// pristine is a data directory fresh from initdb, never started, that later
// clusters of this process copy: a copy takes a fraction of initdb's time.
var pristine struct {
	sync.Mutex
	keep bool   // Main runs, and removes dir at the end
	dir  string // holds data/; empty until the first initdb
}

// initdb creates c's data directory as a copy of the process's pristine one,
// running initdb first if there is none yet.
func (c *Cluster) initdb() error {
	pristine.Lock()
	defer pristine.Unlock()
	if pristine.dir != "" {
		// Touched so that removeStale never takes it for a leftover.
		now := time.Now()
		os.Chtimes(pristine.dir, now, now)
		out, err := exec.Command("cp", "-a", filepath.Join(pristine.dir, "data"), c.dataDir).CombinedOutput()
		if err == nil {
			return nil
		}
		fmt.Fprintf(os.Stderr, "pgtest: copy pristine data directory: %v: %s; running initdb\n", err, out)
	}
	cmd := c.command("initdb", "--pgdata", c.dataDir, "--username", superuser,
		"--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-sync")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if !pristine.keep {
		return nil // nobody would remove the copy: every cluster runs initdb
	}
	dir, err := os.MkdirTemp("", "exactly-pgtest-")
	if err != nil {
		return nil
	}
	if out, err := exec.Command("cp", "-a", c.dataDir, filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: keep pristine data directory: %v: %s\n", err, out)
		os.RemoveAll(dir)
		return nil
	}
	pristine.dir = dir
	return nil
}

// Start starts the server on the existing data directory and waits until it
// accepts connections. The server is killed if the test binary dies.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		return errors.New("pgtest: server already running")
	}
	logFile, err := os.OpenFile(filepath.Join(c.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open server log: %w", err)
	}
	cmd := c.command("postgres", "-D", c.dataDir, "-k", c.dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=",
		"-c", "wal_level=logical",
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "wal_writer_delay=10ms",
		"-c", "max_connections=200",
		"-c", "max_wal_senders=20",
		"-c", "max_replication_slots=20",
		"-c", "shared_buffers=64MB",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	// The parent-death signal fires when the creating thread exits, so the
	// thread stays locked to a goroutine that lives as long as the server.
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		logFile.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	c.proc, c.exited, c.logFile = cmd, exited, logFile

	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			c.proc = nil
			return fmt.Errorf("postgres exited during startup; log:\n%s", c.log())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after 30s: %w; log:\n%s", err, c.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// StopMode says how Stop shuts the server down, as pg_ctl's -m does.
type StopMode int

const (
	// Fast rolls back open transactions and shuts down cleanly (SIGINT).
	Fast StopMode = iota
	// Immediate aborts all processes without a shutdown checkpoint, as a
	// crash would; the next start runs crash recovery. It runs pg_ctl stop
	// -m immediate.
	Immediate
)

// Stop stops the server and waits until the postmaster has exited.
func (c *Cluster) Stop(mode StopMode) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return nil
	}
	if mode == Immediate {
		out, err := c.command("pg_ctl", "stop", "--pgdata", c.dataDir, "--mode", "immediate", "--wait").CombinedOutput()
		if err != nil {
			return fmt.Errorf("pg_ctl stop -m immediate: %w\n%s", err, out)
		}
	} else if err := c.proc.Process.Signal(syscall.SIGINT); err != nil {
		return fmt.Errorf("signal postgres: %w", err)
	}
	select {
	case <-c.exited:
	case <-time.After(60 * time.Second):
		c.proc.Process.Kill()
		<-c.exited
	}
	c.proc = nil
	c.logFile.Close()
	return nil
}

// Restart stops the server in the given mode and starts it again.
func (c *Cluster) Restart(mode StopMode) error {
	if err := c.Stop(mode); err != nil {
		return err
	}
	return c.Start()
}

// Close stops the server and removes its files.
func (c *Cluster) Close() error {
	err := c.Stop(Fast)
	if rmErr := os.RemoveAll(c.dir); rmErr != nil && err == nil {
		err = fmt.Errorf("remove cluster directory: %w", rmErr)
	}
	return err
}

// DSN returns the connection string of database db as the superuser.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", c.dir, port, superuser, db)
}

func (c *Cluster) exec(ctx context.Context, db, sql string) error {
	conn, err := pgx.Connect(ctx, c.DSN(db))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// NewDatabase creates a fresh, empty database on c and returns its connection
// string. When t ends the database's connections are terminated, its
// replication slots dropped and the database dropped.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d_%d", os.Getpid(), dbCounter.Add(1))
	ctx := context.Background()
	if err := c.exec(ctx, "postgres", fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, templateName)); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := c.dropDatabase(ctx, name); err != nil {
			t.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	return c.DSN(name)
}

func (c *Cluster) dropDatabase(ctx context.Context, name string) error {
	c.mu.Lock()
	running := c.proc != nil
	c.mu.Unlock()
	if !running {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	// Logical slots pin a database: terminate their walsenders, then drop.
	for attempt := 0; ; attempt++ {
		_, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name)
		if err == nil {
			_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
		}
		if err == nil {
			break
		}
		if attempt == 50 {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, err = conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name))
	return err
}
