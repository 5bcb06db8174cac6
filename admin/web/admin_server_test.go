package web_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvsidecar/kvsidecar/admin"
	"github.com/kvsidecar/kvsidecar/store/pebble"
)

// adminServer is the real admin handler over a real Pebble store, on a local
// HTTP server, with one token per role.
type adminServer struct {
	PageURL    string        // the page: http://127.0.0.1:PORT/admin/
	Store      *pebble.Store // the store behind the API, for seeding and checking
	AdminToken string        // role admin
	ShopToken  string        // role project:shop

	tokensPath string
	tokens     *admin.Tokens
}

// revokeAdmin removes the admin token's line from the tokens file and
// reloads it, as an operator's SIGHUP would.
func (s *adminServer) revokeAdmin(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(s.tokensPath, []byte(tokenLine(s.ShopToken, "project:"+shop)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.tokens.Reload(); err != nil {
		t.Fatalf("reload the tokens: %v", err)
	}
}

func startAdmin(t *testing.T) *adminServer {
	t.Helper()
	dir := t.TempDir()
	st, err := pebble.Open(context.Background(), pebble.Config{Path: filepath.Join(dir, "kv")})
	if err != nil {
		t.Fatalf("open the store: %v", err)
	}
	t.Cleanup(func() { st.Close() })

	srv := &adminServer{Store: st, AdminToken: "test-admin-token", ShopToken: "test-shop-token"}
	// The tokens file as an operator writes it: hashes, never tokens.
	tokens := "# test tokens\n" + tokenLine(srv.AdminToken, "admin") + "\n\n" + tokenLine(srv.ShopToken, "project:"+shop) + "\n"
	path := filepath.Join(dir, "tokens")
	if err := os.WriteFile(path, []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.LoadTokens(path)
	if err != nil {
		t.Fatalf("load the tokens file: %v", err)
	}
	h, err := admin.New(admin.Config{Tokens: tok}, st, nil)
	if err != nil {
		t.Fatalf("start the admin handler: %v", err)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	srv.PageURL = ts.URL + "/admin/"
	srv.tokensPath, srv.tokens = path, tok
	return srv
}

func tokenLine(token, role string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:]) + " " + role
}
