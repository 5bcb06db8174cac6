package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/kvsidecar/kvsidecar/sidecar/identity"
	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/bolt"
	"github.com/kvsidecar/kvsidecar/store/postgres"
)

// Daemon is a running kvsidecar: store, socket server, and metrics server.
type Daemon struct {
	cfg     Config
	log     *zap.Logger
	store   store.Store
	server  *Server
	metrics *Metrics
	ident   identity.Resolver

	httpLn  net.Listener
	httpSrv *http.Server

	done chan struct{}
	err  error
	wg   sync.WaitGroup
}

// Start opens the store, creates the socket and starts serving; the daemon
// runs until ctx is cancelled, then stops in order: stop accepting, finish
// requests in flight, close the store (flushing queued writes), remove the
// socket, stop the metrics server. reload, if not nil, re-reads the uid map
// each time it receives (the command sends on SIGHUP).
func Start(ctx context.Context, cfg Config, log *zap.Logger, reload <-chan struct{}) (*Daemon, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, metrics: NewMetrics(), done: make(chan struct{})}
	var err error
	if d.ident, err = resolverFor(cfg); err != nil {
		return nil, err
	}
	if d.store, err = openStore(ctx, cfg, d.metrics, log); err != nil {
		return nil, err
	}
	d.server = NewServer(cfg, d.store, d.ident, d.metrics, log)
	if err := d.server.Listen(); err != nil {
		d.store.Close()
		return nil, err
	}
	if cfg.MetricsAddr != "" {
		if d.httpLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			d.server.ln.Close()
			d.store.Close()
			return nil, fmt.Errorf("listen for metrics on %s: %w", cfg.MetricsAddr, err)
		}
		d.httpSrv = &http.Server{Handler: d.httpHandler(), ReadHeaderTimeout: 10 * time.Second}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := d.httpSrv.Serve(d.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server failed", zap.Error(err))
			}
		}()
	}
	stopReload := make(chan struct{})
	if m, ok := d.ident.(*identity.UIDMap); ok && reload != nil {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			for {
				select {
				case <-reload:
					if err := m.Reload(); err != nil {
						log.Error("uid map not reloaded; the previous map stays in force", zap.Error(err))
					} else {
						log.Info("uid map reloaded", zap.String("uid_map", cfg.UIDMap), zap.Int("rules", m.Len()))
					}
				case <-stopReload:
					return
				}
			}
		}()
	}
	log.Info("kvsidecar serving",
		zap.String("socket", cfg.Socket),
		zap.String("store", d.storeName()),
		zap.String("identity", identityName(cfg)),
		zap.String("metrics_addr", d.MetricsAddr()),
		quotaField(cfg.DefaultQuota))
	go func() {
		defer close(d.done)
		err := d.server.Serve(ctx)
		close(stopReload)
		if cerr := d.store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close store: %w", cerr))
		}
		if d.httpSrv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			d.httpSrv.Shutdown(sctx)
			cancel()
		}
		d.wg.Wait()
		d.err = err
		log.Info("kvsidecar stopped")
	}()
	return d, nil
}

// Wait blocks until the daemon has stopped and returns why it stopped
// (nil after an orderly stop).
func (d *Daemon) Wait() error {
	<-d.done
	return d.err
}

// Done is closed when the daemon has stopped.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Socket returns the path of the daemon's socket.
func (d *Daemon) Socket() string { return d.cfg.Socket }

// MetricsAddr returns the address the metrics server listens on, or "".
func (d *Daemon) MetricsAddr() string {
	if d.httpLn == nil {
		return ""
	}
	return d.httpLn.Addr().String()
}

// Store returns the daemon's store (for tests and admin tools in-process).
func (d *Daemon) Store() store.Store { return d.store }

// Metrics returns the daemon's metrics.
func (d *Daemon) Metrics() *Metrics { return d.metrics }

// Run starts the daemon and waits until it stops.
func Run(ctx context.Context, cfg Config, log *zap.Logger, reload <-chan struct{}) error {
	d, err := Start(ctx, cfg, log, reload)
	if err != nil {
		return err
	}
	return d.Wait()
}

func (d *Daemon) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !d.server.Ready() {
			http.Error(w, "not ready: stopping", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := d.store.Ping(ctx); err != nil {
			http.Error(w, "not ready: store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if d.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func resolverFor(cfg Config) (identity.Resolver, error) {
	if cfg.UIDMap != "" {
		return identity.LoadUIDMap(cfg.UIDMap)
	}
	return identity.Static{Project: cfg.Project}, nil
}

func identityName(cfg Config) string {
	if cfg.UIDMap != "" {
		return "uid-map " + cfg.UIDMap
	}
	return "static project " + cfg.Project
}

func (d *Daemon) storeName() string {
	if d.cfg.Postgres != "" {
		return "postgres"
	}
	return "embedded " + filepath.Join(d.cfg.DataDir, boltFile)
}

// boltFile is the name of the embedded store's file in the data directory.
const boltFile = "kv.db"

func openStore(ctx context.Context, cfg Config, m *Metrics, log *zap.Logger) (store.Store, error) {
	if cfg.Postgres != "" {
		return openPostgres(ctx, cfg, m, log)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	st, err := bolt.Open(ctx, bolt.Config{
		Path:         filepath.Join(cfg.DataDir, boltFile),
		Limits:       cfg.Limits,
		DefaultQuota: cfg.DefaultQuota,
		ObserveBatch: m.ObserveBatch,
		Logger:       log.Named("store"),
	})
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	return st, nil
}

func openPostgres(ctx context.Context, cfg Config, m *Metrics, log *zap.Logger) (store.Store, error) {
	st, err := postgres.Open(ctx, postgres.Config{
		DSN:              cfg.Postgres,
		Limits:           cfg.Limits,
		DefaultQuota:     cfg.DefaultQuota,
		MaxConns:         int32(cfg.PostgresMaxConns),
		StatementTimeout: cfg.PostgresStatementTimeout,
		ObserveBatch:     m.ObserveBatch,
		Logger:           log.Named("store"),
	})
	if err != nil {
		// The DSN may hold a password: name the backend, not the DSN.
		return nil, fmt.Errorf("open PostgreSQL store: %w", err)
	}
	return st, nil
}

// NewLogger builds the daemon's logger: JSON lines or console text at the
// given level.
func NewLogger(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	var zc zap.Config
	if format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.DisableStacktrace = true
	} else {
		zc = zap.NewProductionConfig()
		zc.EncoderConfig.TimeKey = "time"
		zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.OutputPaths = []string{"stderr"}
	zc.ErrorOutputPaths = []string{"stderr"}
	return zc.Build()
}

func quotaField(q int64) zap.Field {
	if q == 0 {
		return zap.String("default_quota", "as stored")
	}
	return zap.Int64("default_quota", q)
}
