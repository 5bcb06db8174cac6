package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// cluster is a throwaway PostgreSQL server a test owns: its own data
// directory, port and socket directory, so stopping it disturbs nothing else.
type cluster struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	cred *syscall.Credential // the OS user the server runs as, when the test runs as root
}

// postgresBin finds the directory of initdb and pg_ctl: $PG_BIN, or the
// newest /usr/lib/postgresql/*/bin, or the PATH.
func postgresBin(t *testing.T) string {
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

// newCluster initializes and starts a server in a temporary directory and
// stops it when the test ends. initdb refuses to run as root, so as root the
// server runs as the postgres OS user.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	if os.Getenv("KV_TEST_SKIP_POSTGRES") == "1" {
		t.Skip("KV_TEST_SKIP_POSTGRES=1: skipping the tests that need PostgreSQL")
	}
	c := &cluster{t: t, bin: postgresBin(t), dir: t.TempDir()}
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
	c.start()
	t.Cleanup(func() { c.stopQuietly() })
	return c
}

func (c *cluster) data() string { return filepath.Join(c.dir, "data") }

// dsn is the DSN of the cluster's postgres database.
func (c *cluster) dsn() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// run runs one of the server's programs as the server's user.
func (c *cluster) run(program string, args ...string) {
	c.t.Helper()
	if out, err := c.command(program, args...).CombinedOutput(); err != nil {
		c.t.Fatalf("%s %v: %v\n%s", program, args, err, out)
	}
}

func (c *cluster) command(program string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, program), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// start starts the server and waits until it accepts connections. fsync is
// off: the test crashes the server, not the machine, so what the server
// wrote survives in the page cache, and the test runs faster.
func (c *cluster) start() {
	c.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", c.port, c.dir)
	c.run("pg_ctl", "-D", c.data(), "-o", opts, "-l", filepath.Join(c.dir, "server.log"), "-w", "-t", "30", "start")
}

// crash stops the server the hard way (immediate mode: no checkpoint,
// crash recovery at the next start), as if it had died.
func (c *cluster) crash() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop")
}

func (c *cluster) stopQuietly() {
	_ = c.command("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop").Run()
}

// freePort returns a TCP port nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestOutage crashes the database under load and starts it again: while it
// is down every call fails with ErrUnavailable within its deadline and Ping
// fails; once it is back writes succeed again; and every write that was
// acknowledged is there afterwards.
func TestOutage(t *testing.T) {
	c := newCluster(t)
	cfg := testConfig(c.dsn())
	cfg.StatementTimeout = 2 * time.Second
	s := openStore(t, cfg)

	const (
		callTimeout = 500 * time.Millisecond
		// hangLimit is how long past its deadline a call may take before
		// the test calls it a hang: scheduling on a loaded machine.
		hangLimit = callTimeout + time.Second
	)
	var (
		mu      sync.Mutex
		acked   = map[string]string{} // key → value of every acknowledged Set
		phase   atomic.Int32          // 0 up, 1 down, 2 back up
		okAfter atomic.Int64          // successful writes after the restart
		failed  atomic.Int64          // calls that failed while down
		stop    = make(chan struct{})
		load    sync.WaitGroup
	)
	for w := range 8 {
		load.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%d", w, i)
				value := "v" + key
				p := phase.Load()
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				start := time.Now()
				var err error
				if i%4 == 3 {
					_, _, err = s.Get(ctx, "p", fmt.Sprintf("w%d-%d", w, i-1))
				} else {
					err = s.Set(ctx, "p", key, []byte(value), 0)
				}
				took := time.Since(start)
				cancel()
				if took > hangLimit {
					t.Errorf("a call took %v with a deadline of %v", took, callTimeout)
				}
				switch {
				case err == nil:
					if i%4 != 3 {
						mu.Lock()
						acked[key] = value
						mu.Unlock()
						if p == 2 {
							okAfter.Add(1)
						}
					}
				case errors.Is(err, store.ErrUnavailable):
					if p == 1 {
						failed.Add(1)
					}
					time.Sleep(10 * time.Millisecond)
				default:
					t.Errorf("call failed with %v, want nil or ErrUnavailable", err)
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}

	time.Sleep(300 * time.Millisecond)
	c.crash()
	phase.Store(1)
	time.Sleep(time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	start := time.Now()
	err := s.Ping(ctx)
	cancel()
	if !errors.Is(err, store.ErrUnavailable) || time.Since(start) > hangLimit {
		t.Errorf("Ping with the database down = %v after %v, want ErrUnavailable within %v", err, time.Since(start), callTimeout)
	}

	c.start()
	phase.Store(2)
	waitFor(t, "writes to succeed after the restart", func() bool { return okAfter.Load() > 0 })
	time.Sleep(200 * time.Millisecond)
	close(stop)
	load.Wait()

	if failed.Load() == 0 {
		t.Errorf("no call failed while the database was down")
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping after the restart = %v", err)
	}
	// Every acknowledged write survived the crash.
	keys := make([]string, 0, len(acked))
	for k := range acked {
		keys = append(keys, k)
	}
	for start := 0; start < len(keys); start += store.MaxBatchItems {
		chunk := keys[start:min(start+store.MaxBatchItems, len(keys))]
		values, err := s.GetMany(context.Background(), "p", chunk)
		if err != nil {
			t.Fatalf("GetMany: %v", err)
		}
		for i, k := range chunk {
			if string(values[i]) != acked[k] {
				t.Errorf("acknowledged %s = %q is %q after the crash", k, acked[k], values[i])
			}
		}
	}
	t.Logf("%d acknowledged writes, all present; %d calls failed while down, %d writes succeeded after the restart",
		len(acked), failed.Load(), okAfter.Load())
}
