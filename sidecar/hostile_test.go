package sidecar_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/sidecar/identity"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
	"github.com/kvsidecar/kvsidecar/store/pebble"
)

// pausingResolver maps every peer to project, or to none once unmapped; its
// first Resolve pauses after reading the mapping, until release is closed,
// so a test can reload and revoke while a connection is between being
// resolved and being registered.
type pausingResolver struct {
	mu       sync.Mutex
	project  string // "" once unmapped
	once     sync.Once
	resolved chan struct{} // closed when the first Resolve has read the mapping
	release  chan struct{}
}

func (r *pausingResolver) Resolve(ctx context.Context, p identity.Peer) (string, error) {
	r.mu.Lock()
	project := r.project
	r.mu.Unlock()
	r.once.Do(func() {
		close(r.resolved)
		<-r.release
	})
	if project == "" {
		return "", errors.New("uid is not in the uid map")
	}
	return project, nil
}

// TestRevokeWhileAccepting reloads the mapping, removing the caller, while
// its connection is being admitted under the old mapping: the connection
// must not be served under the project it no longer maps to, whichever of
// the accept and the revocation comes first.
func TestRevokeWhileAccepting(t *testing.T) {
	dir := shortTempDir(t)
	st, err := pebble.Open(context.Background(), pebble.Config{Path: filepath.Join(dir, "kv")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ident := &pausingResolver{project: "alpha", resolved: make(chan struct{}), release: make(chan struct{})}
	cfg := sidecar.Config{Socket: filepath.Join(dir, "kv.sock")}.WithDefaults()
	srv := sidecar.NewServer(cfg, st, ident, sidecar.NewMetrics(), zap.NewNop())
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
		srv.RemoveSocket()
	})

	c := dialRaw(t, cfg.Socket)
	<-ident.resolved // admitted as alpha, not yet registered
	ident.mu.Lock()
	ident.project = ""
	ident.mu.Unlock()
	srv.Revoke(context.Background())
	close(ident.release)

	c.send(&protocol.Request{ID: 0, Op: protocol.OpHello, Version: protocol.Version, Client: "rawtest"})
	resp, ok := c.read()
	if ok && resp.Err == nil {
		t.Fatalf("served as project %q after the reload removed the caller", resp.Hello.Project)
	}
	if !ok || resp.Err.Code != protocol.CodeForbidden || !strings.Contains(resp.Err.Message, "not in the uid map") {
		t.Fatalf("got %+v (open %v), want forbidden saying the uid is not in the map", resp, ok)
	}
}

// TestSlowFrameIsCutOff sends, after hello, the header of a 1 MiB frame
// and then a byte now and then: the frame's reserve (the frame and two
// responses) would stay held, and a handful of such connections would pin
// the project's share of the budget for as long as they trickled. The
// daemon closes the connection once the frame has taken longer than the
// write timeout, and gives the budget back.
func TestSlowFrameIsCutOff(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{WriteTimeout: time.Second, Metrics: true})
	c := dialRaw(t, d.Socket)
	c.hello()
	c.write([]byte{0, 0x10, 0, 0, 0x81}) // 1 MiB follows: a map of...
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := c.nc.Write([]byte{0xa1}); err != nil {
				return
			}
		}
	}()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("a frame trickling in after the write timeout: %v, want the daemon to close the connection", err)
	}
	waitMetric(t, d, `kvsidecar_connections_closed_total\{reason="frame_timeout"\}`, 1)
	waitMetric(t, d, `kvsidecar_inflight_bytes`, 0)
}

// TestWaitingRequestsBounded has 64 connections pipeline 1024 incr of one
// key each, against a daemon in its own process with a 16 MiB budget and
// short keys: every request but the first of each connection waits, in its
// own goroutine, for the one before it. The budget must cover what the
// waiting requests hold, not only their frames and responses (a few
// hundred bytes here), so the daemon's peak RSS stays within the bound
// README documents.
func TestWaitingRequestsBounded(t *testing.T) {
	dir, err := os.MkdirTemp("", "kvswait")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "kv.sock")
	const budget = 16 << 20
	const conns, perConn = 64, 1024
	// The real daemon binary, without the race detector's shadow memory.
	bin := filepath.Join(dir, "kvsidecar")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/kvsidecar/kvsidecar/cmd/kvsidecar").CombinedOutput(); err != nil {
		t.Fatalf("build kvsidecar: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "GOCOVERDIR=",
		"KV_SOCKET="+socket, "KV_DATA_DIR="+filepath.Join(dir, "data"), "KV_PROJECT=pile",
		"KV_MAX_INFLIGHT_BYTES="+strconv.Itoa(budget), "KV_MAX_INFLIGHT="+strconv.Itoa(perConn),
		"KV_MAX_KEY_BYTES=16", "KV_METRICS_ADDR=", "KV_LOG_LEVEL=error")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		nc, err := net.Dial("unix", socket)
		if err == nil {
			nc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not start: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	base := rssOf(t, cmd.Process.Pid)

	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := dialRaw(t, socket)
			r.nc.SetDeadline(time.Now().Add(60 * time.Second))
			r.hello()
			var burst []byte
			for i := 1; i <= perConn; i++ {
				f, _ := r.enc.Request(&protocol.Request{ID: uint64(i), Op: protocol.OpIncr, Key: "k", Delta: 1})
				burst = append(burst, f...)
				r.ops[uint64(i)] = protocol.OpIncr
			}
			r.write(burst)
			for range perConn {
				resp, ok := r.read()
				if !ok || resp.Err != nil {
					t.Errorf("incr: %+v (open %v)", resp, ok)
					return
				}
			}
		}()
	}
	wg.Wait()
	peak := hwmOf(t, cmd.Process.Pid)
	// README, Memory: twice the budget, plus the connections' buffers
	// (64 × 192 KiB) and what the process held idle.
	bound := base + 2*budget + conns*192<<10
	t.Logf("RSS %d MiB idle, peak %d MiB with %d requests pipelined (bound %d MiB)", base>>20, peak>>20, conns*perConn, bound>>20)
	if peak > bound {
		t.Fatalf("daemon RSS peaked at %d MiB, above the bound of %d MiB", peak>>20, bound>>20)
	}
}

// hwmOf returns the peak resident set size of process pid.
func hwmOf(t *testing.T, pid int) int64 { return procStatus(t, pid, "VmHWM") }

// TestHelloWhileBudgetHeld has three connections each begin a 2 MiB frame
// and stall, holding the reserve of a request that may produce the largest
// response, which is all of this daemon's budget; a new connection's hello
// is still answered at once. Before hello every frame is answered with a
// hello result or an error, so a new connection reserves only its frame.
func TestHelloWhileBudgetHeld(t *testing.T) {
	reserve := int64(2<<20 + 2*(2<<20)) // a largest frame and two largest responses
	d := sidecartest.Start(t, sidecartest.Options{MaxInflightBytes: 3*reserve + 64<<10, WriteTimeout: time.Minute})
	for range 3 {
		c := dialRaw(t, d.Socket)
		c.hello()
		c.write([]byte{0, 0x20, 0, 0, 0x81}) // a 2 MiB frame that never arrives
	}
	time.Sleep(100 * time.Millisecond) // the daemon reads the headers
	c := dialRaw(t, d.Socket)
	c.nc.SetDeadline(time.Now().Add(2 * time.Second))
	c.send(&protocol.Request{ID: 0, Op: protocol.OpHello, Version: protocol.Version, Client: "rawtest"})
	if resp, ok := c.read(); !ok || resp.Err != nil || resp.Hello.Project != "test" {
		t.Fatalf("hello while the budget is held by stalled frames: %+v (open %v), want it answered", resp, ok)
	}
}
