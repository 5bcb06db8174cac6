package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/sidecar/identity"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// testConfig is a daemon on a fresh embedded store and a socket in a short
// temporary directory (socket paths are limited to 108 bytes).
func testConfig(t *testing.T) Config {
	t.Helper()
	dir, err := os.MkdirTemp("", "kvd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return Config{
		Server:  sidecar.Config{Socket: filepath.Join(dir, "kv.sock"), ShutdownTimeout: 10 * time.Second},
		DataDir: filepath.Join(dir, "data"),
		Project: "p",
	}
}

// running is a daemon whose Run is in a goroutine.
type running struct {
	*Daemon
	logs *observer.ObservedLogs
	stop context.CancelCauseFunc
	done chan error // receives what Run returned
}

func start(t *testing.T, cfg Config) *running {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	d, err := New(t.Context(), cfg, zap.New(core))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, stop := context.WithCancelCause(context.Background())
	r := &running{Daemon: d, logs: logs, stop: stop, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx, nil) }()
	t.Cleanup(func() {
		stop(errors.New("test over"))
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Error("the daemon did not stop")
		}
	})
	return r
}

func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not stop within 20s")
		return nil
	}
}

// TestStopRunsInOrder stops a daemon while a prober polls /readyz: the
// stop is logged with its reason, the metrics listener stays up until the
// socket is gone, and the store is released (a second daemon opens it).
func TestStopRunsInOrder(t *testing.T) {
	cfg := testConfig(t)
	cfg.MetricsAddr = "127.0.0.1:0"
	d := start(t, cfg)
	ctx := t.Context()
	c, err := client.Dial(ctx, d.Socket())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "k", "kept", 0); err != nil {
		t.Fatal(err)
	}
	c.Close()

	readyz := "http://" + d.MetricsAddr() + "/readyz"
	hc := &http.Client{Timeout: 5 * time.Second}
	if resp, err := hc.Get(readyz); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz before the stop: %v %v", resp, err)
	}
	probed := make(chan error, 1)
	go func() {
		for {
			resp, err := hc.Get(readyz)
			if err != nil {
				// The listener is gone: the socket must have gone first.
				if _, serr := os.Lstat(cfg.Server.Socket); !errors.Is(serr, os.ErrNotExist) {
					probed <- fmt.Errorf("metrics listener stopped while the socket still exists (%v)", serr)
					return
				}
				probed <- nil
				return
			}
			resp.Body.Close()
		}
	}()
	d.stop(errors.New("told to by the test"))
	if err := d.wait(t); err != nil {
		t.Fatalf("Run after an orderly stop: %v", err)
	}
	if err := <-probed; err != nil {
		t.Fatal(err)
	}
	stopping := d.logs.FilterMessage("kvsidecar stopping").All()
	if len(stopping) != 1 || stopping[0].ContextMap()["reason"] != "told to by the test" {
		t.Fatalf("stop log %+v; want one entry with the reason", stopping)
	}
	if d.logs.FilterMessage("kvsidecar stopped").Len() != 1 {
		t.Fatal(`no "kvsidecar stopped" log`)
	}

	again := start(t, cfg) // the store file was closed, so it opens at once
	c, err = client.Dial(ctx, again.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var v string
	if found, err := c.Get(ctx, "k", &v); err != nil || !found || v != "kept" {
		t.Fatalf("after restart: %q %v %v", v, found, err)
	}
}

// TestFailingPartStopsTheDaemon kills the metrics listener under the
// daemon: the daemon does not run on blind but stops — socket removed,
// store closed — and Run says which part failed.
func TestFailingPartStopsTheDaemon(t *testing.T) {
	cfg := testConfig(t)
	cfg.MetricsAddr = "127.0.0.1:0"
	d := start(t, cfg)
	d.https[0].ln.Close()
	err := d.wait(t)
	if err == nil || !strings.Contains(err.Error(), "metrics HTTP server") {
		t.Fatalf("Run = %v; want the metrics server's failure", err)
	}
	if _, err := os.Lstat(cfg.Server.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
	failed := d.logs.FilterMessage("kvsidecar stopping: a part of it failed").All()
	if len(failed) != 1 || !strings.Contains(fmt.Sprint(failed[0].ContextMap()["error"]), "metrics HTTP server") {
		t.Fatalf("stop log %+v; want the failure logged once", failed)
	}
	start(t, cfg) // the store was closed: it opens again
}

// TestNewCleansUpWhenAPartCannotOpen makes the metrics address busy: New
// fails naming it, and leaves no socket file and no locked store behind.
func TestNewCleansUpWhenAPartCannotOpen(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t)
	cfg.MetricsAddr = busy.Addr().String()
	if _, err := New(t.Context(), cfg, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "listen for metrics on "+cfg.MetricsAddr) {
		t.Fatalf("New = %v; want it to name the busy metrics address", err)
	}
	if _, err := os.Lstat(cfg.Server.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
	cfg.MetricsAddr = ""
	start(t, cfg)
}

// TestK8sIdentity starts the daemon with --identity k8s against an HTTP
// server that answers the API server's pod list and watch (no API server
// can be had here): the daemon lists this node's pods only, and refuses a
// caller that runs in no pod of this node — the test process — saying why.
// Resolving callers that are in pods is tested in sidecar/identity.
func TestK8sIdentity(t *testing.T) {
	var mu sync.Mutex
	var selectors []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/pods" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		selectors = append(selectors, r.URL.Query().Get("fieldSelector"))
		mu.Unlock()
		q := r.URL.Query()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case q.Get("watch") == "true" && q.Get("sendInitialEvents") == "true":
			// Streaming lists are optional: refusing one makes the
			// client fall back to list and watch.
			http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","code":400,"reason":"BadRequest"}`, http.StatusBadRequest)
		case q.Get("watch") == "true":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done() // no pod ever changes
		default:
			fmt.Fprint(w, `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[`+
				`{"metadata":{"name":"shop-1","namespace":"team-a","uid":"2c48913c-b29f-11e7-9350-020968147796","resourceVersion":"7","labels":{"kvsidecar.io/project":"shop"}},"spec":{"nodeName":"node-a"}}]}`)
		}
	}))
	t.Cleanup(api.Close) // after the daemon stops (cleanups run last first), ending its watch
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "`+api.URL+`"}}]
users: [{name: test, user: {}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
`), 0o600); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t)
	cfg.Project, cfg.Identity = "", IdentityK8s
	cfg.K8sNodeName, cfg.Kubeconfig = "node-a", kubeconfig
	cfg.K8sProjectFrom, cfg.K8sProjectLabel = identity.ProjectFromLabel, identity.DefaultK8sProjectLabel
	r := start(t, cfg)
	if got := r.logs.FilterMessage("kvsidecar serving").All(); len(got) != 1 || got[0].ContextMap()["identity"] != "k8s pods of node node-a, project from their label kvsidecar.io/project" {
		t.Errorf("start-up line: %v", got)
	}
	mu.Lock()
	for _, s := range selectors {
		if s != "spec.nodeName=node-a" {
			t.Errorf("pods requested with field selector %q, want spec.nodeName=node-a", s)
		}
	}
	mu.Unlock()

	_, err := client.Dial(t.Context(), cfg.Server.Socket)
	if !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("Dial from a process in no pod of node-a: %v; want forbidden", err)
	}
	// Here the test runs in no pod; where it runs in one, that pod is not
	// node-a's shop-1.
	if !strings.Contains(err.Error(), "runs in no Kubernetes pod") && !strings.Contains(err.Error(), "is not a pod of node node-a") {
		t.Errorf("the refusal does not say why: %v", err)
	}
}

// TestStartLogShowsTheDefaultQuotaInForce starts a daemon that stores a
// default quota, then one that gives none: its start-up line names the
// stored quota, not "as stored". On both backends.
func TestStartLogShowsTheDefaultQuotaInForce(t *testing.T) {
	for _, backend := range []string{"embedded", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			cfg := testConfig(t)
			if backend == "postgres" {
				cfg.Postgres = pgtest.Database(t)
			}
			cfg.DefaultQuota = 5000
			first := start(t, cfg)
			first.stop(errors.New("next"))
			first.wait(t)
			if got := first.logs.FilterMessage("kvsidecar serving").All()[0].ContextMap()["default_quota"]; got != int64(5000) {
				t.Fatalf("first daemon logs default_quota %v", got)
			}
			cfg.DefaultQuota = 0
			second := start(t, cfg)
			if got := second.logs.FilterMessage("kvsidecar serving").All()[0].ContextMap()["default_quota"]; got != int64(5000) {
				t.Fatalf("second daemon logs default_quota %v (%T), want the stored 5000", got, got)
			}
		})
	}
}

// TestReload re-reads a uid map on a signal, as SIGHUP does in the command.
func TestReload(t *testing.T) {
	cfg := testConfig(t)
	uids := filepath.Join(t.TempDir(), "uids")
	if err := os.WriteFile(uids, []byte("100 alpha\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Project, cfg.UIDMap = "", uids
	core, logs := observer.New(zap.InfoLevel)
	d, err := New(t.Context(), cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, hup) }()
	defer func() { stop(); <-done }()

	resolve := func(uid uint32) string {
		p, _ := d.resolver.Resolve(t.Context(), identity.Peer{UID: uid})
		return p
	}
	if err := os.WriteFile(uids, []byte("100 alpha\n200 beta\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	for deadline := time.Now().Add(5 * time.Second); resolve(200) != "beta"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("uid 200 not mapped after SIGHUP")
		}
	}
	// The new map is in force before the reload logs it.
	for deadline := time.Now().Add(5 * time.Second); logs.FilterMessage("identity reloaded").Len() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(`no "identity reloaded" log`)
		}
	}
	if n := logs.FilterMessage("identity reloaded").Len(); n != 1 {
		t.Fatalf(`%d "identity reloaded" logs after one SIGHUP, want 1`, n)
	}
	if err := os.WriteFile(uids, []byte("100 alpha\n100 gamma\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Reload(t.Context()); err == nil || !strings.Contains(err.Error(), "mapped twice") {
		t.Fatalf("Reload of a bad map = %v", err)
	}
	if resolve(200) != "beta" {
		t.Fatal("a failed reload changed the mapping")
	}

	static := start(t, testConfig(t))
	if _, err := static.Reload(t.Context()); err == nil || !strings.Contains(err.Error(), "nothing to reload") {
		t.Fatalf("Reload of a static identity = %v", err)
	}
}

// TestPoolMaxConnsOfTheDSN starts on PostgreSQL with a pool_max_conns in
// the DSN too small for the backend: the backend refuses it (so it got
// there), and --postgres-max-conns overrides it.
func TestPoolMaxConnsOfTheDSN(t *testing.T) {
	dsn := pgtest.WithParam(t, pgtest.Database(t), "pool_max_conns", "3")
	cfg := testConfig(t)
	cfg.Postgres = dsn
	if _, err := New(t.Context(), cfg, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "MaxConns is 3") ||
		!strings.Contains(err.Error(), "pool_max_conns of the DSN") {
		t.Fatalf("New with pool_max_conns=3 = %v; want the backend to refuse a pool of 3, and the error to name pool_max_conns", err)
	}
	cfg.PostgresMaxConns = 4
	if _, err := New(t.Context(), cfg, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "--postgres-max-conns") {
		t.Fatalf("New with --postgres-max-conns 4 = %v; want the error to name --postgres-max-conns", err)
	}
	cfg.PostgresMaxConns = 12
	d := start(t, cfg)
	c, err := client.Dial(t.Context(), d.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Set(t.Context(), "k", 1, 0); err != nil {
		t.Fatal(err)
	}
}

func TestPostgresMaxConns(t *testing.T) {
	for _, tc := range []struct {
		dsn   string
		given int
		want  int
	}{
		{"postgres://u@h/db?pool_max_conns=17", 0, 17},
		{"postgres://u@h/db?pool_max_conns=17", 12, 12},
		{"host=h dbname=db pool_max_conns=9", 0, 9},
		{"postgres://u@h/db", 0, 0},
		{"postgres://u@h/db?pool_max_conns=many", 0, 0}, // the backend reports it
	} {
		if got, _ := postgresMaxConns(Config{Postgres: tc.dsn, PostgresMaxConns: tc.given}); got != tc.want {
			t.Errorf("%s with --postgres-max-conns %d: pool %d, want %d", tc.dsn, tc.given, got, tc.want)
		}
	}
}

// TestPprofDoesNotServeTheCommandLine: with --pprof, the profiles are
// served but not the command line, which can hold the PostgreSQL DSN and
// its password, to anyone who can reach the metrics address.
func TestPprofDoesNotServeTheCommandLine(t *testing.T) {
	const secret = "s3cret-pw"
	args := os.Args
	os.Args = append(append([]string{}, args...), "--postgres", "postgres://kv:"+secret+"@db/kv")
	t.Cleanup(func() { os.Args = args })

	cfg := testConfig(t)
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.Pprof = true
	d := start(t, cfg)
	hc := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := hc.Get("http://" + d.MetricsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		if _, err := io.Copy(&b, resp.Body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b.String()
	}
	if code, _ := get("/debug/pprof/goroutine?debug=1"); code != http.StatusOK {
		t.Fatalf("goroutine profile: status %d, want 200", code)
	}
	code, body := get("/debug/pprof/cmdline")
	if code != http.StatusNotFound || strings.Contains(body, secret) {
		t.Fatalf("/debug/pprof/cmdline: status %d, body %q; want 404 without the command line", code, body)
	}
}
