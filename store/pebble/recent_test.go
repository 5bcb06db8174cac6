package pebble

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
)

// TestRecentKeysStayExact: with more keys written than the committer
// remembers, overwrites, deletes, a Clear and conditional writes still count
// usage exactly and check versions right, whether a key's old record comes
// from the committer's map or from Pebble.
func TestRecentKeysStayExact(t *testing.T) {
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "kv"), SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const keys = maxRecent + maxRecent/2
	key := func(i int) string { return fmt.Sprintf("k%06d", i) }
	write := func(value string, order func(i int) int) {
		t.Helper()
		items := make([]store.Item, 0, 1000)
		for i := range keys {
			items = append(items, store.Item{Key: key(order(i)), Value: []byte(value)})
			if len(items) == cap(items) || i == keys-1 {
				if err := s.SetMany(ctx, "p", items); err != nil {
					t.Fatal(err)
				}
				items = items[:0]
			}
		}
	}
	write("1", func(i int) int { return i })
	write("22", func(i int) int { return keys - 1 - i }) // the oldest keys last
	if len(s.recent) > maxRecent {
		t.Fatalf("the committer remembers %d keys, more than %d", len(s.recent), maxRecent)
	}
	for i := range 10 {
		if _, err := s.Delete(ctx, "p", key(i)); err != nil {
			t.Fatal(err)
		}
	}
	want := int64(keys-10) * int64(len(key(0))+2)
	if u, err := s.Usage(ctx, "p"); err != nil || u.Bytes != want || u.Entries != keys-10 {
		t.Fatalf("Usage = %+v, %v; want %d bytes in %d entries", u, err, want, keys-10)
	}

	// A condition on the version of a key written long ago, and on one
	// deleted: both decided against what is stored.
	v, found, err := s.GetVersioned(ctx, "p", key(keys-1))
	if err != nil || !found {
		t.Fatal(found, err)
	}
	if _, err := s.SetIf(ctx, "p", key(keys-1), []byte("333"), 0, store.IfVersion(v.Version)); err != nil {
		t.Fatalf("SetIf with the stored version = %v", err)
	}
	if _, err := s.SetIf(ctx, "p", key(0), []byte("x"), 0, store.IfVersion(v.Version)); err == nil {
		t.Fatal("SetIf on a deleted key with a version succeeded")
	}

	if n, err := s.Clear(ctx, "p"); err != nil || n != keys-10 {
		t.Fatalf("Clear = %d, %v; want %d", n, err, keys-10)
	}
	if err := s.Set(ctx, "p", key(keys-1), []byte("4444"), 0); err != nil {
		t.Fatal(err)
	}
	if u, err := s.Usage(ctx, "p"); err != nil || u.Entries != 1 || u.Bytes != int64(len(key(0))+4) {
		t.Fatalf("Usage after Clear and one Set = %+v, %v; want one entry", u, err)
	}
}

// TestRecentKeysBoundedInBytes: what the committer remembers is bounded in
// bytes, not only in keys, so a project writing keys of the largest size
// does not grow the daemon by tens of MiB; writes of long keys still count
// usage exactly, from Pebble.
func TestRecentKeysBoundedInBytes(t *testing.T) {
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "kv"), SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	long := func(i int) string { return fmt.Sprintf("%0*d", store.DefaultMaxKeyBytes, i) }
	items := make([]store.Item, 0, 500)
	for i := range maxRecent {
		items = append(items, store.Item{Key: long(i), Value: []byte("v")})
		if len(items) == cap(items) || i == maxRecent-1 {
			if err := s.SetMany(ctx, "p", items); err != nil {
				t.Fatal(err)
			}
			items = items[:0]
		}
	}
	held := 0
	for k := range s.recent {
		held += len(k)
	}
	const limit = 16 << 20
	if held > limit {
		t.Errorf("the committer remembers %d MiB of keys, want at most %d MiB", held>>20, limit>>20)
	}
	if err := s.Set(ctx, "p", long(0), []byte("vvv"), 0); err != nil {
		t.Fatal(err)
	}
	want := int64(maxRecent)*int64(store.DefaultMaxKeyBytes+1) + 2
	if u, err := s.Usage(ctx, "p"); err != nil || u.Bytes != want || u.Entries != maxRecent {
		t.Fatalf("Usage = %+v, %v; want %d bytes in %d entries", u, err, want, maxRecent)
	}
}
