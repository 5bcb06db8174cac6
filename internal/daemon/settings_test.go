package daemon

import (
	"bufio"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/sidecar"
)

// env is an environment for LoadConfig: a variable in the map is set, even
// to "".
type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

func load(t *testing.T, e env, args ...string) (Config, error) {
	t.Helper()
	return LoadConfig(args, e.lookup, &strings.Builder{})
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1024": 1024, "512MiB": 512 << 20, "1GiB": 1 << 30, "1GB": 1e9, "1gb": 1e9,
		"10 KB": 10e3, "1.5MiB": 3 << 19, "2K": 2048, "3B": 3,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "12 parsecs", "-1", "1e3"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
	for _, n := range []int64{0, 1000, 1024, 3 << 19, 1 << 30, 64 << 10} {
		if got, err := ParseSize(formatSize(n)); err != nil || got != n {
			t.Errorf("ParseSize(formatSize(%d) = %q) = %d, %v", n, formatSize(n), got, err)
		}
	}
}

func TestLoadConfigEnvAndFlags(t *testing.T) {
	e := env{"KV_PROJECT": "shop", "KV_DEFAULT_QUOTA": "512MiB", "KV_SOCKET": "/tmp/a.sock"}
	cfg, err := load(t, e, "--socket", "/tmp/b.sock", "--max-key-bytes", "64")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Project != "shop" || cfg.DefaultQuota != 512<<20 || cfg.Server.Socket != "/tmp/b.sock" || cfg.Server.Limits.MaxKeyBytes != 64 {
		t.Fatalf("config %+v", cfg)
	}
	if cfg.Server.MaxFrameBytes != 2<<20 || cfg.MetricsAddr != DefaultMetricsAddr || cfg.Server.SocketMode != 0o666 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	e["KV_DEFAULT_QUOTA"] = "plenty"
	if _, err := load(t, e); err == nil || !strings.Contains(err.Error(), "KV_DEFAULT_QUOTA") {
		t.Fatalf("bad env value: err = %v, want it to name KV_DEFAULT_QUOTA", err)
	}
}

// TestFlagAndEnvShareTheParser gives each setting the same text once as a
// flag and once as its variable: both must give the same Config, or both
// the same refusal.
func TestFlagAndEnvShareTheParser(t *testing.T) {
	for _, tc := range []struct{ flag, env, value string }{
		{"max-value-bytes", "KV_MAX_VALUE_BYTES", "2MiB"}, // the flag once refused units its variable took
		{"max-conns", "KV_MAX_CONNS", "12"},
		{"max-conns", "KV_MAX_CONNS", "1k"}, // the variable once took units its flag refused
		{"request-timeout", "KV_REQUEST_TIMEOUT", "250ms"},
		{"socket-mode", "KV_SOCKET_MODE", "0640"},
		{"socket-mode", "KV_SOCKET_MODE", "999"},
		{"pprof", "KV_PPROF", "true"},
		{"pprof", "KV_PPROF", "yes"},
		{"default-quota", "KV_DEFAULT_QUOTA", "1.5GiB"},
		{"metrics-addr", "KV_METRICS_ADDR", ""},
		{"max-inflight-bytes", "KV_MAX_INFLIGHT_BYTES", "64MiB"},
	} {
		fromFlag, flagErr := load(t, env{"KV_PROJECT": "p"}, "--"+tc.flag+"="+tc.value)
		fromEnv, envErr := load(t, env{"KV_PROJECT": "p", tc.env: tc.value})
		if (flagErr == nil) != (envErr == nil) {
			t.Errorf("%s %q: flag err %v, env err %v; want both or neither to fail", tc.flag, tc.value, flagErr, envErr)
			continue
		}
		if flagErr == nil && fromFlag != fromEnv {
			t.Errorf("%s %q: flag gives %+v, env gives %+v", tc.flag, tc.value, fromFlag, fromEnv)
		}
	}
}

func TestEmptyMetricsAddrDisablesTheListener(t *testing.T) {
	for name, e := range map[string]env{
		"flag":           {"KV_PROJECT": "p"},
		"env set, empty": {"KV_PROJECT": "p", "KV_METRICS_ADDR": ""},
	} {
		args := []string{}
		if name == "flag" {
			args = []string{"--metrics-addr", ""}
		}
		cfg, err := load(t, e, args...)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.MetricsAddr != "" {
			t.Errorf("%s: metrics address %q, want it off", name, cfg.MetricsAddr)
		}
	}
	if cfg, _ := load(t, env{"KV_PROJECT": "p"}); cfg.MetricsAddr != DefaultMetricsAddr {
		t.Errorf("unset: metrics address %q, want %q", cfg.MetricsAddr, DefaultMetricsAddr)
	}
}

func TestEmptyValueMeansTheDefault(t *testing.T) {
	cfg, err := load(t, env{"KV_PROJECT": "p", "KV_MAX_CONNS": "", "KV_REQUEST_TIMEOUT": "", "KV_SOCKET": "", "KV_DEFAULT_QUOTA": ""})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.MaxConns != sidecar.DefaultMaxConns || cfg.Server.RequestTimeout != sidecar.DefaultRequestTimeout ||
		cfg.Server.Socket != sidecar.DefaultSocket || cfg.DefaultQuota != 0 {
		t.Fatalf("empty variables did not give the defaults: %+v", cfg.Server)
	}
}

func TestIdentitySelection(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // the identity in force, or a piece of the error
		ok   bool
	}{
		{[]string{"--project", "p"}, IdentityStatic, true},
		{[]string{"--uid-map", "/etc/uids"}, IdentityUIDMap, true},
		{[]string{"--identity", "static", "--project", "p"}, IdentityStatic, true},
		{[]string{"--identity", "uidmap", "--uid-map", "/etc/uids"}, IdentityUIDMap, true},
		{[]string{"--identity", "k8s", "--k8s-node-name", "node-a"}, IdentityK8s, true},
		{[]string{"--identity", "k8s"}, "needs the node's name: set NODE_NAME", false},
		{[]string{"--identity", "k8s", "--k8s-node-name", "n", "--k8s-project-from", "annotation"}, `--k8s-project-from "annotation": want label or namespace`, false},
		{nil, "give --project NAME", false},
		{[]string{"--project", "p", "--uid-map", "/x"}, "choose one identity source", false},
		{[]string{"--identity", "static"}, "needs --project", false},
		{[]string{"--identity", "uidmap", "--project", "p"}, "needs --uid-map", false},
		{[]string{"--identity", "uidmap", "--uid-map", "/x", "--project", "p"}, "does not read --project", false},
		{[]string{"--identity", "k8s", "--project", "p"}, "reads neither", false},
		{[]string{"--identity", "ldap"}, `"ldap": want static, uidmap or k8s`, false},
	} {
		cfg, err := load(t, env{}, tc.args...)
		if !tc.ok {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: err %v, want it to say %q", tc.args, err, tc.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if got, _ := cfg.identity(); got != tc.want {
			t.Errorf("%v: identity %q, want %q", tc.args, got, tc.want)
		}
	}
	if _, err := load(t, env{"KV_IDENTITY": "uidmap", "KV_UID_MAP": "/etc/uids"}); err != nil {
		t.Errorf("KV_IDENTITY: %v", err)
	}
	cfg, err := load(t, env{"KV_IDENTITY": "k8s", "NODE_NAME": "node-a", "KV_K8S_PROJECT_FROM": "namespace"})
	if err != nil || cfg.K8sNodeName != "node-a" || cfg.K8sProjectFrom != "namespace" || cfg.K8sProjectLabel != "kvsidecar.io/project" {
		t.Errorf("k8s identity from the environment: %+v, %v", cfg, err)
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out strings.Builder
	if _, err := LoadConfig([]string{"--help"}, env{}.lookup, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, s := range settings() {
		if !strings.Contains(out.String(), "--"+s.flag+" ") && !strings.Contains(out.String(), "--"+s.flag+"\n") {
			t.Errorf("--help does not list --%s", s.flag)
		}
		if !strings.Contains(out.String(), "env "+s.env) {
			t.Errorf("--help does not name %s", s.env)
		}
		if s.def != "" && !strings.Contains(out.String(), "default "+s.def) {
			t.Errorf("--help does not give --%s's default %s", s.flag, s.def)
		}
	}
	if _, err := LoadConfig([]string{"--version"}, env{}.lookup, &out); !errors.Is(err, ErrVersion) {
		t.Errorf("--version: %v", err)
	}
}

// TestREADMEListsEverySetting compares README.md's settings table with the
// settings table: the same flags in the same order, each with its variable
// and default, so that neither can change without the other.
func TestREADMEListsEverySetting(t *testing.T) {
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows [][]string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "| flag | env | default | meaning |":
			in = true
		case in && strings.HasPrefix(line, "|-"):
		case in && strings.HasPrefix(line, "|"):
			cells := strings.Split(strings.Trim(line, "|"), " | ")
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			rows = append(rows, cells)
		case in:
			in = false
		}
	}
	if len(rows) == 0 {
		t.Fatal(`README.md has no table headed "| flag | env | default | meaning |"`)
	}
	list := settings()
	for i := range max(len(rows), len(list)) {
		if i >= len(list) {
			t.Errorf("README row %v is not a setting", rows[i])
			continue
		}
		s := list[i]
		want := []string{"`--" + s.flag + "`", "`" + s.env + "`", "`" + s.def + "`"}
		if s.def == "" {
			want[2] = s.defDoc
			if want[2] == "" {
				want[2] = "—"
			}
		}
		if i >= len(rows) {
			t.Errorf("README lacks the row of --%s: | %s |", s.flag, strings.Join(want, " | "))
			continue
		}
		row := rows[i]
		if len(row) != 4 || row[3] == "" {
			t.Errorf("README row %d %q: want 4 cells, the last saying what the setting means", i+1, row)
			continue
		}
		if row[0] != want[0] || row[1] != want[1] || row[2] != want[2] {
			t.Errorf("README row %d: | %s |, want | %s | …", i+1, strings.Join(row[:3], " | "), strings.Join(want, " | "))
		}
	}
}

func TestDefaultsAreTheNamedConstants(t *testing.T) {
	cfg, err := load(t, env{"KV_PROJECT": "p"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.MaxInflightBytes != sidecar.DefaultMaxInflightBytes || cfg.Server.ShutdownTimeout != sidecar.DefaultShutdownTimeout ||
		cfg.Server.Limits.MaxValueBytes != 1<<20 || cfg.DataDir != DefaultDataDir || cfg.Pprof || cfg.LogLevel != "info" ||
		cfg.PostgresStatementTimeout != 0 || cfg.Server.RequestTimeout != 10*time.Second || cfg.PostgresLeases {
		t.Fatalf("defaults: %+v", cfg)
	}
	if cfg, err := load(t, env{"KV_PROJECT": "p", "KV_POSTGRES_LEASES": "true"}); err != nil || !cfg.PostgresLeases {
		t.Fatalf("KV_POSTGRES_LEASES=true: leases %v, %v", cfg.PostgresLeases, err)
	}
	if cfg, err := load(t, env{"KV_PROJECT": "p"}, "--postgres-leases"); err != nil || !cfg.PostgresLeases {
		t.Fatalf("--postgres-leases: leases %v, %v", cfg.PostgresLeases, err)
	}
}

// TestProjectSharesWithOneProject checks the per-project shares: a quarter
// of the connections and of the in-flight budget when callers map to
// projects by uid, all of them when one project is every caller (static),
// and what is given when it is given.
func TestProjectSharesWithOneProject(t *testing.T) {
	dir := t.TempDir()
	uids := filepath.Join(dir, "uids")
	if err := os.WriteFile(uids, []byte("100 a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		env   env
		conns int
		share float64
	}{
		{env{"KV_UID_MAP": uids}, sidecar.DefaultMaxConns / 4, sidecar.DefaultProjectInflightShare},
		{env{"KV_PROJECT": "p"}, sidecar.DefaultMaxConns, 1},
		{env{"KV_PROJECT": "p", "KV_MAX_CONNS": "100"}, 100, 1},
		{env{"KV_PROJECT": "p", "KV_MAX_CONNS_PER_PROJECT": "7", "KV_PROJECT_INFLIGHT_SHARE": "0.5"}, 7, 0.5},
		{env{"KV_UID_MAP": uids, "KV_MAX_CONNS": "100"}, 25, sidecar.DefaultProjectInflightShare},
	}
	for _, tc := range cases {
		cfg, err := load(t, tc.env)
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if cfg.Server.MaxConnsPerProject != tc.conns || cfg.Server.ProjectInflightShare != tc.share {
			t.Errorf("%v: %d connections and a share of %g per project, want %d and %g", tc.env, cfg.Server.MaxConnsPerProject, cfg.Server.ProjectInflightShare, tc.conns, tc.share)
		}
	}
}

// TestStoreFairnessSettings: --project-queue-share takes a percentage or a
// fraction and refuses what is no share; --disk-reserve defaults to the
// embedded store's reserve, and 0 turns it off.
func TestStoreFairnessSettings(t *testing.T) {
	base := env{"KV_PROJECT": "shop"}
	cfg, err := load(t, base)
	if err != nil {
		t.Fatal(err)
	}
	// One project is every caller: the whole queue is its share.
	if cfg.ProjectQueueShare != 1 || cfg.DiskReserve != 16<<20 {
		t.Fatalf("defaults: share %g, reserve %d; want 1 and 16 MiB", cfg.ProjectQueueShare, cfg.DiskReserve)
	}
	uids := filepath.Join(t.TempDir(), "uids")
	if err := os.WriteFile(uids, []byte("100 a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if cfg, err := load(t, env{"KV_UID_MAP": uids}); err != nil || cfg.ProjectQueueShare != 0 {
		t.Fatalf("uid map: share %g, %v; want 0, the backend's default (a quarter)", cfg.ProjectQueueShare, err)
	}
	for in, want := range map[string]float64{"50%": 0.5, "100%": 1, "0.1": 0.1, " 12.5 % ": 0.125} {
		cfg, err := load(t, base, "--project-queue-share", in)
		if err != nil || cfg.ProjectQueueShare != want {
			t.Errorf("--project-queue-share %q = %g, %v; want %g", in, cfg.ProjectQueueShare, err, want)
		}
	}
	for _, in := range []string{"0", "0%", "150%", "2", "-10%", "a quarter"} {
		if _, err := load(t, base, "--project-queue-share", in); err == nil || !strings.Contains(err.Error(), "share") {
			t.Errorf("--project-queue-share %q: err = %v, want a refusal naming the share", in, err)
		}
	}
	if cfg, err := load(t, base, "--disk-reserve", "0"); err != nil || cfg.DiskReserve != -1 {
		t.Errorf("--disk-reserve 0 = %d, %v; want -1 (none)", cfg.DiskReserve, err)
	}
	if cfg, err := load(t, base, "--disk-reserve", "64MiB"); err != nil || cfg.DiskReserve != 64<<20 {
		t.Errorf("--disk-reserve 64MiB = %d, %v", cfg.DiskReserve, err)
	}
}
