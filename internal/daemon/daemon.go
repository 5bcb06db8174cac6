// Package daemon puts kvsidecar together: it turns flags and environment
// variables into a Config (settings.go), opens the parts the Config names —
// the identity resolver, the store, the socket server, the HTTP listeners
// (New) — and runs them as the actors of one run group with one ordered
// stop (Run). cmd/kvsidecar is New and Run behind signal handling;
// sidecar/sidecartest starts the same daemon inside tests.
//
// Read top-down: Config and LoadConfig, then New, then Run.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/oklog/run"
	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/admin"
	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/sidecar/identity"
	"github.com/kvsidecar/kvsidecar/store"
)

// reloadTimeout bounds one reload of the identity's mapping on SIGHUP. A
// uid map is a local file read in microseconds; a resolver that must ask
// another service gets this long, and keeps its previous mapping if it
// cannot finish.
const reloadTimeout = 30 * time.Second

// Daemon is a kvsidecar whose parts are open: New has created its socket
// and listeners, and Run serves until the daemon stops.
type Daemon struct {
	cfg      Config
	log      *zap.Logger
	metrics  *sidecar.Metrics
	resolver identity.Resolver
	store    store.Store
	server   *sidecar.Server // nil with --socket ''
	https    []*httpServer

	// The admin surface, with --admin-addr; nil without.
	tokens *admin.Tokens
	admin  *admin.Server
	usage  *admin.UsageMetrics
}

// New opens the daemon's parts in dependency order: the identity resolver,
// the store, the socket (from here on callers can connect; the kernel holds
// them until Run accepts), and the HTTP listeners. If one fails, those
// already open are closed again. Run must be called to serve and to
// release them.
func New(ctx context.Context, cfg Config, log *zap.Logger) (_ *Daemon, err error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, metrics: sidecar.NewMetrics()}
	defer func() {
		if err != nil {
			err = errors.Join(err, d.release())
		}
	}()

	identityName := "none: no function socket"
	if !cfg.NoSocket {
		resolver, name, err := newResolver(ctx, cfg, log)
		if err != nil {
			return nil, err
		}
		d.resolver, identityName = resolver, name
	}
	if cfg.AdminAddr != "" {
		if d.tokens, err = admin.LoadTokens(cfg.AdminTokens); err != nil {
			return nil, fmt.Errorf("--admin-tokens: %w", err)
		}
	}
	st, storeName, err := openStore(ctx, cfg, d.metrics, log)
	if err != nil {
		return nil, err
	}
	d.store = st
	quota, err := defaultQuotaInForce(ctx, st, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.AdminAddr != "" {
		if d.admin, err = admin.New(admin.Config{Tokens: d.tokens}, st, log.Named("admin")); err != nil {
			return nil, err
		}
		if d.usage, err = admin.NewUsageMetrics(st, d.metrics.Registry, cfg.AdminUsageInterval, log.Named("admin")); err != nil {
			return nil, err
		}
	}
	if !cfg.NoSocket {
		d.server = sidecar.NewServer(cfg.Server, st, d.resolver, d.metrics, log)
		if err := d.server.Listen(); err != nil {
			return nil, err
		}
	}
	if err := d.listenHTTP(); err != nil {
		return nil, err
	}
	socket := cfg.Server.Socket
	if cfg.NoSocket {
		socket = "none"
	}
	log.Info("kvsidecar serving",
		zap.String("socket", socket),
		zap.String("store", storeName),
		zap.String("identity", identityName),
		zap.String("metrics_addr", d.MetricsAddr()),
		zap.String("admin_addr", d.AdminAddr()),
		zap.Int64("default_quota", quota))
	return d, nil
}

// release closes what New opened, for a New that fails half-way.
func (d *Daemon) release() error {
	var errs []error
	for _, h := range d.https {
		h.ln.Close()
	}
	if d.server != nil {
		errs = append(errs, d.server.RemoveSocket())
	}
	if d.store != nil {
		errs = append(errs, closeStore(d.store))
	}
	errs = append(errs, closeResolver(d.resolver))
	return errors.Join(errs...)
}

// Run serves until ctx is done (the command cancels it on SIGTERM or
// SIGINT) or a part of the daemon fails, whichever comes first, and then
// stops in this order: stop accepting, drain the requests read (up to
// --shutdown-timeout), close the store (committing queued writes), remove
// the socket, stop the HTTP listeners, close the identity resolver. Each
// signal on hup (SIGHUP in the command; nil for none) reloads the
// identity's mapping.
//
// Run returns nil after a stop that ctx asked for and that went well;
// otherwise the errors of every part that failed, the first one first.
// Call it once.
func (d *Daemon) Run(ctx context.Context, hup <-chan os.Signal) error {
	var (
		g    run.Group
		mu   sync.Mutex
		errs []error
	)
	// actor adds a part to the group; when the first part ends, every
	// interrupt runs, in the order the parts are added below. A new
	// long-running part is one more actor, placed by when it must stop.
	actor := func(execute func() error, interrupt func(error)) {
		g.Add(func() error {
			err := execute()
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			return err
		}, interrupt)
	}

	// The stop request: ctx is done. Its interrupt, the first, logs why
	// the daemon stops.
	stopped := make(chan struct{})
	actor(func() error {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		return nil
	}, func(err error) {
		if err != nil {
			d.log.Error("kvsidecar stopping: a part of it failed", zap.Error(err))
		} else {
			d.log.Info("kvsidecar stopping", zap.String("reason", stopReason(ctx)))
		}
		close(stopped)
	})

	// Reload on SIGHUP.
	quitReload := make(chan struct{})
	actor(func() error {
		for {
			select {
			case <-hup:
				d.reloadOnSignal()
			case <-quitReload:
				return nil
			}
		}
	}, func(error) { close(quitReload) })

	// The usage gauges' refresher (an admin instance's). Its interrupt
	// waits for it to return, and interrupts run in order, so it is done
	// before the socket server's actor closes the store.
	if d.usage != nil {
		usageCtx, stopUsage := context.WithCancel(context.Background())
		defer stopUsage()
		usageDone := make(chan struct{})
		actor(func() error {
			defer close(usageDone)
			d.usage.Run(usageCtx)
			return nil
		}, func(error) {
			stopUsage()
			<-usageDone
		})
	}

	// The socket server, and after it the admin API, the store and the
	// socket: they are released in the same actor so that their order
	// cannot change. Without a socket (--socket '') the actor only waits
	// for the stop.
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	served := make(chan struct{})
	actor(func() error {
		defer close(served)
		var err error
		if d.server != nil {
			if err = d.server.Serve(serveCtx); err != nil {
				err = fmt.Errorf("socket server: %w", err)
			}
		} else {
			<-serveCtx.Done()
		}
		// Admin requests in flight finish before the store closes.
		d.stopHTTP("admin")
		err = errors.Join(err, closeStore(d.store))
		if d.server != nil {
			err = errors.Join(err, d.server.RemoveSocket())
		}
		return err
	}, func(error) { stopServing() })

	// The HTTP listeners stop last, once the socket server is done, so
	// that /readyz answers "stopping" while requests drain.
	for _, h := range d.https {
		actor(func() error {
			if err := h.srv.Serve(h.ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s HTTP server: %w", h.name, err)
			}
			return nil
		}, func(error) {
			<-served
			h.shutdown()
		})
	}

	g.Run() // its error is errs[0]
	if err := closeResolver(d.resolver); err != nil {
		errs = append(errs, err)
	}
	d.log.Info("kvsidecar stopped")
	return errors.Join(errs...)
}

// stopReason says why ctx ended: with the command's signal.NotifyContext,
// the signal received.
func stopReason(ctx context.Context) string {
	if ctx.Err() == nil {
		return "a part of the daemon ended"
	}
	return context.Cause(ctx).Error()
}

// Reload re-reads the identity's mapping, as SIGHUP does, then revokes the
// connections whose caller no longer maps to the project they were
// admitted for (sidecar.Server.Revoke), and returns how many. It fails when
// the identity source has nothing to reload, or when re-reading fails; the
// previous mapping then stays in force and nothing is revoked.
func (d *Daemon) Reload(ctx context.Context) (revoked int, err error) {
	r, ok := d.resolver.(identity.Reloader)
	if !ok {
		return 0, errors.New("the identity source has nothing to reload")
	}
	if err := r.Reload(ctx); err != nil {
		return 0, err
	}
	if d.server == nil {
		return 0, nil // no socket: no connection to revoke
	}
	return d.server.Revoke(ctx), nil
}

// reloadOnSignal reloads on SIGHUP and logs the outcome: the admin tokens
// (with --admin-addr) and the identity's mapping.
func (d *Daemon) reloadOnSignal() {
	if d.tokens != nil {
		if err := d.tokens.Reload(); err != nil {
			d.log.Error("admin tokens not reloaded; the previous tokens stay in force", zap.Error(err))
		} else {
			d.log.Info("admin tokens reloaded", zap.Int("tokens", d.tokens.Len()))
		}
	}
	if d.resolver == nil {
		return // no socket, no identity
	}
	if _, ok := d.resolver.(identity.Reloader); !ok {
		d.log.Info("SIGHUP: the identity source has nothing to reload")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), reloadTimeout)
	defer cancel()
	revoked, err := d.Reload(ctx)
	if err != nil {
		d.log.Error("identity not reloaded; the previous mapping stays in force", zap.Error(err))
		return
	}
	d.log.Info("identity reloaded", zap.Int("connections_revoked", revoked))
}

func closeStore(st store.Store) error {
	if err := st.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// closeResolver closes the resolver if it holds something to close.
func closeResolver(r identity.Resolver) error {
	c, ok := r.(io.Closer)
	if !ok {
		return nil
	}
	if err := c.Close(); err != nil {
		return fmt.Errorf("close identity resolver: %w", err)
	}
	return nil
}

// Socket returns the path of the daemon's socket.
func (d *Daemon) Socket() string { return d.cfg.Server.Socket }

// MetricsAddr returns the address the metrics listener listens on, or ""
// when it is off.
func (d *Daemon) MetricsAddr() string { return d.addrOf("metrics") }

// AdminAddr returns the address the admin API listens on, or "" when it is
// off.
func (d *Daemon) AdminAddr() string { return d.addrOf("admin") }
