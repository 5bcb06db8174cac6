package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Timeouts of the HTTP listeners.
const (
	// httpReadHeaderTimeout bounds reading a request's headers, so that a
	// client that connects and sends nothing cannot hold a connection; a
	// scraper or a probe sends its headers at once.
	httpReadHeaderTimeout = 10 * time.Second
	// httpShutdownTimeout bounds how long stopping an HTTP listener waits
	// for requests in progress (a scrape, a pprof profile) before it cuts
	// their connections. It is the last step of a stop, after the store is
	// closed, so it only delays the exit.
	httpShutdownTimeout = 5 * time.Second
	// readyzStoreTimeout bounds /readyz's ping of the store: a store that
	// does not answer within it is reported not ready (503) rather than
	// leaving the probe to time out.
	readyzStoreTimeout = 2 * time.Second
)

// An httpServer is one HTTP listener of the daemon; Run runs each as an
// actor and stops it last.
type httpServer struct {
	name string // what it serves, for logs and errors
	ln   net.Listener
	srv  *http.Server
}

// listenHTTP opens the daemon's HTTP listeners. Each surface with an
// address of its own is one entry of the list below; a listener whose
// address is empty is off.
func (d *Daemon) listenHTTP() error {
	for _, h := range []struct {
		name, addr string
		handler    func() http.Handler
	}{
		{"metrics", d.cfg.MetricsAddr, d.metricsHandler},
		{"admin", d.cfg.AdminAddr, func() http.Handler { return d.admin }},
	} {
		if h.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", h.addr)
		if err != nil {
			return fmt.Errorf("listen for %s on %s: %w", h.name, h.addr, err)
		}
		d.https = append(d.https, &httpServer{
			name: h.name,
			ln:   ln,
			srv:  &http.Server{Handler: h.handler(), ReadHeaderTimeout: httpReadHeaderTimeout},
		})
	}
	return nil
}

// metricsHandler serves /metrics, /healthz, /readyz and, with --pprof,
// /debug/pprof/ (every profile, but not the command line).
func (d *Daemon) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if d.server != nil && !d.server.Ready() {
			http.Error(w, "not ready: stopping", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readyzStoreTimeout)
		defer cancel()
		if err := d.store.Ping(ctx); err != nil {
			http.Error(w, "not ready: store: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if d.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		// Not pprof.Cmdline: the command line can hold the PostgreSQL DSN
		// and its password, and the metrics address is often reachable
		// from the whole cluster. The profiles do not need it.
		mux.HandleFunc("/debug/pprof/cmdline", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "not served: the command line can hold secrets", http.StatusNotFound)
		})
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// shutdown stops the listener, waiting up to httpShutdownTimeout for the
// requests in progress before it cuts their connections. A second call
// returns at once.
func (h *httpServer) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		h.srv.Close() // cut what is still running
	}
}

// stopHTTP shuts the named listener down, if it is on.
func (d *Daemon) stopHTTP(name string) {
	for _, h := range d.https {
		if h.name == name {
			h.shutdown()
		}
	}
}

// addrOf returns the address of the named HTTP listener, or "" when it is
// off.
func (d *Daemon) addrOf(name string) string {
	for _, h := range d.https {
		if h.name == name {
			return h.ln.Addr().String()
		}
	}
	return ""
}
