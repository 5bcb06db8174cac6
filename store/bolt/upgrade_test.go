package bolt_test

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/bolt"
)

// writeLayout1 writes a file as a build before versions did: format 1,
// records of an expiry and the value.
func writeLayout1(t *testing.T, path string, entries map[string]string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	u64 := func(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
	err = db.Update(func(tx *bbolt.Tx) error {
		meta, _ := tx.CreateBucket([]byte("meta"))
		if err := meta.Put([]byte("format"), u64(1)); err != nil {
			return err
		}
		projects, _ := tx.CreateBucket([]byte("projects"))
		p, _ := projects.CreateBucket([]byte("p"))
		data, _ := p.CreateBucket([]byte("data"))
		if _, err := p.CreateBucket([]byte("exp")); err != nil {
			return err
		}
		var bytes uint64
		for k, v := range entries {
			if err := data.Put([]byte(k), append(u64(0), v...)); err != nil {
				return err
			}
			bytes += uint64(len(k) + len(v))
		}
		return p.Put([]byte("usage"), append(u64(bytes), u64(uint64(len(entries)))...))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenUpgradesLayout1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	writeLayout1(t, path, map[string]string{"a": "1", "b": "22"})
	ctx := context.Background()
	s := open(t, bolt.Config{Path: path, SweepInterval: -1})

	seen := map[uint64]bool{}
	for k, want := range map[string]string{"a": "1", "b": "22"} {
		v, found, err := s.GetVersioned(ctx, "p", k)
		if err != nil || !found || string(v.Value) != want || v.Version == 0 {
			t.Fatalf("GetVersioned(%q) after the upgrade = (%q, version %d, %v, %v), want %q with a version", k, v.Value, v.Version, found, err, want)
		}
		seen[v.Version] = true
	}
	if len(seen) != 2 {
		t.Fatalf("the upgraded entries share a version: %v", seen)
	}
	if u, err := s.Usage(ctx, "p"); err != nil || u.Bytes != 5 || u.Entries != 2 {
		t.Fatalf("Usage after the upgrade = (%+v, %v), want 5 bytes in 2 entries", u, err)
	}
	// New writes continue after the upgraded versions.
	v, err := s.SetIf(ctx, "p", "c", []byte("3"), 0, store.IfAbsent())
	if err != nil {
		t.Fatal(err)
	}
	for old := range seen {
		if v <= old {
			t.Fatalf("a write after the upgrade got version %d, not above the upgraded %d", v, old)
		}
	}
	// The upgrade is written: a second open finds layout 2.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, bolt.Config{Path: path, SweepInterval: -1})
	if got, _, err := s.GetVersioned(ctx, "p", "c"); err != nil || got.Version != v {
		t.Fatalf("after reopening: version %d (%v), want %d", got.Version, err, v)
	}
}
