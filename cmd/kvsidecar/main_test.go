package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/protocol"
)

// TestMain lets the test binary be the daemon: with KV_TEST_AS_DAEMON set
// it runs main's run() on its arguments, so the tests below drive the real
// command as a separate process, signals and exit codes included.
func TestMain(m *testing.M) {
	if os.Getenv("KV_TEST_AS_DAEMON") != "" {
		os.Exit(run())
	}
	os.Exit(m.Run())
}

func daemonCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "KV_TEST_AS_DAEMON=1")
	return cmd
}

func TestHelpExplainsEveryFlag(t *testing.T) {
	out, err := daemonCmd("--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, want := range []string{
		"-socket", "KV_SOCKET", "/run/kvsidecar/kv.sock", "-data-dir", "KV_DATA_DIR", "-project", "KV_PROJECT",
		"-uid-map", "KV_UID_MAP", "-system-project", "-default-quota", "KV_DEFAULT_QUOTA", "1GiB",
		"-max-key-bytes", "-max-value-bytes", "-metrics-addr", "-log-level", "-log-format", "-postgres", "SIGHUP",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
}

// TestHelpIsOnStdout: --help is what was asked for, so it goes to stdout,
// where `kvsidecar --help | less` and `| grep` find it.
func TestHelpIsOnStdout(t *testing.T) {
	cmd := daemonCmd("--help")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "Usage: kvsidecar") || stderr.Len() != 0 {
		t.Fatalf("--help: %v; stdout %d bytes, stderr %q; want the help on stdout only", err, len(out), stderr.String())
	}
}

// TestBadFlagIsOneLine: a bad flag is reported once, in one line that
// names the flag, not buried under the whole help.
func TestBadFlagIsOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--project", "p", "--max-conns", "abc"}, `-max-conns: bad number "abc"`},
		{[]string{"--project", "p", "--no-such-flag"}, "no-such-flag"},
	} {
		out, err := daemonCmd(tc.args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("%v: exit %v, want code 2\n%s", tc.args, err, out)
		}
		if strings.Count(string(out), tc.want) != 1 || strings.Count(string(out), "\n") != 1 || strings.Contains(string(out), "Usage:") {
			t.Errorf("%v: output\n%s\nwant one line saying %q, and no help", tc.args, out, tc.want)
		}
	}
}

func TestRefusesToStartWithoutIdentity(t *testing.T) {
	cmd := daemonCmd("--socket", filepath.Join(t.TempDir(), "kv.sock"))
	cmd.Env = append(cmd.Env, "KV_PROJECT=", "KV_UID_MAP=")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v, want code 2\n%s", err, out)
	}
	if !strings.Contains(string(out), "give --project NAME") || !strings.Contains(string(out), "--uid-map FILE") {
		t.Fatalf("the error does not say how to give an identity:\n%s", out)
	}
}

func TestBadFlagValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--project", "p", "--default-quota", "lots"}, `bad size "lots"`},
		{[]string{"--project", "system"}, "system project"},
		{[]string{"--project", "p", "--uid-map", "/x"}, "choose one identity source"},
		{[]string{"--project", "p", "--log-format", "xml"}, "want json or console"},
	} {
		out, err := daemonCmd(tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: err %v, output %q; want it to say %q", tc.args, err, out, tc.want)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := daemonCmd("--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "kvsidecar dev" {
		t.Fatalf("--version: %q, %v; want \"kvsidecar dev\" (no -ldflags in tests)", out, err)
	}
}

// TestStartErrorIsPlain: an error at start-up is one log line that says
// what is wrong, in both log formats, with no stack trace, and exit code 1.
func TestStartErrorIsPlain(t *testing.T) {
	for _, format := range []string{"json", "console"} {
		cmd := daemonCmd("--socket", filepath.Join(t.TempDir(), "kv.sock"), "--identity", "k8s", "--k8s-node-name", "node-a",
			"--kubeconfig", filepath.Join(t.TempDir(), "missing-kubeconfig"), "--metrics-addr", "", "--log-format", format)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("%s: exit %v, want code 1\n%s", format, err, out)
		}
		if !strings.Contains(string(out), "k8s identity: configure the API client") || !strings.Contains(string(out), "missing-kubeconfig") {
			t.Errorf("%s: the error does not say the kubeconfig cannot be read:\n%s", format, out)
		}
		if strings.Contains(string(out), "stacktrace") || strings.Contains(string(out), "main.run") || strings.Count(string(out), "\n") != 1 {
			t.Errorf("%s: want one line without a stack trace, got:\n%s", format, out)
		}
	}
}

type daemonProc struct {
	cmd    *exec.Cmd
	socket string
	log    *strings.Builder // read it once done is closed, or with logged
	logw   *syncWriter
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, once done is closed
}

// startDaemon starts the daemon as a process serving socket, with the
// flags given after the defaults of these tests (project dev, no metrics
// server), and waits until it answers.
func startDaemon(t *testing.T, socket string, flags ...string) *daemonProc {
	t.Helper()
	args := append([]string{"--socket", socket, "--project", "dev", "--metrics-addr", "", "--log-format", "console"}, flags...)
	cmd := daemonCmd(args...)
	log := &strings.Builder{}
	logw := &syncWriter{b: log}
	cmd.Stderr = logw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &daemonProc{cmd: cmd, socket: socket, log: log, logw: logw, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := client.Dial(ctx, socket)
		cancel()
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not come up: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logged returns what the daemon has logged so far, while it runs.
func (p *daemonProc) logged() string {
	p.logw.mu.Lock()
	defer p.logw.mu.Unlock()
	return p.log.String()
}

type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestSIGTERMUnderLoadKeepsAcknowledgedWrites stops the daemon with
// SIGTERM while writers are busy, restarts it on the same data, and checks
// that every write that was acknowledged is there.
func TestSIGTERMUnderLoadKeepsAcknowledgedWrites(t *testing.T) {
	dir, err := os.MkdirTemp("", "kvsterm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket, data := filepath.Join(dir, "kv.sock"), filepath.Join(dir, "data")
	d := startDaemon(t, socket, "--data-dir", data)

	const writers = 16
	var (
		mu    sync.Mutex
		acked = map[string]int{}
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	started := make(chan struct{}, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := client.Dial(ctx, socket)
			if err != nil {
				t.Errorf("writer %d: %v", w, err)
				started <- struct{}{}
				return
			}
			defer c.Close()
			for i := 0; ; i++ {
				key := fmt.Sprintf("w%02d-%06d", w, i)
				if err := c.Set(ctx, key, i, 0); err != nil {
					if i == 0 {
						started <- struct{}{}
					}
					return // the daemon is stopping: unacknowledged, may or may not be stored
				}
				mu.Lock()
				acked[key] = i
				mu.Unlock()
				if i == 20 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range writers {
		<-started
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
		if d.err != nil {
			t.Fatalf("daemon exited with %v after SIGTERM\n%s", d.err, d.log)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not stop within 20s of SIGTERM\n%s", d.log)
	}
	wg.Wait()
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Fatalf("socket still exists after stop: %v", err)
	}
	if !strings.Contains(d.log.String(), "kvsidecar stopping") || !strings.Contains(d.log.String(), "terminated signal received") {
		t.Fatalf("the log does not say the daemon is stopping, and why:\n%s", d.log)
	}
	if len(acked) < writers*20 {
		t.Fatalf("only %d writes acknowledged before SIGTERM", len(acked))
	}

	startDaemon(t, socket, "--data-dir", data)
	c, err := client.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	missing := 0
	for key, want := range acked {
		var got int
		found, err := c.Get(ctx, key, &got)
		if err != nil {
			t.Fatal(err)
		}
		if !found || got != want {
			missing++
			if missing < 5 {
				t.Errorf("acknowledged write %s=%d: found=%v value=%d", key, want, found, got)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged writes lost across SIGTERM", missing, len(acked))
	}
	t.Logf("%d acknowledged writes, all present after restart", len(acked))
}

// TestSecondSignalStopsAtOnce: a stop waits up to --shutdown-timeout for
// the requests in flight; a second SIGTERM (an operator's second Ctrl-C)
// ends the daemon at once instead.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	dir, err := os.MkdirTemp("", "kvsig")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "kv.sock")
	d := startDaemon(t, socket, "--data-dir", filepath.Join(dir, "data"), "--shutdown-timeout", "5m")

	ctx := t.Context()
	c, err := client.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetBytes(ctx, "big", make([]byte, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	// A caller that asks for the 1 MiB value 32 times and reads none of the
	// answers: they cannot be flushed, so the stop waits for it.
	nc, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	enc := protocol.NewEncoder()
	for i := range 33 {
		req := &protocol.Request{ID: uint64(i), Op: protocol.OpGet, Key: "big"}
		if i == 0 {
			req = &protocol.Request{Op: protocol.OpHello, Version: protocol.Version, Client: "stuck"}
		}
		frame, err := enc.Request(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Usage(ctx); err != nil { // the gets have been read by now
		t.Fatal(err)
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(d.logged(), "kvsidecar stopping") {
		select {
		case <-d.done:
			t.Fatalf("the daemon exited at once, without waiting for the stuck caller:\n%s", d.log)
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case <-d.done:
		t.Fatalf("the daemon exited without waiting for the stuck caller:\n%s", d.log)
	case <-time.After(500 * time.Millisecond):
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the daemon still waits 10s after a second SIGTERM\n%s", d.logged())
	}
	// The next start replaces the socket file left behind, and has the data.
	startDaemon(t, socket, "--data-dir", filepath.Join(dir, "data"))
	if ok, err := c.Has(ctx, "big"); err != nil || !ok {
		t.Fatalf("after the restart: has(big) = %v, %v; want the acknowledged write", ok, err)
	}
}
