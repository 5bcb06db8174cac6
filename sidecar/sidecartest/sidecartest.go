// Package sidecartest starts a real kvsidecar daemon inside a test: a real
// Unix socket in a temporary directory and a real store (the embedded Pebble
// store unless a PostgreSQL DSN is given), so that client and integration
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

	"github.com/kvsidecar/kvsidecar/internal/daemon"
	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/store"
)

// shutdownTimeout bounds a test daemon's stop: long enough for any request
// of a test to finish, short enough that a stuck one fails the test soon.
const shutdownTimeout = 10 * time.Second

// Options configure a test daemon. Zero fields take the daemon's defaults,
// except where noted.
type Options struct {
	Project      string // static project of every caller; default "test" (ignored when UIDMap is set)
	UIDMap       string // path of a uid map file, instead of a static project
	DefaultQuota int64
	Limits       store.Limits
	MaxInflight  int
	MaxConns     int
	// Tenancy bounds (see sidecar.Config); zero takes the daemon's default.
	MaxConnsPerProject   int
	MaxInflightBytes     int64
	MaxConnInflightBytes int64
	MaxResponseBytes     int
	ProjectInflightShare float64
	WriteTimeout         time.Duration
	HelloTimeout         time.Duration
	Postgres             string      // PostgreSQL DSN; default: the embedded store
	DataDir              string      // default: a new temporary directory
	Socket               string      // default: kv.sock in a new temporary directory
	SocketMode           os.FileMode // default 0666
	Metrics              bool        // serve /metrics on a free loopback port
	Logger               *zap.Logger
}

// Daemon is a daemon started by Start.
type Daemon struct {
	*daemon.Daemon
	Socket  string
	DataDir string

	t      testing.TB
	opts   Options
	cancel context.CancelFunc
	done   chan struct{} // closed when Run has returned
	err    error         // what Run returned, once done is closed
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
	d := &Daemon{Socket: opts.Socket, DataDir: opts.DataDir, t: t, opts: opts}
	d.start()
	t.Cleanup(d.Stop)
	return d
}

func (d *Daemon) start() {
	d.t.Helper()
	cfg := daemon.Config{
		Server: sidecar.Config{
			Socket:          d.opts.Socket,
			SocketMode:      d.opts.SocketMode,
			Limits:          d.opts.Limits,
			MaxInflight:     d.opts.MaxInflight,
			MaxConns:        d.opts.MaxConns,
			ShutdownTimeout: shutdownTimeout,

			MaxConnsPerProject:   d.opts.MaxConnsPerProject,
			MaxInflightBytes:     d.opts.MaxInflightBytes,
			MaxConnInflightBytes: d.opts.MaxConnInflightBytes,
			MaxResponseBytes:     d.opts.MaxResponseBytes,
			ProjectInflightShare: d.opts.ProjectInflightShare,
			WriteTimeout:         d.opts.WriteTimeout,
			HelloTimeout:         d.opts.HelloTimeout,
		},
		DataDir:      d.opts.DataDir,
		Postgres:     d.opts.Postgres,
		Project:      d.opts.Project,
		UIDMap:       d.opts.UIDMap,
		DefaultQuota: d.opts.DefaultQuota,
		LogLevel:     "warn",
	}
	if d.opts.UIDMap != "" {
		cfg.Project = ""
	}
	if d.opts.Metrics {
		cfg.MetricsAddr = "127.0.0.1:0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	dd, err := daemon.New(ctx, cfg, d.opts.Logger)
	if err != nil {
		cancel()
		d.t.Fatalf("start daemon: %v", err)
	}
	d.Daemon, d.cancel, d.done = dd, cancel, make(chan struct{})
	go func() {
		defer close(d.done)
		d.err = dd.Run(ctx, nil)
	}()
}

// Stop stops the daemon as SIGTERM would and waits until it has stopped.
// Calling it twice is harmless.
func (d *Daemon) Stop() {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	<-d.done
	if d.err != nil {
		d.t.Errorf("daemon stopped with: %v", d.err)
	}
}

// Reload makes the daemon re-read its uid map, as SIGHUP does, and fails
// the test if it cannot.
func (d *Daemon) Reload() {
	d.t.Helper()
	if _, err := d.Daemon.Reload(context.Background()); err != nil {
		d.t.Fatalf("reload: %v", err)
	}
}

// Restart stops the daemon and starts it again on the same socket and data.
func (d *Daemon) Restart() {
	d.t.Helper()
	d.Stop()
	d.start()
}
