package sidecar_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/sidecar/identity"
	"github.com/kvsidecar/kvsidecar/store/pebble"
)

// stallFirst is a resolver whose first call waits until released (as the
// k8s resolver waits for a pod its watch has not seen yet) and whose later
// calls answer at once.
type stallFirst struct {
	calls   atomic.Int32
	release chan struct{}
}

// MayWait makes the server resolve its callers off the accept loop.
func (r *stallFirst) MayWait() bool { return true }

func (r *stallFirst) Resolve(ctx context.Context, _ identity.Peer) (string, error) {
	if r.calls.Add(1) == 1 {
		select {
		case <-r.release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return "app", nil
}

// TestSlowResolveDelaysOnlyItsCaller checks that a caller whose identity
// takes long to resolve does not hold up the accept of the next caller:
// a resolver that may wait (identity.Waiter) is called off the accept loop.
func TestSlowResolveDelaysOnlyItsCaller(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	st, err := pebble.Open(ctx, pebble.Config{Path: filepath.Join(dir, "kv")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	res := &stallFirst{release: make(chan struct{})}
	cfg := sidecar.Config{Socket: filepath.Join(dir, "kv.sock")}.WithDefaults()
	srv := sidecar.NewServer(cfg, st, res, sidecar.NewMetrics(), zap.NewNop())
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	serveCtx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	slow := dialRaw(t, cfg.Socket)
	slow.send(&protocol.Request{ID: 0, Op: protocol.OpHello, Version: protocol.Version})
	for res.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}

	start := time.Now()
	fast := dialRaw(t, cfg.Socket)
	if h := fast.hello(); h.Project != "app" {
		t.Fatalf("project %q, want app", h.Project)
	}
	if r := fast.call(&protocol.Request{ID: 1, Op: protocol.OpPing}); r.Err != nil {
		t.Fatalf("ping: %v", r.Err)
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("the second caller waited %v behind the first one's resolution", waited)
	}

	close(res.release)
	if r, ok := slow.read(); !ok || r.Err != nil || r.Hello.Project != "app" {
		t.Fatalf("the slow caller's hello after its resolution: %+v, %v", r, ok)
	}
}
