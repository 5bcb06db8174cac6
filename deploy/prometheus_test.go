package deploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// The files under test.
const (
	scrapeConfigFile = "deploy/prometheus/prometheus.yml"
	rulesFile        = "deploy/prometheus/kvsidecar-rules.yml"
	rulesTestFile    = "deploy/prometheus/kvsidecar-rules.test.yml"
	dashboardFile    = "deploy/grafana/kvsidecar.json"
)

func TestPromtoolRules(t *testing.T) {
	promtool := requireTool(t, "promtool", "Debian package prometheus")
	root := repoRoot(t)
	for _, args := range [][]string{
		{"check", "rules", rulesFile},
		{"test", "rules", rulesTestFile},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// Every alert has a unit test.
	tests, err := os.ReadFile(filepath.Join(root, rulesTestFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range loadRules(t) {
		if r.Alert != "" && !bytes.Contains(tests, []byte("alertname: "+r.Alert+"\n")) {
			t.Errorf("alert %s has no test in %s", r.Alert, rulesTestFile)
		}
	}
}

// TestPromtoolConfig checks the plain scrape config. Debian's Prometheus is
// built without Kubernetes service discovery, so where promtool refuses
// kubernetes_sd_configs for that reason alone the config is checked again
// with a static target in its place: every other line, the relabelling
// included, is still checked by the real parser.
func TestPromtoolConfig(t *testing.T) {
	promtool := requireTool(t, "promtool", "Debian package prometheus")
	root := repoRoot(t)
	cmd := exec.Command(promtool, "check", "config", scrapeConfigFile)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err == nil {
		return
	}
	if !bytes.Contains(out, []byte("field kubernetes_sd_configs not found")) {
		t.Fatalf("promtool check config %s: %v\n%s", scrapeConfigFile, err, out)
	}
	t.Logf("this promtool has no Kubernetes service discovery; checking the config with a static target instead")
	dir := t.TempDir()
	cfg := staticScrapeConfig(t, "127.0.0.1:9477", filepath.Join(root, rulesFile))
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "config", path).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config (static target): %v\n%s", err, out)
	}
}

type rule struct {
	Alert  string `json:"alert"`
	Record string `json:"record"`
	Expr   string `json:"expr"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []rule `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s holds no rule", rulesFile)
	}
	return rules
}

// The pod the static test target stands for: what Kubernetes service
// discovery would give the relabelling for a kvsidecar container.
var testPodMeta = map[string]string{
	"__meta_kubernetes_namespace":               "kvsidecar",
	"__meta_kubernetes_pod_name":                "kvsidecar-x7k2p",
	"__meta_kubernetes_pod_container_name":      "kvsidecar",
	"__meta_kubernetes_pod_container_port_name": metricsPortName,
	"__meta_kubernetes_pod_node_name":           "node-a",
	"__meta_kubernetes_pod_phase":               "Running",
}

// staticScrapeConfig is deploy/prometheus/prometheus.yml's kvsidecar job
// with its relabel_configs unchanged and a static target in place of
// Kubernetes discovery: the daemon at addr, labelled as discovery would
// label its pod, and a decoy port of the same pod that the relabelling must
// drop. Scrapes and rule evaluations every second.
func staticScrapeConfig(t *testing.T, addr, rules string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), scrapeConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []map[string]any `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	var job map[string]any
	for _, sc := range cfg.ScrapeConfigs {
		if sc["job_name"] == "kvsidecar" {
			job = sc
		}
	}
	if job == nil || job["kubernetes_sd_configs"] == nil || job["relabel_configs"] == nil {
		t.Fatalf("%s: want a job kvsidecar with kubernetes_sd_configs and relabel_configs", scrapeConfigFile)
	}
	decoy := map[string]string{}
	for k, v := range testPodMeta {
		decoy[k] = v
	}
	decoy["__meta_kubernetes_pod_container_port_name"] = "http"
	delete(job, "kubernetes_sd_configs")
	job["scrape_interval"] = "1s"
	job["static_configs"] = []any{
		map[string]any{"targets": []string{addr}, "labels": testPodMeta},
		map[string]any{"targets": []string{"127.0.0.1:1"}, "labels": decoy},
	}
	out, err := yaml.Marshal(map[string]any{
		"global":         map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"},
		"rule_files":     []string{rules},
		"scrape_configs": []any{job},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// alertSignal splits an alert's expression "SIGNAL CMP THRESHOLD" and
// returns SIGNAL: the part that must return series whatever the threshold.
var alertCondition = regexp.MustCompile(`(?s)^(.*\S)\s*(==|!=|>=|<=|>|<)\s*-?[0-9.]+(e[-+]?[0-9]+)?$`)

// expression is one PromQL expression of the dashboard or the rules.
type expression struct {
	where string // what it belongs to, for messages
	query string
	label string // for a dashboard variable: the label its values come from
}

// expressions collects every expression that must return series from a
// real Prometheus scraping a real daemon: each dashboard target, each
// dashboard variable query, each recording rule, and each alert's signal.
// Adding a panel or an alert adds its expression here with no change to
// this test.
func expressions(t *testing.T) []expression {
	t.Helper()
	var exprs []expression
	for _, r := range loadRules(t) {
		e := strings.TrimSpace(r.Expr)
		if r.Record != "" {
			exprs = append(exprs, expression{where: "recording rule " + r.Record, query: e})
			continue
		}
		m := alertCondition.FindStringSubmatch(e)
		if m == nil {
			t.Errorf("alert %s: expression %q is not SIGNAL COMPARISON NUMBER, so its signal cannot be checked", r.Alert, e)
			continue
		}
		exprs = append(exprs, expression{where: "alert " + r.Alert, query: m[1]})
	}

	data, err := os.ReadFile(filepath.Join(repoRoot(t), dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	// Grafana's variables, as "All" and a rate interval would fill them.
	grafana := strings.NewReplacer("$namespace", ".*", "$pod", ".*", "$__rate_interval", "1m")
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			q := grafana.Replace(tg.Expr)
			if strings.Contains(q, "$") {
				t.Errorf("panel %q: %q uses a variable the dashboard does not define", p.Title, tg.Expr)
			}
			exprs = append(exprs, expression{where: "panel " + p.Title, query: q})
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)["query"].(string)
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(SERIES, LABEL)", v.Name, q)
			continue
		}
		exprs = append(exprs, expression{where: "variable " + v.Name, query: fmt.Sprintf("count by (%s) (%s)", m[2], grafana.Replace(m[1])), label: m[2]})
	}
	return exprs
}

// TestPrometheusEvaluatesEveryExpression starts the daemon (built as the
// image builds it) on a PostgreSQL server of its own, a real Prometheus
// scraping it through the scrape config's relabelling, drives traffic that
// exercises every metric (requests of every kind, quota refusals, a bad
// frame, a database outage that gives unavailable and busy answers), and
// then evaluates every dashboard and alert expression through Prometheus's
// HTTP API: each must return series.
func TestPrometheusEvaluatesEveryExpression(t *testing.T) {
	prometheus := requireTool(t, "prometheus", "Debian package prometheus")
	exprs := expressions(t)
	bin := filepath.Join(buildImageBinaries(t), "kvsidecar")
	cluster := pgtest.NewCluster(t)

	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "kvs") // socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	d := &testDaemon{socket: filepath.Join(sockDir, "kv.sock"), metrics: freeAddr(t)}
	// The admin API makes the daemon export the per-project gauges; the
	// test sends it no request, so any token's hash will do.
	tokens := filepath.Join(dir, "admin-tokens")
	hash := sha256.Sum256([]byte("deploy-test-token"))
	if err := os.WriteFile(tokens, []byte("sha256:"+hex.EncodeToString(hash[:])+" admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "kvsidecar", bin,
		"--socket", d.socket,
		"--postgres", cluster.DSN(),
		"--project", "shop",
		"--default-quota", strconv.Itoa(testQuota),
		"--metrics-addr", d.metrics,
		"--admin-addr", freeAddr(t),
		"--admin-tokens", tokens,
		"--admin-usage-interval", "1s",
		"--log-level", "error")
	waitHTTP(t, "http://"+d.metrics+"/readyz")

	promAddr := freeAddr(t)
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, staticScrapeConfig(t, d.metrics, filepath.Join(repoRoot(t), rulesFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "prometheus", prometheus,
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr,
		"--log.level=warn")
	waitHTTP(t, "http://"+promAddr+"/-/ready")
	prom := &promAPI{base: "http://" + promAddr}
	waitFor(t, "the first scrape of the daemon", func() error {
		return prom.nonEmpty(`up{job="kvsidecar"} == 1`, "")
	})

	for _, drive := range []struct {
		name string
		run  func(t *testing.T, d *testDaemon, cluster *pgtest.Cluster)
	}{
		{"requests of every op", driveOps},
		{"quota refusals", driveQuota},
		{"a bad frame", driveBadFrame},
		{"a database outage", driveOutage},
	} {
		t.Logf("driving %s", drive.name)
		drive.run(t, d, cluster)
	}

	// The relabelling kept the daemon's port, dropped the decoy, and gave
	// the target the labels the dashboard and the alerts select on.
	waitFor(t, "the target's labels", func() error {
		res, err := prom.query(`up{job="kvsidecar"}`)
		if err != nil {
			return err
		}
		if len(res) != 1 {
			return fmt.Errorf("%d targets (%v); want the daemon's kv-metrics port alone", len(res), res)
		}
		want := map[string]string{"namespace": "kvsidecar", "pod": "kvsidecar-x7k2p", "container": "kvsidecar", "node": "node-a", "instance": d.metrics}
		for k, v := range want {
			if res[0].Metric[k] != v {
				return fmt.Errorf("label %s=%q, want %q (labels %v)", k, res[0].Metric[k], v, res[0].Metric)
			}
		}
		return nil
	})
	for _, e := range exprs {
		waitFor(t, e.where+": "+e.query, func() error { return prom.nonEmpty(e.query, e.label) })
	}
	nRules := len(loadRules(t))
	waitFor(t, "every rule evaluated without error", func() error { return prom.rulesHealthy(nRules) })
}

// testQuota is the daemon's default quota in the Prometheus test: small,
// so a few writes are refused.
const testQuota = 64 << 10

type testDaemon struct {
	socket  string
	metrics string
}

func dialDaemon(t *testing.T, d *testDaemon) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, d.socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func driveOps(t *testing.T, d *testDaemon, _ *pgtest.Cluster) {
	c := dialDaemon(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 { // concurrent writers, so commits carry batches
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("user:%d", i)
			if err := c.Set(ctx, key, map[string]int{"n": i}, time.Hour); err != nil {
				errs <- err
				return
			}
			var v map[string]int
			if _, err := c.Get(ctx, key, &v); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { _, err := c.Has(ctx, "user:1"); return err },
		func() error { _, err := c.Delete(ctx, "user:2"); return err },
		func() error { _, err := c.Incr(ctx, "hits", 1, 0); return err },
		func() error { _, err := c.List(ctx, client.ListOptions{Prefix: "user:"}); return err },
		func() error { _, err := c.Usage(ctx); return err },
		func() error { return c.Ping(ctx) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
}

func driveQuota(t *testing.T, d *testDaemon, _ *pgtest.Cluster) {
	c := dialDaemon(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	value := bytes.Repeat([]byte("x"), testQuota/4)
	refused := 0
	for i := 0; i < 10; i++ {
		err := c.SetBytes(ctx, fmt.Sprintf("blob:%d", i), value, 0)
		if errors.Is(err, client.ErrQuotaExceeded) {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if refused == 0 {
		t.Fatalf("no write was refused for quota with a %d-byte quota", testQuota)
	}
}

func driveBadFrame(t *testing.T, d *testDaemon, _ *pgtest.Cluster) {
	nc, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// A frame whose payload is not a msgpack map.
	if _, err := nc.Write([]byte{0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, nc) // the daemon answers with an error frame and closes
}

// driveOutage freezes the database while many writes are sent: those that
// enter the daemon's bounded write queue time out unavailable, those that
// cannot enter it are refused busy. Then the database wakes up.
func driveOutage(t *testing.T, d *testDaemon, cluster *pgtest.Cluster) {
	// One project's writes go through one committer: a batch in flight
	// plus a full queue hold 256 + 1024 writes (postgres.DefaultMaxBatch,
	// DefaultQueueSize); more than that must wait, and end busy.
	const conns, perConn = 20, 100
	clients := make([]*client.Client, conns)
	for i := range clients {
		clients[i] = dialDaemon(t, d)
	}
	cluster.Freeze()
	thawed := false
	defer func() {
		if !thawed {
			cluster.Thaw()
		}
	}()
	var busy, unavailable, other atomic.Int64
	var wg sync.WaitGroup
	for i, c := range clients {
		for j := range perConn {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
				defer cancel()
				err := c.Set(ctx, fmt.Sprintf("outage:%d:%d", i, j), j, 0)
				switch {
				case errors.Is(err, client.ErrBusy):
					busy.Add(1)
				case errors.Is(err, client.ErrUnavailable):
					unavailable.Add(1)
				default:
					other.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	cluster.Thaw()
	thawed = true
	if busy.Load() == 0 || unavailable.Load() == 0 {
		t.Fatalf("during the outage: %d busy, %d unavailable, %d other answers; want some of each of the first two", busy.Load(), unavailable.Load(), other.Load())
	}
	c := clients[0]
	waitFor(t, "a write after the database woke up", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return c.Set(ctx, "after", 1, 0)
	})
}

// promAPI queries a Prometheus server's HTTP API.
type promAPI struct{ base string }

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

func (p *promAPI) get(path string, params url.Values, data any) error {
	resp, err := http.Get(p.base + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s", path, body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

func (p *promAPI) query(q string) ([]sample, error) {
	var data struct {
		ResultType string   `json:"resultType"`
		Result     []sample `json:"result"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {q}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", data.ResultType)
	}
	return data.Result, nil
}

// nonEmpty evaluates q and wants at least one series, each with label set
// when label is not "".
func (p *promAPI) nonEmpty(q, label string) error {
	res, err := p.query(q)
	if err != nil {
		return err
	}
	if len(res) == 0 {
		return errors.New("no series")
	}
	if label != "" {
		for _, s := range res {
			if s.Metric[label] == "" {
				return fmt.Errorf("a series without label %s: %v", label, s.Metric)
			}
		}
	}
	return nil
}

func (p *promAPI) rulesHealthy(want int) error {
	var data struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := p.get("/api/v1/rules", nil, &data); err != nil {
		return err
	}
	n := 0
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				return fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if n != want {
		return fmt.Errorf("Prometheus loaded %d rules, the file has %d", n, want)
	}
	return nil
}

// startProcess starts a program for the test and stops it (SIGTERM, then
// kill) when the test ends; its output goes to the test log on failure.
func startProcess(t *testing.T, name, path string, args ...string) {
	t.Helper()
	cmd := exec.Command(path, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitHTTP(t *testing.T, u string) {
	t.Helper()
	waitFor(t, u+" answers 200", func() error {
		resp, err := http.Get(u)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// waitFor retries check until it succeeds, failing the test with its last
// error after 30 seconds (scrapes and evaluations run every second).
func waitFor(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
