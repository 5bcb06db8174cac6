package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kvsidecar/kvsidecar/admin"
	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/pebble"
)

// Tokens of the test server, one per role.
const (
	adminToken = "admin-secret"
	aToken     = "project-a-secret"
	bToken     = "project-b-secret"
)

// env is a real admin server over a real store (Pebble or PostgreSQL).
type env struct {
	t      *testing.T
	st     store.Store
	srv    *httptest.Server
	tokens *admin.Tokens
	path   string // the tokens file
}

func openPebble(t testing.TB, cfg pebble.Config) *pebble.Store {
	t.Helper()
	cfg.Path = filepath.Join(t.TempDir(), "kv")
	cfg.SweepInterval = -1
	st, err := pebble.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Error(err)
		}
	})
	return st
}

func writeTokens(t testing.TB, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newEnv(t *testing.T, st store.Store, cfg admin.Config) *env {
	t.Helper()
	path := writeTokens(t,
		"# test tokens",
		admin.TokenLine(adminToken, admin.RoleAdmin),
		admin.TokenLine(aToken, admin.ProjectRole("a"))+"  # project a",
		"",
		admin.TokenLine(bToken, admin.ProjectRole("b")),
	)
	tokens, err := admin.LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tokens = tokens
	h, err := admin.New(cfg, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{t: t, st: st, srv: srv, tokens: tokens, path: path}
}

// response is an API answer: status, headers and the decoded JSON body.
type response struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

// with returns the env for a subtest, so that its failures end the subtest.
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

func (r response) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func (r response) errMessage() string {
	e, _ := r.body["error"].(map[string]any)
	msg, _ := e["message"].(string)
	return msg
}

func newRequest(method, url, token string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func (e *env) do(method, path, token string, body io.Reader) response {
	e.t.Helper()
	req, err := newRequest(method, e.srv.URL+path, token, body)
	if err != nil {
		e.t.Fatal(err)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	r := response{status: res.StatusCode, header: res.Header, raw: raw}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") && (r.status >= 400 || !strings.Contains(path, "/export")) {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			e.t.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, raw, err)
		}
	}
	return r
}

// call does a request with a JSON body (or none, for "") and fails unless
// the status is want.
func (e *env) call(method, path, token, body string, want int) response {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := e.do(method, "/admin/api/v1"+path, token, rd)
	if r.status != want {
		e.t.Fatalf("%s %s = %d %s, want %d", method, path, r.status, r.raw, want)
	}
	if want >= 400 {
		if r.errCode() == "" || r.errMessage() == "" {
			e.t.Fatalf("%s %s = %d %s: want a JSON error with a code and a message", method, path, r.status, r.raw)
		}
	}
	return r
}

func (e *env) set(project, key, value string, ttl time.Duration) {
	e.t.Helper()
	if err := e.st.Set(context.Background(), project, key, []byte(value), ttl); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) value(project, key string) (string, bool) {
	e.t.Helper()
	v, found, err := e.st.Get(context.Background(), project, key)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(v), found
}

// jsonEq fails unless got and want are the same JSON (member order aside).
func jsonEq(t *testing.T, what string, got any, want string) {
	t.Helper()
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %q: %v", want, err)
	}
	wb, _ := json.Marshal(w)
	if string(b) != string(wb) {
		t.Fatalf("%s = %s, want %s", what, b, wb)
	}
}

func TestNewRefusesWithoutTokens(t *testing.T) {
	st := openPebble(t, pebble.Config{})
	if _, err := admin.New(admin.Config{}, st, nil); err == nil {
		t.Fatal("New without tokens succeeded")
	}
	empty := writeTokens(t, "# nobody yet")
	if _, err := admin.LoadTokens(empty); err == nil || !strings.Contains(err.Error(), "no tokens") {
		t.Fatalf("LoadTokens of a file without tokens = %v, want an error saying so", err)
	}
	if _, err := admin.LoadTokens(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("LoadTokens of a missing file succeeded")
	}
}

func TestTokensFile(t *testing.T) {
	for _, tc := range []struct {
		line, want string
	}{
		{"admin-secret admin", "must start with sha256:"},
		{"sha256:abcd admin", "64 hex digits"},
		{admin.TokenLine("x", "root"), `role "root": want admin or project:NAME`},
		{admin.TokenLine("x", "project:"), "project is empty"},
		{admin.TokenLine("x", admin.RoleAdmin) + " extra", "line 1: want"},
	} {
		_, err := admin.LoadTokens(writeTokens(t, tc.line))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadTokens(%q) = %v, want an error containing %q", tc.line, err, tc.want)
		}
	}
	token, line, err := admin.NewToken(admin.ProjectRole("shop"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(line, token) || !strings.HasSuffix(line, " project:shop") {
		t.Fatalf("NewToken line %q: want the hash and the role, never the token", line)
	}
	tokens, err := admin.LoadTokens(writeTokens(t, line))
	if err != nil {
		t.Fatal(err)
	}
	if role, ok := tokens.Lookup(token); !ok || role != admin.ProjectRole("shop") || role.Project() != "shop" {
		t.Fatalf("Lookup(new token) = %q, %v", role, ok)
	}
	if _, ok := tokens.Lookup(token + "x"); ok {
		t.Fatal("Lookup accepted a wrong token")
	}
	if _, _, err := admin.NewToken("boss"); err == nil {
		t.Fatal("NewToken(boss) succeeded")
	}
}

func TestReloadTokens(t *testing.T) {
	e := newEnv(t, openPebble(t, pebble.Config{}), admin.Config{})
	e.call("GET", "/whoami", aToken, "", 200)
	// The project's token is replaced; a reload revokes the old one.
	newLine := admin.TokenLine("rotated", admin.ProjectRole("a"))
	if err := os.WriteFile(e.path, []byte(admin.TokenLine(adminToken, admin.RoleAdmin)+"\n"+newLine+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.tokens.Reload(); err != nil {
		t.Fatal(err)
	}
	e.call("GET", "/whoami", aToken, "", 401)
	e.call("GET", "/whoami", "rotated", "", 200)
	// A broken file leaves the tokens in force.
	if err := os.WriteFile(e.path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.tokens.Reload(); err == nil {
		t.Fatal("Reload of a broken file succeeded")
	}
	e.call("GET", "/whoami", "rotated", "", 200)
}

// endpoints is every endpoint of the API, on project "a", with a body
// that it accepts.
var endpoints = []struct {
	method, path, body string
	adminOnly          bool
}{
	{"GET", "/projects/a/usage", "", false},
	{"GET", "/projects/a/prefixes?delimiter=:", "", false},
	{"GET", "/projects/a/largest?limit=5", "", false},
	{"GET", "/projects/a/keys?prefix=k", "", false},
	{"GET", "/projects/a/entry?key=k", "", false},
	{"PUT", "/projects/a/entry?key=k", `{"value":{"n":1}}`, false},
	{"DELETE", "/projects/a/entry?key=gone", "", false},
	{"POST", "/projects/a/delete-matching", `{"prefix":"none:","dry_run":true}`, false},
	{"POST", "/projects/a/clear", `{"confirm":"a"}`, false},
	{"GET", "/projects/a/export", "", false},
	{"POST", "/projects/a/import?dry_run=true", `{"k":1}`, false},
	{"GET", "/settings", "", true},
	{"PUT", "/settings", `{"default_quota_bytes":1000000}`, true},
	{"PUT", "/projects/a/quota", `{"quota_bytes":500000}`, true},
}

func TestEveryEndpointWithEveryRole(t *testing.T) {
	e := newEnv(t, openPebble(t, pebble.Config{}), admin.Config{})
	for _, ep := range endpoints {
		for _, tc := range []struct {
			who, token string
			status     int
			code       string
		}{
			{"no token", "", 401, "unauthorized"},
			{"a wrong token", "not-a-token", 401, "unauthorized"},
			{"another project's token", bToken, 403, "forbidden"},
			{"the project's token", aToken, 200, ""},
			{"an admin token", adminToken, 200, ""},
		} {
			want, code := tc.status, tc.code
			if ep.adminOnly && tc.token == aToken {
				want, code = 403, "forbidden"
			}
			if ep.path == "/settings" && tc.token == bToken {
				want, code = 403, "forbidden"
			}
			e.set("a", "k", `"v"`, 0)
			var body io.Reader
			if ep.body != "" {
				body = strings.NewReader(ep.body)
			}
			r := e.do(ep.method, "/admin/api/v1"+ep.path, tc.token, body)
			if r.status != want || (code != "" && r.errCode() != code) {
				t.Errorf("%s %s with %s = %d %s, want %d %s", ep.method, ep.path, tc.who, r.status, r.raw, want, code)
			}
			if want == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with %s: a 401 without WWW-Authenticate", ep.method, ep.path, tc.who)
			}
		}
	}
	// Cookies are never set, so nothing authenticates a browser by itself.
	r := e.do("GET", "/admin/api/v1/whoami", adminToken, nil)
	if len(r.header.Values("Set-Cookie")) > 0 {
		t.Fatalf("the API set a cookie: %q", r.header.Values("Set-Cookie"))
	}
}

func TestWhoami(t *testing.T) {
	e := newEnv(t, openPebble(t, pebble.Config{}), admin.Config{})
	jsonEq(t, "whoami (admin)", e.call("GET", "/whoami", adminToken, "", 200).body, `{"role":"admin"}`)
	jsonEq(t, "whoami (project a)", e.call("GET", "/whoami", aToken, "", 200).body, `{"role":"project:a","project":"a"}`)
	e.call("GET", "/nonsense", adminToken, "", 404)
}

func TestProjects(t *testing.T) {
	st := openPebble(t, pebble.Config{DefaultQuota: 1000})
	e := newEnv(t, st, admin.Config{})
	e.set("a", "k", "12345", 0) // 6 bytes
	e.set("b", "kk", "1", 0)    // 3 bytes
	e.set("c", "x", "", 0)      // 1 byte
	e.call("PUT", "/projects/b/quota", adminToken, `{"quota_bytes":50}`, 200)

	r := e.call("GET", "/projects?limit=2", adminToken, "", 200)
	jsonEq(t, "projects page 1", r.body["projects"], `[
		{"name":"a","usage_bytes":6,"entries":1,"quota_bytes":1000,"quota_override":null},
		{"name":"b","usage_bytes":3,"entries":1,"quota_bytes":50,"quota_override":50}]`)
	cursor, _ := r.body["next_cursor"].(string)
	if cursor == "" {
		t.Fatal("page 1 of 3 projects in pages of 2 has no next_cursor")
	}
	r = e.call("GET", "/projects?limit=2&cursor="+cursor, adminToken, "", 200)
	jsonEq(t, "projects page 2", r.body, `{"projects":[{"name":"c","usage_bytes":1,"entries":1,"quota_bytes":1000,"quota_override":null}],"next_cursor":""}`)

	// A project role sees its own project only.
	r = e.call("GET", "/projects", bToken, "", 200)
	jsonEq(t, "projects (project b)", r.body, `{"projects":[{"name":"b","usage_bytes":3,"entries":1,"quota_bytes":50,"quota_override":50}],"next_cursor":""}`)

	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "cursor=!!"} {
		if r := e.call("GET", "/projects?"+q, adminToken, "", 400); r.errCode() != "bad_request" {
			t.Errorf("projects?%s = %s, want bad_request", q, r.raw)
		}
	}
}

func TestSettingsAndQuota(t *testing.T) {
	st := openPebble(t, pebble.Config{DefaultQuota: 1000})
	e := newEnv(t, st, admin.Config{})
	jsonEq(t, "GET settings", e.call("GET", "/settings", adminToken, "", 200).body, `{"default_quota_bytes":1000}`)
	jsonEq(t, "PUT settings", e.call("PUT", "/settings", adminToken, `{"default_quota_bytes":20}`, 200).body, `{"default_quota_bytes":20}`)
	// The new default applies to writes at once.
	e.call("PUT", "/projects/a/entry?key=k", aToken, `{"value":"0123456789012345678"}`, 413)

	jsonEq(t, "PUT quota", e.call("PUT", "/projects/a/quota", adminToken, `{"quota_bytes":100}`, 200).body,
		`{"name":"a","quota_bytes":100,"quota_override":100}`)
	e.call("PUT", "/projects/a/entry?key=k", aToken, `{"value":"0123456789012345678"}`, 200)
	jsonEq(t, "PUT quota null", e.call("PUT", "/projects/a/quota", adminToken, `{"quota_bytes":null}`, 200).body,
		`{"name":"a","quota_bytes":20,"quota_override":null}`)

	for _, tc := range []struct{ path, body string }{
		{"/settings", `{"default_quota_bytes":0}`},
		{"/settings", `{"default_quota_bytes":-5}`},
		{"/settings", `{"default_quota_bytes":"1GiB"}`},
		{"/settings", `{}`},
		{"/settings", `{"default_quota_bytes":5,"extra":1}`},
		{"/settings", `{"default_quota_bytes":5} {}`},
		{"/settings", `not json`},
		{"/settings", ``},
		{"/projects/a/quota", `{"quota_bytes":0}`},
		{"/projects/a/quota", `{"quota_bytes":1.5}`},
		{"/projects/a/quota", `{}`},
		{"/projects/a/quota", `{"quota":5}`},
		{"/projects/a/quota", `[]`},
	} {
		if r := e.call("PUT", tc.path, adminToken, tc.body, 400); r.errCode() != "bad_request" {
			t.Errorf("PUT %s %s = %s, want bad_request", tc.path, tc.body, r.raw)
		}
	}
	if q, _ := st.DefaultQuota(context.Background()); q != 20 {
		t.Fatalf("default quota after bad requests = %d, want 20 still", q)
	}
}

func TestTooLargeBody(t *testing.T) {
	st := openPebble(t, pebble.Config{Limits: store.Limits{MaxValueBytes: 1000}})
	e := newEnv(t, st, admin.Config{})
	big := `{"value":"` + strings.Repeat("x", 70<<10) + `"}`
	r := e.call("PUT", "/projects/a/entry?key=k", aToken, big, 413)
	if r.errCode() != "too_large" {
		t.Fatalf("PUT of a body over the limit = %s, want too_large", r.raw)
	}
	// Within the body limit but over the value limit: the store's error.
	r = e.call("PUT", "/projects/a/entry?key=k", aToken, `{"value":"`+strings.Repeat("x", 2000)+`"}`, 400)
	if !strings.Contains(r.errMessage(), "value too large") {
		t.Fatalf("PUT of a value over the limit = %s, want a message naming the limit", r.raw)
	}
}

func TestUsagePrefixesLargest(t *testing.T) {
	st := openPebble(t, pebble.Config{DefaultQuota: 10000})
	e := newEnv(t, st, admin.Config{})
	e.set("a", "user:1", strings.Repeat("x", 94), 30*time.Minute) // 100
	e.set("a", "user:2", strings.Repeat("x", 44), 5*time.Hour)    // 50
	e.set("a", "cache/x", strings.Repeat("x", 13), 0)             // 20
	e.set("a", "plain", "12345", 0)                               // 10
	jsonEq(t, "usage", e.call("GET", "/projects/a/usage", aToken, "", 200).body, `{"name":"a","usage_bytes":180,"entries":4,
		"quota_bytes":10000,"quota_override":null,"expiring_1h_bytes":100,"expiring_24h_bytes":150}`)
	jsonEq(t, "prefixes", e.call("GET", "/projects/a/prefixes", aToken, "", 200).body,
		`{"prefixes":[{"prefix":"user:","bytes":150,"entries":2},{"prefix":"","bytes":30,"entries":2}]}`)
	jsonEq(t, "prefixes by /", e.call("GET", "/projects/a/prefixes?delimiter=/&limit=1", aToken, "", 200).body,
		`{"prefixes":[{"prefix":"","bytes":160,"entries":3}]}`)
	e.call("GET", "/projects/a/prefixes?delimiter=", aToken, "", 400)
	jsonEq(t, "largest", e.call("GET", "/projects/a/largest?limit=2", aToken, "", 200).body,
		`{"keys":[{"key":"user:1","size":100},{"key":"user:2","size":50}]}`)
}

func TestKeys(t *testing.T) {
	e := newEnv(t, openPebble(t, pebble.Config{}), admin.Config{})
	for _, k := range []string{"user:1:name", "user:2:mail", "user:3:name", "cache:name", "other"} {
		e.set("a", k, "1", 0)
	}
	e.set("a", "user:4:name", "1", time.Hour)
	e.set("b", "user:9:name", "1", 0)
	var got []string
	var expiring int
	cursor := ""
	for page := 0; ; page++ {
		r := e.call("GET", "/projects/a/keys?prefix=user:&search=name&limit=2&cursor="+cursor, aToken, "", 200)
		keys := r.body["keys"].([]any)
		for _, k := range keys {
			m := k.(map[string]any)
			got = append(got, m["key"].(string))
			if m["size"].(float64) != float64(len(m["key"].(string))+1) {
				t.Fatalf("key %v: wrong size", m)
			}
			if exp, ok := m["expires_at"].(string); ok {
				expiring++
				if at, err := time.Parse(time.RFC3339, exp); err != nil || time.Until(at) > time.Hour || time.Until(at) < 50*time.Minute {
					t.Fatalf("key %v: expires_at is not an RFC 3339 time an hour away", m)
				}
			} else if m["expires_at"] != nil {
				t.Fatalf("key %v: expires_at neither a time nor null", m)
			}
		}
		cursor = r.body["next_cursor"].(string)
		if cursor == "" {
			break
		}
		if page > 5 {
			t.Fatal("keys kept returning a cursor")
		}
	}
	if strings.Join(got, " ") != "user:1:name user:3:name user:4:name" || expiring != 1 {
		t.Fatalf("keys(prefix user:, search name) = %q (%d expiring), want user:1:name user:3:name user:4:name (1 expiring)", got, expiring)
	}
}

func TestEntry(t *testing.T) {
	st := openPebble(t, pebble.Config{DefaultQuota: 200})
	e := newEnv(t, st, admin.Config{})
	e.set("a", "json", `{"a": [1, 2]}`, 0)
	e.set("a", "bytes", "\x00\xffbinary", 0)
	e.set("a", "spaced", " 1 ", 0)

	r := e.call("GET", "/projects/a/entry?key=json", aToken, "", 200)
	jsonEq(t, "GET entry json", r.body, `{"expires_at":null,"key":"json","size":17,"value":{"a":[1,2]}}`)
	jsonEq(t, "GET entry bytes", e.call("GET", "/projects/a/entry?key=bytes", aToken, "", 200).body,
		`{"expires_at":null,"key":"bytes","size":13,"value_base64":"AP9iaW5hcnk="}`)
	jsonEq(t, "GET entry spaced", e.call("GET", "/projects/a/entry?key=spaced", aToken, "", 200).body,
		`{"expires_at":null,"key":"spaced","size":9,"value_base64":"IDEg"}`)
	if r := e.call("GET", "/projects/a/entry?key=absent", aToken, "", 404); r.errCode() != "not_found" {
		t.Fatalf("GET of an absent key = %s", r.raw)
	}
	e.call("GET", "/projects/b/entry?key=json", bToken, "", 404) // b has no such key: projects are apart

	r = e.call("PUT", "/projects/a/entry?key=user%3A1", aToken, `{"value": {"name": "John"}, "ttl_ms": 60000}`, 200)
	if r.body["key"] != "user:1" || r.body["size"].(float64) != float64(len("user:1")+len(`{"name": "John"}`)) {
		t.Fatalf("PUT entry = %s", r.raw)
	}
	at, err := time.Parse(time.RFC3339, r.body["expires_at"].(string))
	if err != nil || time.Until(at) > time.Minute || time.Until(at) < 50*time.Second {
		t.Fatalf("PUT entry expires_at %v, want a minute from now", r.body["expires_at"])
	}
	if v, _ := e.value("a", "user:1"); v != `{"name": "John"}` {
		t.Fatalf("stored value %q, want the JSON as sent", v)
	}
	e.call("PUT", "/projects/a/entry?key=raw", aToken, `{"value_base64":"AAEC"}`, 200)
	if v, _ := e.value("a", "raw"); v != "\x00\x01\x02" {
		t.Fatalf("stored value %q, want the decoded bytes", v)
	}
	jsonEq(t, "PUT without ttl", e.call("PUT", "/projects/a/entry?key=n", aToken, `{"value":null}`, 200).body,
		`{"expires_at":null,"key":"n","size":5}`)

	for _, tc := range []struct{ path, body, want string }{
		{"?key=k", `{"ttl_ms":5}`, "missing"},
		{"?key=k", `{"value":1,"value_base64":"AA=="}`, "not both"},
		{"?key=k", `{"value_base64":"%%%"}`, "not base64"},
		{"?key=k", `{"value":1,"ttl_ms":-1}`, "ttl_ms"},
		{"?key=k", `{"value":1,"ttl":5}`, "unknown field"},
		{"?key=k", `{"value":}`, "request body"},
		{"", `{"value":1}`, "missing the key"},
		{"?key=", `{"value":1}`, "key is empty"},
		{"?key=" + strings.Repeat("k", 1025), `{"value":1}`, "key too large"},
	} {
		if r := e.call("PUT", "/projects/a/entry"+tc.path, aToken, tc.body, 400); !strings.Contains(r.errMessage(), tc.want) {
			t.Errorf("PUT entry%s %s = %s, want a message containing %q", short(tc.path), tc.body, r.raw, tc.want)
		}
	}
	r = e.call("PUT", "/projects/a/entry?key=big", aToken, `{"value":"`+strings.Repeat("x", 200)+`"}`, 413)
	if r.errCode() != "quota_exceeded" || !strings.Contains(r.errMessage(), "quota exceeded") {
		t.Fatalf("PUT over the quota = %s", r.raw)
	}

	jsonEq(t, "DELETE", e.call("DELETE", "/projects/a/entry?key=raw", aToken, "", 200).body, `{"deleted":true}`)
	jsonEq(t, "DELETE again", e.call("DELETE", "/projects/a/entry?key=raw", aToken, "", 200).body, `{"deleted":false}`)
	if _, found := e.value("a", "raw"); found {
		t.Fatal("the deleted key is still there")
	}
}

func short(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}

func TestDeleteMatchingAndClear(t *testing.T) {
	st := openPebble(t, pebble.Config{})
	e := newEnv(t, st, admin.Config{})
	var items []store.Item
	for i := range 2500 {
		items = append(items, store.Item{Key: "cache:" + string(rune('a'+i%26)) + "/" + strings.Repeat("x", i%7) + strconv.Itoa(i), Value: []byte("1")})
		if len(items) == store.MaxBatchItems {
			if err := st.SetMany(context.Background(), "a", items); err != nil {
				t.Fatal(err)
			}
			items = items[:0]
		}
	}
	if err := st.SetMany(context.Background(), "a", items); err != nil {
		t.Fatal(err)
	}
	e.set("a", "user:1", "1", 0)
	e.set("b", "cache:a/1", "1", 0)

	jsonEq(t, "dry run", e.call("POST", "/projects/a/delete-matching", aToken, `{"prefix":"cache:","dry_run":true}`, 200).body,
		`{"matched":2500,"deleted":0}`)
	jsonEq(t, "dry run with search", e.call("POST", "/projects/a/delete-matching", aToken, `{"prefix":"cache:","search":"b/","dry_run":true}`, 200).body,
		`{"matched":97,"deleted":0}`)
	jsonEq(t, "delete with search", e.call("POST", "/projects/a/delete-matching", aToken, `{"prefix":"cache:","search":"b/"}`, 200).body,
		`{"matched":97,"deleted":97}`)
	jsonEq(t, "delete", e.call("POST", "/projects/a/delete-matching", aToken, `{"prefix":"cache:"}`, 200).body,
		`{"matched":2403,"deleted":2403}`)
	if u, _ := st.Usage(context.Background(), "a"); u.Entries != 1 {
		t.Fatalf("after deleting cache:*, %d entries left, want user:1 only", u.Entries)
	}
	if _, found := e.value("b", "cache:a/1"); !found {
		t.Fatal("delete-matching on a removed another project's key")
	}
	e.call("POST", "/projects/a/delete-matching", aToken, `{"prefix":1}`, 400)

	for _, body := range []string{`{}`, `{"confirm":"b"}`, `{"confirm":"A"}`} {
		e.call("POST", "/projects/a/clear", aToken, body, 400)
	}
	if _, found := e.value("a", "user:1"); !found {
		t.Fatal("a refused clear removed entries")
	}
	jsonEq(t, "clear", e.call("POST", "/projects/a/clear", aToken, `{"confirm":"a"}`, 200).body, `{"cleared":true}`)
	if _, found := e.value("a", "user:1"); found {
		t.Fatal("clear left entries")
	}
}

func TestPageIsServed(t *testing.T) {
	e := newEnv(t, openPebble(t, pebble.Config{}), admin.Config{})
	r := e.do("GET", "/admin/", "", nil)
	if r.status != 200 || !strings.Contains(string(r.raw), "<html") {
		t.Fatalf("GET /admin/ = %d %.100s, want the page without a token", r.status, r.raw)
	}
}

func TestChangesAndRefusalsAreLogged(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	st := openPebble(t, pebble.Config{})
	tokens, err := admin.LoadTokens(writeTokens(t, admin.TokenLine(aToken, admin.ProjectRole("a"))))
	if err != nil {
		t.Fatal(err)
	}
	h, err := admin.New(admin.Config{Tokens: tokens}, st, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	e := &env{t: t, st: st, srv: srv}
	e.call("PUT", "/projects/a/entry?key=secret-key", aToken, `{"value":"secret-value"}`, 200)
	e.call("GET", "/projects/a/entry?key=secret-key", aToken, "", 200)
	e.call("DELETE", "/projects/b/entry?key=k", aToken, "", 403)
	e.call("GET", "/whoami", "guess", "", 401)

	var lines []string
	for _, entry := range logs.All() {
		f := entry.ContextMap()
		lines = append(lines, fmt.Sprintf("%s %v %v %v %v", entry.Message, f["method"], f["path"], f["role"], f["status"]))
		for _, v := range f {
			if s := fmt.Sprint(v); strings.Contains(s, "secret") || strings.Contains(s, aToken) || strings.Contains(s, "guess") {
				t.Errorf("the log holds a key, a value or a token: %v", f)
			}
		}
	}
	want := []string{
		"admin change PUT /admin/api/v1/projects/a/entry project:a 200",
		"admin request refused DELETE /admin/api/v1/projects/b/entry project:a 403",
		"admin request refused GET /admin/api/v1/whoami  401",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("logged:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// TestKeysFillsPagesCutShort: with a backend that stops scanning early, the
// keys endpoint still fills its page.
func TestKeysFillsPagesCutShort(t *testing.T) {
	e := newEnv(t, openPebble(t, pebble.Config{SearchScan: 2}), admin.Config{})
	for _, k := range []string{"a", "bx", "c", "d", "e", "f", "g", "hx", "i"} {
		e.set("a", k, "1", 0)
	}
	r := e.call("GET", "/projects/a/keys?search=x", aToken, "", 200)
	jsonEq(t, "keys?search=x", r.body, `{"keys":[{"key":"bx","size":3,"expires_at":null},{"key":"hx","size":3,"expires_at":null}],"next_cursor":""}`)
	jsonEq(t, "delete-matching", e.call("POST", "/projects/a/delete-matching", aToken, `{"search":"x"}`, 200).body, `{"matched":2,"deleted":2}`)
}
