package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Cluster is a throwaway PostgreSQL server that one test owns, for tests
// that stop, crash and restart the database: its own data directory (in a
// temporary directory of the test), its own free TCP port on 127.0.0.1 and
// its own Unix socket directory. It never touches the shared server the
// other tests use (BaseDSN), so stopping it disturbs nothing else, and it is
// stopped and deleted by t.Cleanup when the test ends.
//
// The server's programs (initdb, pg_ctl) come from $PG_BIN, else the newest
// /usr/lib/postgresql/*/bin, else the PATH. initdb refuses to run as root,
// so when the test runs as root the server runs as the postgres OS user,
// which must exist; otherwise it runs as the test's own user.
//
// Its methods fail the test on error, so call them from the test's
// goroutine.
type Cluster struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	cred *syscall.Credential // the OS user the server runs as, when the test runs as root
}

// NewCluster initializes a server in a temporary directory and starts it.
// Like Require, it skips the test when KV_TEST_SKIP_POSTGRES=1 and fails it
// when the server cannot be set up.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	if os.Getenv("KV_TEST_SKIP_POSTGRES") == "1" {
		t.Skip("KV_TEST_SKIP_POSTGRES=1: skipping the tests that need PostgreSQL")
	}
	c := &Cluster{t: t, bin: serverBin(t), dir: t.TempDir()}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, and initdb refuses root: need a postgres OS user to run the server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		// The server's user must reach the directory: t.TempDir's parent
		// is private to us.
		if err := os.Chmod(filepath.Dir(c.dir), 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(c.dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	c.port = freePort(t)
	c.run("initdb", "-D", c.data(), "-U", "postgres", "--auth=trust", "--no-sync", "--no-locale", "-E", "UTF8")
	// Registered after t.TempDir's cleanup, so it runs before the
	// directory is removed; pg_ctl's error when the server is already
	// down is of no interest.
	t.Cleanup(func() { _ = c.command("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop").Run() })
	c.Start()
	return c
}

// DSN returns the DSN of the cluster's postgres database (superuser
// postgres, trust authentication). It stays the same across restarts.
func (c *Cluster) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Start starts the server and waits until it accepts connections. fsync is
// off: tests crash the server, not the machine, so what the server wrote
// survives in the page cache, and the tests run faster.
func (c *Cluster) Start() {
	c.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", c.port, c.dir)
	c.run("pg_ctl", "-D", c.data(), "-o", opts, "-l", filepath.Join(c.dir, "server.log"), "-w", "-t", "30", "start")
}

// Crash stops the server the hard way (immediate mode: connections are cut,
// no checkpoint, crash recovery at the next Start), as if it had died.
func (c *Cluster) Crash() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop")
}

// Stop shuts the server down cleanly (fast mode: open transactions are
// rolled back, connections are closed, a checkpoint is written).
func (c *Cluster) Stop() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.data(), "-m", "fast", "-w", "stop")
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// run runs one of the server's programs as the server's user.
func (c *Cluster) run(program string, args ...string) {
	c.t.Helper()
	if out, err := c.command(program, args...).CombinedOutput(); err != nil {
		c.t.Fatalf("%s %v: %v\n%s", program, args, err, out)
	}
}

func (c *Cluster) command(program string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, program), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// serverBin finds the directory of initdb and pg_ctl: $PG_BIN, or the
// newest /usr/lib/postgresql/*/bin, or the PATH.
func serverBin(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("PG_BIN"); dir != "" {
		return dir
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi < vj
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	t.Fatalf("initdb not found: install the PostgreSQL server binaries, set PG_BIN to their directory, or set KV_TEST_SKIP_POSTGRES=1")
	return ""
}

// freePort returns a TCP port nothing listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Freeze stops every process of the server (SIGSTOP) without closing
// anything: connections stay open and nothing answers, as when the
// database's machine hangs or a network path silently drops packets.
// Thaw resumes them; t.Cleanup thaws a frozen cluster before stopping it.
func (c *Cluster) Freeze() {
	c.t.Helper()
	c.signalAll(syscall.SIGSTOP)
	c.t.Cleanup(func() { c.signalAll(syscall.SIGCONT) })
}

// Thaw resumes a frozen server (SIGCONT).
func (c *Cluster) Thaw() {
	c.t.Helper()
	c.signalAll(syscall.SIGCONT)
}

// signalAll sends sig to the postmaster and its children.
func (c *Cluster) signalAll(sig syscall.Signal) {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.data(), "postmaster.pid"))
	if err != nil {
		c.t.Fatalf("read postmaster.pid: %v", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pm, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		c.t.Fatalf("postmaster.pid: %v", err)
	}
	pids := []int{pm}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// The fourth field, after the parenthesized command, is the ppid.
		_, rest, ok := strings.Cut(string(b), ") ")
		fields := strings.Fields(rest)
		if !ok || len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == pm {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(st)))
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && sig != syscall.SIGCONT {
			c.t.Fatalf("signal %v to pid %d: %v", sig, pid, err)
		}
	}
}
