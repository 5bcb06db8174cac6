package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// daemonBin is the kvsidecar binary the tests run, built once by TestMain.
var daemonBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvctl-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	daemonBin = filepath.Join(dir, "kvsidecar")
	build := exec.Command("go", "build", "-o", daemonBin, "github.com/kvsidecar/kvsidecar/cmd/kvsidecar")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build kvsidecar:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a kvsidecar process.
type daemon struct {
	cmd         *exec.Cmd
	socket      string
	adminURL    string
	metricsAddr string
	mu          sync.Mutex
	log         bytes.Buffer
}

// startDaemon runs kvsidecar with args plus an admin and a metrics
// listener on free ports, and waits for its start-up line.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	args = append(args, "--admin-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--log-format", "json",
		"--admin-usage-interval", "200ms")
	cmd := exec.Command(daemonBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd}
	started := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.mu.Lock()
			d.log.Write(sc.Bytes())
			d.log.WriteByte('\n')
			d.mu.Unlock()
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "kvsidecar serving" {
				started <- line
			}
		}
		close(started)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	select {
	case line, ok := <-started:
		if !ok {
			cmd.Wait()
			t.Fatalf("kvsidecar %v exited:\n%s", args, d.logs())
		}
		d.adminURL = "http://" + line["admin_addr"].(string)
		d.metricsAddr = line["metrics_addr"].(string)
		if s := line["socket"].(string); s != "none" {
			d.socket = s
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("kvsidecar did not start:\n%s", d.logs())
	}
	return d
}

func (d *daemon) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// kvctl runs the command in-process, as the binary's main would, with the
// environment given and stdin as in.
type kvctlEnv struct {
	t   *testing.T
	env map[string]string
}

func (k *kvctlEnv) lookup(name string) (string, bool) {
	v, ok := k.env[name]
	return v, ok
}

// run runs kvctl and returns its exit code, stdout and stderr.
func (k *kvctlEnv) run(stdin string, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, k.lookup, stdio{in: strings.NewReader(stdin), out: &out, err: &errOut})
	return code, out.String(), errOut.String()
}

// ok runs kvctl, fails unless it succeeds, and returns its stdout.
func (k *kvctlEnv) ok(args ...string) string {
	k.t.Helper()
	code, out, errOut := k.run("", args...)
	if code != 0 {
		k.t.Fatalf("kvctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// fails runs kvctl, fails unless it exits with code and says want on
// stderr.
func (k *kvctlEnv) fails(code int, want string, args ...string) {
	k.t.Helper()
	got, out, errOut := k.run("", args...)
	if got != code || !strings.Contains(errOut, want) {
		k.t.Fatalf("kvctl %s: exit %d, stderr %q (stdout %q); want exit %d saying %q", strings.Join(args, " "), got, errOut, out, code, want)
	}
}

// newToken runs kvctl token new and returns the token and its line.
func newToken(t *testing.T, role string) (token, line string) {
	t.Helper()
	k := &kvctlEnv{t: t}
	var out struct {
		Token string `json:"token"`
		Line  string `json:"tokens_file_line"`
	}
	if err := json.Unmarshal([]byte(k.ok("token", "new", role, "-o", "json")), &out); err != nil {
		t.Fatal(err)
	}
	return out.Token, out.Line
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestKvctlEmbedded(t *testing.T) {
	testKvctl(t, func(t *testing.T, tokens string) (node, adminD *daemon) {
		dir := shortTempDir(t)
		d := startDaemon(t, "--socket", filepath.Join(dir, "kv.sock"), "--project", "shop",
			"--data-dir", filepath.Join(dir, "data"), "--admin-tokens", tokens)
		return d, d
	})
}

// TestKvctlPostgres runs the cluster shape: a node daemon serving the
// function socket and a separate admin-only instance (an empty --socket), both
// on one PostgreSQL database.
func TestKvctlPostgres(t *testing.T) {
	dsn := pgtest.Database(t)
	testKvctl(t, func(t *testing.T, tokens string) (node, adminD *daemon) {
		dir := shortTempDir(t)
		node = startDaemon(t, "--socket", filepath.Join(dir, "kv.sock"), "--project", "shop", "--postgres", dsn,
			"--admin-tokens", tokens)
		adminD = startDaemon(t, "--socket", "", "--postgres", dsn, "--admin-tokens", tokens)
		return node, adminD
	})
}

func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "kvctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func testKvctl(t *testing.T, start func(t *testing.T, tokens string) (node, admin *daemon)) {
	ctx := context.Background()
	adminToken, adminLine := newToken(t, "admin")
	shopToken, shopLine := newToken(t, "project:shop")
	dir := t.TempDir()
	tokensFile := filepath.Join(dir, "tokens")
	writeFile(t, tokensFile, "# kvsidecar admin tokens\n"+adminLine+"\n"+shopLine+"\n")
	adminTokenFile := filepath.Join(dir, "admin.token")
	writeFile(t, adminTokenFile, adminToken+"\n")

	node, adm := start(t, tokensFile)
	c, err := client.Dial(ctx, node.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Set(ctx, "user:1", map[string]any{"name": "John", "age": 30}, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "session:abc", "token-data", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := c.SetBytes(ctx, "blob", []byte{0, 1, 2, 0xff}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Incr(ctx, "hits", 5, 0); err != nil {
		t.Fatal(err)
	}

	// The admin token from a file, the project from a flag.
	k := &kvctlEnv{t: t, env: map[string]string{"KVCTL_URL": adm.adminURL, "KVCTL_TOKEN_FILE": adminTokenFile}}
	if out := k.ok("whoami"); strings.TrimSpace(out) != "admin" {
		t.Fatalf("whoami = %q", out)
	}
	var projects struct {
		Projects []projectJSON `json:"projects"`
	}
	if err := json.Unmarshal([]byte(k.ok("projects", "-o", "json")), &projects); err != nil {
		t.Fatal(err)
	}
	if len(projects.Projects) != 1 || projects.Projects[0].Name != "shop" || projects.Projects[0].Entries != 4 {
		t.Fatalf("projects = %+v, want shop with 4 entries", projects)
	}
	if out := k.ok("projects"); !strings.Contains(out, "PROJECT") || !strings.Contains(out, "shop") || !strings.Contains(out, "1.0 GiB") {
		t.Fatalf("projects table:\n%s", out)
	}
	k.fails(2, "name one with --project", "keys")

	k.env["KVCTL_PROJECT"] = "shop"
	if out := k.ok("keys"); !strings.Contains(out, "session:abc") || !strings.Contains(out, "user:1") || !strings.Contains(out, "(in 59m") {
		t.Fatalf("keys:\n%s", out)
	}
	var keys []keyJSON
	if err := json.Unmarshal([]byte(k.ok("keys", "--prefix", "user:", "-o", "json")), &keys); err != nil || len(keys) != 1 || keys[0].Key != "user:1" {
		t.Fatalf("keys --prefix user: -o json = %+v, %v", keys, err)
	}
	if err := json.Unmarshal([]byte(k.ok("keys", "--search", "i", "-o", "json")), &keys); err != nil || len(keys) != 2 {
		t.Fatalf("keys --search i = %+v, %v; want hits and session:abc", keys, err)
	}
	if out := k.ok("get", "user:1"); out != "{\n  \"age\": 30,\n  \"name\": \"John\"\n}\n" {
		t.Fatalf("get user:1 = %q, want the JSON pretty-printed", out)
	}
	if out := k.ok("get", "blob"); out != "\x00\x01\x02\xff" {
		t.Fatalf("get blob = %q, want the bytes", out)
	}
	k.fails(1, "not_found", "get", "missing")

	// set, seen by the function's client through the socket.
	if out := k.ok("set", "user:2", `{"name": "Ann"}`, "--ttl", "1h"); !strings.Contains(out, "set user:2 in shop") || strings.Contains(out, "never") {
		t.Fatalf("set --ttl 1h = %q", out)
	}
	var u struct{ Name string }
	if found, err := c.Get(ctx, "user:2", &u); err != nil || !found || u.Name != "Ann" {
		t.Fatalf("the client reads user:2 = %+v, %v, %v", u, found, err)
	}
	k.fails(2, "is not JSON", "set", "user:3", "not json")
	k.fails(2, "--ttl", "set", "user:3", "1", "--ttl", "soon")
	if code, _, errOut := k.run(`"from stdin"`, "set", "note", "-"); code != 0 {
		t.Fatalf("set note - : %s", errOut)
	}
	var note string
	if found, _ := c.Get(ctx, "note", &note); !found || note != "from stdin" {
		t.Fatalf("note = %q", note)
	}
	if out := k.ok("delete", "note"); !strings.Contains(out, "deleted note") {
		t.Fatalf("delete = %q", out)
	}
	if out := k.ok("delete", "note"); !strings.Contains(out, "was not in shop") {
		t.Fatalf("delete again = %q", out)
	}

	if out := k.ok("usage"); !strings.Contains(out, "user:") || !strings.Contains(out, "session:") || !strings.Contains(out, "LARGEST KEY") {
		t.Fatalf("usage:\n%s", out)
	}

	// Quotas: an override refuses the client's writes at once.
	if out := k.ok("quota", "200B"); !strings.Contains(out, "200 B") || !strings.Contains(out, "override") {
		t.Fatalf("quota 200B = %q", out)
	}
	if err := c.Set(ctx, "big", strings.Repeat("x", 300), 0); !errors.Is(err, client.ErrQuotaExceeded) {
		t.Fatalf("a set over the new quota = %v, want quota exceeded", err)
	}
	if out := k.ok("quota", "none"); !strings.Contains(out, "default") {
		t.Fatalf("quota none = %q", out)
	}
	if out := k.ok("quota", "--default", "2GiB"); !strings.Contains(out, "2.0 GiB") {
		t.Fatalf("quota --default 2GiB = %q", out)
	}
	if out := k.ok("quota"); !strings.Contains(out, "2.0 GiB") {
		t.Fatalf("quota = %q, want the new default in force", out)
	}
	k.fails(2, "size", "quota", "lots")

	// Export, and import into another project: the same entries.
	exportFile := filepath.Join(dir, "shop.json")
	k.ok("export", "-o", exportFile)
	if out := k.ok("import", exportFile, "--project", "copy"); !strings.Contains(out, "imported 5 entries into copy") {
		b, _ := os.ReadFile(exportFile)
		t.Fatalf("import = %q\nof\n%s", out, b)
	}
	want, have := k.ok("keys", "-o", "json"), k.ok("keys", "-o", "json", "--project", "copy")
	if want != have {
		t.Fatalf("keys of the copy:\n%s\nwant those of shop:\n%s", have, want)
	}
	for _, key := range []string{"user:1", "blob", "hits", "session:abc"} {
		a, b := k.ok("get", key, "-o", "json"), k.ok("get", key, "-o", "json", "--project", "copy")
		if a != b {
			t.Fatalf("get %s in the copy = %s, want %s", key, b, a)
		}
	}
	// A dry run writes nothing; --replace clears first.
	k.ok("set", "extra", "1", "--project", "copy")
	if out := k.ok("import", exportFile, "--project", "copy", "--dry-run"); !strings.Contains(out, "dry run") || !strings.Contains(out, "5 entries would be imported") {
		t.Fatalf("import --dry-run = %q", out)
	}
	k.ok("get", "extra", "--project", "copy")
	if out := k.ok("import", exportFile, "--project", "copy", "--replace"); !strings.Contains(out, "imported 5 entries into copy (cleared first)") {
		t.Fatalf("import --replace = %q", out)
	}
	k.fails(1, "not_found", "get", "extra", "--project", "copy")
	// A plain object from stdin.
	if code, _, errOut := k.run(`{"greeting": "hi", "n": 1}`, "import", "-", "--project", "copy"); code != 0 {
		t.Fatalf("import - : %s", errOut)
	}
	if out := k.ok("get", "greeting", "--project", "copy"); out != "\"hi\"\n" {
		t.Fatalf("greeting = %q", out)
	}
	// A broken file is refused before anything is written.
	broken := filepath.Join(dir, "broken.json")
	writeFile(t, broken, `{"a": 1, "b": }`)
	k.fails(1, "nothing was written", "import", broken, "--project", "fresh")
	// Over the quota, the import stops and says how far it got.
	k.ok("quota", "60B", "--project", "small")
	k.fails(1, "quota exceeded", "import", exportFile, "--project", "small")

	// The project token: its own project only, no quotas.
	p := &kvctlEnv{t: t, env: map[string]string{"KVCTL_URL": adm.adminURL, "KVCTL_TOKEN": shopToken}}
	if out := p.ok("whoami"); strings.TrimSpace(out) != "project:shop" {
		t.Fatalf("whoami = %q", out)
	}
	if out := p.ok("get", "user:1"); !strings.Contains(out, "John") {
		t.Fatalf("get with the project token = %q", out)
	}
	p.fails(1, "forbidden", "keys", "--project", "copy")
	p.fails(1, "forbidden", "quota", "1GiB")
	p.fails(1, "forbidden", "quota", "--default")
	if out := p.ok("projects"); strings.Contains(out, "copy") || !strings.Contains(out, "shop") {
		t.Fatalf("projects with the project token:\n%s", out)
	}
	bad := &kvctlEnv{t: t, env: map[string]string{"KVCTL_URL": adm.adminURL, "KVCTL_TOKEN": "kvs_wrong"}}
	bad.fails(1, "unauthorized", "whoami")
	(&kvctlEnv{t: t, env: map[string]string{"KVCTL_URL": adm.adminURL}}).fails(2, "no token", "whoami")

	// The admin instance exports the per-project gauges.
	// Wait for the gauge of the last change: a refresh before it shows the
	// earlier ones only.
	metrics := getMetrics(t, adm.metricsAddr, `kvsidecar_project_quota_bytes{project="small"} 60`)
	for _, want := range []string{`kvsidecar_project_entries{project="shop"}`, `kvsidecar_project_usage_bytes{project="copy"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// SIGHUP re-reads the tokens file: the project token is revoked.
	writeFile(t, tokensFile, adminLine+"\n")
	adm.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, _ := p.run("", "whoami")
		if code == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked token still works after SIGHUP:\n%s", adm.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	k.ok("whoami")
	if strings.Contains(adm.logs()+node.logs(), adminToken) || strings.Contains(adm.logs()+node.logs(), shopToken) {
		t.Fatal("a token appears in the daemon's logs")
	}
}

// getMetrics polls /metrics until it contains want (the gauges are
// refreshed every --admin-usage-interval) and returns it.
func getMetrics(t *testing.T, addr, want string) string {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics has no %s after 45s:\n%s", want, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestProgressOnlyOnATerminal: the bar is drawn when stderr is a terminal
// and nothing is written otherwise.
func TestProgressOnlyOnATerminal(t *testing.T) {
	for _, tty := range []bool{false, true} {
		var errOut bytes.Buffer
		c := &cli{io: stdio{err: &errOut, errTTY: tty}}
		bar := c.progress(3, "exporting shop", false)
		for range 3 {
			bar.Add(1)
		}
		bar.Finish()
		b := c.progress(2048, "importing into shop", true)
		b.Write(make([]byte, 2048))
		b.Finish()
		drawn := strings.Contains(errOut.String(), "exporting shop") && strings.Contains(errOut.String(), "importing into shop")
		if drawn != tty || (!tty && errOut.Len() > 0) {
			t.Errorf("stderr a terminal: %v; wrote %q", tty, errOut.String())
		}
	}
}
