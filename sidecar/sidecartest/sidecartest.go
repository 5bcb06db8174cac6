// Package sidecartest starts a real kvsidecar daemon inside a test: a real
// Unix socket in a temporary directory and a real store (an embedded bbolt
// file unless a PostgreSQL DSN is given), so that client and integration
// tests exercise the same code paths as production.
package sidecartest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/store"
)

// Options configure a test daemon. Zero fields take the daemon's defaults,
// except where noted.
type Options struct {
	Project      string // static project of every caller; default "test" (ignored when UIDMap is set)
	UIDMap       string // path of a uid map file, instead of a static project
	DefaultQuota int64
	Limits       store.Limits
	MaxInflight  int
	MaxConns     int
	Postgres     string // PostgreSQL DSN; default: the embedded store
	DataDir      string // default: a new temporary directory
	Socket       string // default: kv.sock in a new temporary directory
	Metrics      bool   // serve /metrics on a free loopback port
	Logger       *zap.Logger
}

// Daemon is a daemon started by Start.
type Daemon struct {
	*sidecar.Daemon
	Socket  string
	DataDir string

	t      testing.TB
	opts   Options
	cancel context.CancelFunc
	reload chan struct{}
}

// Start starts a daemon and stops it when the test ends.
func Start(t testing.TB, opts Options) *Daemon {
	t.Helper()
	if opts.Project == "" && opts.UIDMap == "" {
		opts.Project = "test"
	}
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(t.TempDir(), "data")
	}
	if opts.Socket == "" {
		// Socket paths are limited to 108 bytes; test temp dirs can be long.
		dir, err := os.MkdirTemp("", "kvs")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		opts.Socket = filepath.Join(dir, "kv.sock")
	}
	if opts.Logger == nil {
		opts.Logger = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	}
	d := &Daemon{Socket: opts.Socket, DataDir: opts.DataDir, t: t, opts: opts, reload: make(chan struct{})}
	d.start()
	t.Cleanup(d.Stop)
	return d
}

func (d *Daemon) start() {
	d.t.Helper()
	cfg := sidecar.Config{
		Socket:          d.opts.Socket,
		DataDir:         d.opts.DataDir,
		Postgres:        d.opts.Postgres,
		Project:         d.opts.Project,
		UIDMap:          d.opts.UIDMap,
		DefaultQuota:    d.opts.DefaultQuota,
		Limits:          d.opts.Limits,
		MaxInflight:     d.opts.MaxInflight,
		MaxConns:        d.opts.MaxConns,
		ShutdownTimeout: 10 * time.Second,
		LogLevel:        "warn",
	}
	if d.opts.Metrics {
		cfg.MetricsAddr = "127.0.0.1:0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	sd, err := sidecar.Start(ctx, cfg, d.opts.Logger, d.reload)
	if err != nil {
		cancel()
		d.t.Fatalf("start daemon: %v", err)
	}
	d.Daemon, d.cancel = sd, cancel
}

// Stop stops the daemon as SIGTERM would and waits until it has stopped.
// Calling it twice is harmless.
func (d *Daemon) Stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	if err := d.Wait(); err != nil {
		d.t.Errorf("daemon stopped with: %v", err)
	}
}

// Reload makes the daemon re-read its uid map, as SIGHUP does, and returns
// once the daemon has taken the request.
func (d *Daemon) Reload() {
	select {
	case d.reload <- struct{}{}:
	case <-d.Done():
		d.t.Fatal("reload: the daemon has stopped")
	}
}

// Restart stops the daemon and starts it again on the same socket and data.
func (d *Daemon) Restart() {
	d.t.Helper()
	d.Stop()
	d.start()
}
