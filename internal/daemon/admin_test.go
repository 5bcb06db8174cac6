package daemon

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/admin"
)

func TestAdminSettingsAreChecked(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	for _, tc := range []struct {
		args []string
		want string // "" for a valid configuration
	}{
		{[]string{"--project", "p", "--admin-addr", "127.0.0.1:0"}, "--admin-addr needs --admin-tokens"},
		{[]string{"--socket", "", "--project", "p"}, "nothing to serve"},
		{[]string{"--socket", ""}, "nothing to serve"},
		// An admin-only instance needs no identity source.
		{[]string{"--socket", "", "--admin-addr", "127.0.0.1:0", "--admin-tokens", tokens}, ""},
		{[]string{"--project", "p", "--admin-addr", "127.0.0.1:0", "--admin-tokens", tokens, "--admin-usage-interval", "5s"}, ""},
	} {
		cfg, err := LoadConfig(tc.args, func(string) (string, bool) { return "", false }, io.Discard)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v, want a valid configuration", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: %v, want an error saying %q", tc.args, err, tc.want)
		case tc.want == "" && cfg.NoSocket != (tc.args[1] == ""):
			t.Errorf("%q: NoSocket = %v", tc.args, cfg.NoSocket)
		}
	}
	// An empty KV_SOCKET means the default socket, not none: only the
	// flag asks for an admin-only instance.
	cfg, err := LoadConfig(nil, func(name string) (string, bool) {
		v, ok := map[string]string{"KV_SOCKET": "", "KV_PROJECT": "p", "KV_ADMIN_ADDR": "127.0.0.1:0", "KV_ADMIN_TOKENS": tokens}[name]
		return v, ok
	}, io.Discard)
	if err != nil || cfg.NoSocket || cfg.AdminTokens != tokens || cfg.AdminAddr != "127.0.0.1:0" {
		t.Fatalf("from the environment: %+v, %v; want the default socket and the admin API", cfg, err)
	}
}

func TestAdminOnlyInstance(t *testing.T) {
	cfg := testConfig(t)
	cfg.Project, cfg.NoSocket = "", true
	tokensFile := filepath.Join(t.TempDir(), "tokens")
	cfg.AdminAddr, cfg.AdminTokens, cfg.MetricsAddr = "127.0.0.1:0", tokensFile, "127.0.0.1:0"

	// A tokens file that is missing or empty stops the start.
	if _, err := New(t.Context(), cfg, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "--admin-tokens") {
		t.Fatalf("New without a tokens file = %v, want an error naming --admin-tokens", err)
	}
	if err := os.WriteFile(tokensFile, []byte("# none yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(t.Context(), cfg, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "no tokens") {
		t.Fatalf("New with an empty tokens file = %v, want an error saying it has no tokens", err)
	}

	if err := os.WriteFile(tokensFile, []byte(admin.TokenLine("secret", admin.RoleAdmin)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := start(t, cfg)
	req, _ := http.NewRequest("GET", "http://"+d.AdminAddr()+"/admin/api/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer secret")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"admin"`) {
		t.Fatalf("whoami = %d %s", res.StatusCode, body)
	}
	if _, err := os.Stat(cfg.Server.Socket); !os.IsNotExist(err) {
		t.Fatalf("an admin-only instance made a socket: %v", err)
	}
	res, err = http.Get("http://" + d.MetricsAddr() + "/readyz")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("/readyz of an admin-only instance = %v, %v", res, err)
	}
	res.Body.Close()
	d.stop(nil)
	if err := d.wait(t); err != nil {
		t.Fatalf("Run = %v, want an orderly stop", err)
	}
}
