package pebble

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// isDiskFull reports whether err is the store's refusal for a full disk.
func isDiskFull(err error) bool {
	return errors.Is(err, store.ErrUnavailable) && strings.Contains(err.Error(), "disk is full")
}

// fill sets 64 KiB values in project until the store refuses one for want
// of space, and returns the keys it stored.
func fill(t *testing.T, s *Store, project string) []string {
	t.Helper()
	var keys []string
	value := make([]byte, 64<<10)
	for i := 0; ; i++ {
		key := fmt.Sprintf("k%05d", i)
		err := s.Set(context.Background(), project, key, value, 0)
		if err != nil {
			if !isDiskFull(err) {
				t.Fatalf("Set on a filling disk = %v, want ErrUnavailable saying the disk is full", err)
			}
			break
		}
		keys = append(keys, key)
		if i > 100_000 {
			t.Fatal("the disk never filled")
		}
	}
	if len(keys) == 0 {
		t.Fatal("the disk was full before the first write")
	}
	return keys
}

// fillOutside fills what is left of the disk of dir with a file of its own,
// as another program would, and returns the file's path.
func fillOutside(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

// TestStoreStopsBeforeTheDiskIsFull: writes that add data are refused while
// the free space is short of what Pebble needs to go on, before any write
// of Pebble's fails (which it does not survive); deletes still work, and
// the store serves after a restart.
func TestStoreStopsBeforeTheDiskIsFull(t *testing.T) {
	dir := smallDisk(t, 64<<20)
	cfg := Config{Path: filepath.Join(dir, "kv"), SweepInterval: -1, DiskReserve: 4 << 20}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys := fill(t, s, "p")
	if existed, err := s.Delete(ctx, "p", keys[0]); err != nil || !existed {
		t.Fatalf("Delete on the filled disk = %v, %v; want it to work", existed, err)
	}
	if err := s.Set(ctx, "p", "more", make([]byte, 64<<10), 0); !isDiskFull(err) {
		t.Fatalf("Set on the filled disk = %v, want a disk-full error", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open after filling the disk: %v", err)
	}
	defer s.Close()
	if u, err := s.Usage(ctx, "p"); err != nil || u.Entries != int64(len(keys)-1) {
		t.Fatalf("Usage after reopen = %+v, %v; want %d entries", u, err, len(keys)-1)
	}
}

// TestDeleteOnFullDisk fills the disk outside the store, as another program
// would, then checks that what an operator does next works: Delete,
// DeleteMany and Clear (the reserve is released for them), and Sets once
// the other program's file is gone, with the reserve taken back.
func TestDeleteOnFullDisk(t *testing.T) {
	dir := smallDisk(t, 64<<20)
	path := filepath.Join(dir, "kv")
	s, err := Open(context.Background(), Config{Path: path, SweepInterval: -1, DiskReserve: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Set(ctx, "other", "x", make([]byte, 64<<10), 0); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for i := range 50 {
		keys = append(keys, fmt.Sprintf("k%02d", i))
		if err := s.Set(ctx, "p", keys[i], make([]byte, 4<<10), 0); err != nil {
			t.Fatal(err)
		}
	}
	filler := fillOutside(t, dir)
	if err := s.Set(ctx, "p", "more", make([]byte, 64<<10), 0); !isDiskFull(err) {
		t.Fatalf("Set on the full disk = %v, want a disk-full error", err)
	}

	existed, err := s.Delete(ctx, "p", keys[0])
	if err != nil || !existed {
		t.Fatalf("Delete on the full disk = %v, %v; want it to work", existed, err)
	}
	if _, err := os.Stat(path + ".reserve"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the reserve file is still there after deleting on a full disk (%v)", err)
	}
	flags, err := s.DeleteMany(ctx, "p", keys[1:3])
	if err != nil || !flags[0] || !flags[1] {
		t.Fatalf("DeleteMany on the full disk = %v, %v; want it to work", flags, err)
	}
	n, err := s.Clear(ctx, "p")
	if err != nil || n != int64(len(keys)-3) {
		t.Fatalf("Clear on the full disk = %d, %v; want %d entries removed", n, err, len(keys)-3)
	}
	if found, _ := s.Has(ctx, "other", "x"); !found {
		t.Fatal("another project's entry is gone")
	}
	if err := s.Set(ctx, "p", "still", []byte("v"), 0); !isDiskFull(err) {
		t.Fatalf("Set while the disk is still full = %v, want a disk-full error", err)
	}

	// The other program's file goes: writes are accepted again, and the
	// committer takes the reserve back (it retries once a second).
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if err := s.Set(ctx, "p", fmt.Sprintf("after%d", i), []byte("v"), 0); err != nil {
			t.Fatalf("Set after the disk has room again = %v", err)
		}
		if _, err := os.Stat(path + ".reserve"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reserve was not taken back once the disk had room")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFullDiskWithoutReserve is the same full disk without a reserve: a
// Delete is refused too. It shows what the reserve is for.
func TestFullDiskWithoutReserve(t *testing.T) {
	dir := smallDisk(t, 64<<20)
	s, err := Open(context.Background(), Config{Path: filepath.Join(dir, "kv"), SweepInterval: -1, DiskReserve: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Set(ctx, "p", "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	fillOutside(t, dir)
	if _, err := s.Delete(ctx, "p", "k"); !isDiskFull(err) {
		t.Fatalf("Delete on a full disk without a reserve = %v, want a disk-full error", err)
	}
}
