package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
)

// smallDisk mounts a tmpfs of size bytes on a fresh directory and returns
// it; it is unmounted at the end of the test. It needs root (in a
// container, CAP_SYS_ADMIN) and skips otherwise.
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("cannot mount a tmpfs (%v)", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill sets values in project until the store refuses them for want of
// space — 64 KiB ones, then smaller and smaller ones, down to 16 bytes, so
// that the pages freed inside the file are used up too — and returns the
// keys it stored.
func fill(t *testing.T, s *Store, project string) []string {
	t.Helper()
	var keys []string
	for _, size := range []int{64 << 10, 4 << 10, 256, 16} {
		value := make([]byte, size)
		for i := 0; ; i++ {
			key := fmt.Sprintf("k%d-%05d", size, i)
			err := s.Set(context.Background(), project, key, value, 0)
			if err != nil {
				if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "disk is full") {
					t.Fatalf("Set on a filling disk = %v, want ErrUnavailable saying the disk is full", err)
				}
				break
			}
			keys = append(keys, key)
			if i > 100_000 {
				t.Fatal("the disk never filled")
			}
		}
	}
	if len(keys) == 0 {
		t.Fatal("the disk was full before the first write")
	}
	return keys
}

// TestDeleteOnFullDisk fills a 16 MiB tmpfs through the store until a Set
// fails, then checks that what an operator does next works: Delete,
// DeleteMany and Clear (the reserve is released for them), and Sets after
// that, in the pages the deletes freed.
func TestDeleteOnFullDisk(t *testing.T) {
	dir := smallDisk(t, 16<<20)
	path := filepath.Join(dir, "kv.db")
	s, err := Open(context.Background(), Config{Path: path, SweepInterval: -1, DiskReserve: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Set(ctx, "other", "x", make([]byte, 64<<10), 0); err != nil {
		t.Fatal(err)
	}
	keys := fill(t, s, "p")
	// Still full: a second Set is refused too.
	if err := s.Set(ctx, "p", "more", make([]byte, 64<<10), 0); err == nil || !strings.Contains(err.Error(), "disk is full") {
		t.Fatalf("Set on the full disk = %v, want a disk-full error", err)
	}

	existed, err := s.Delete(ctx, "p", keys[0])
	if err != nil || !existed {
		t.Fatalf("Delete on the full disk = %v, %v; want it to work", existed, err)
	}
	flags, err := s.DeleteMany(ctx, "p", keys[1:3])
	if err != nil || !flags[0] || !flags[1] {
		t.Fatalf("DeleteMany on the full disk = %v, %v; want it to work", flags, err)
	}
	if _, err := os.Stat(path + ".reserve"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the reserve file is still there after deleting on a full disk (%v)", err)
	}
	n, err := s.Clear(ctx, "p")
	if err != nil || n != int64(len(keys)-3) {
		t.Fatalf("Clear on the full disk = %d, %v; want %d entries removed", n, err, len(keys)-3)
	}
	if found, _ := s.Has(ctx, "other", "x"); !found {
		t.Fatal("another project's entry is gone")
	}

	// The file does not shrink, but the pages the deletes freed take new
	// data again.
	if err := s.Set(ctx, "p", "after", make([]byte, 64<<10), 0); err != nil {
		t.Fatalf("Set after the deletes = %v, want it to fit in the freed pages", err)
	}
	if _, found, err := s.Get(ctx, "p", "after"); err != nil || !found {
		t.Fatalf("Get after = %v, %v", found, err)
	}
}

// TestFullDiskWithoutReserve is the same disk without a reserve: once the
// Sets have filled it, a Delete fails too. It shows what the reserve is for.
func TestFullDiskWithoutReserve(t *testing.T) {
	dir := smallDisk(t, 16<<20)
	s, err := Open(context.Background(), Config{Path: filepath.Join(dir, "kv.db"), SweepInterval: -1, DiskReserve: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keys := fill(t, s, "p")
	if _, err := s.Delete(context.Background(), "p", keys[0]); err == nil {
		t.Fatal("Delete on a full disk without a reserve worked; the test does not fill the disk enough to show anything")
	}
}
