package sidecar_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/sidecar/identity"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
	"github.com/kvsidecar/kvsidecar/store/bolt"
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
	st, err := bolt.Open(context.Background(), bolt.Config{Path: filepath.Join(dir, "kv.db")})
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
