package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/internal/bolttest"
)

// TestEmbeddedStoreMigratesBoltFile: a data directory holding the bbolt
// file of an earlier release is migrated at start-up: the daemon serves its
// entries from the Pebble store, logs the migration and which engine it
// runs, and keeps the old file under a new name for the operator to delete.
func TestEmbeddedStoreMigratesBoltFile(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(cfg.DataDir, "kv.db")
	bolttest.Write(t, old, bolttest.File{Projects: []bolttest.Project{{Name: "p", Entries: slices.Values([]bolttest.Entry{
		{Key: "k", Value: []byte("kept"), Version: 1},
	})}}})

	d := start(t, cfg)
	ctx := t.Context()
	c, err := client.Dial(ctx, d.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, found, err := c.GetBytes(ctx, "k"); err != nil || !found || string(v) != "kept" {
		t.Fatalf("GetBytes(k) after the migration = %q, %v, %v; want kept", v, found, err)
	}
	if _, err := os.Stat(old + ".bbolt-migrated"); err != nil {
		t.Fatalf("the old file was not kept under its new name: %v", err)
	}
	if n := d.logs.FilterMessageSnippet("migrated the bbolt file").Len(); n != 1 {
		t.Errorf("%d log lines about the migration, want 1", n)
	}
	named := false
	for _, e := range d.logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "pebble") && strings.Contains(f.String, filepath.Join(cfg.DataDir, "kv")) {
				named = true
			}
		}
	}
	if !named {
		t.Error("no start-up log line names the pebble engine and its directory")
	}
}

// TestEmbeddedStoreRefusesUnknownFile: a kv.db that is not a bbolt file is
// not ignored: the daemon does not start, and says what to do.
func TestEmbeddedStoreRefusesUnknownFile(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "kv.db"), []byte(strings.Repeat("x", 4096)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(t.Context(), cfg, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "not a bbolt file") || !strings.Contains(err.Error(), "move it away") {
		t.Fatalf("New = %v, want a refusal saying the file is not bbolt and to move it away", err)
	}
}
