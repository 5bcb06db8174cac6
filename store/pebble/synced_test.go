package pebble

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// heldSyncs is a filesystem whose log files' syncs can be held: a test
// stops a commit between Pebble's publish of the batch and its log sync.
type heldSyncs struct {
	vfs.FS
	mu      sync.Mutex
	holding bool
	held    chan struct{} // closed when a sync is being held
	release chan struct{} // close to let it go on
}

func (h *heldSyncs) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return &heldFile{File: f, h: h}, nil
}

func (h *heldSyncs) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := h.FS.Create(name, c)
	return h.wrap(name, f, err)
}

func (h *heldSyncs) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := h.FS.ReuseForWrite(oldname, newname, c)
	return h.wrap(newname, f, err)
}

func (h *heldSyncs) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := h.FS.OpenReadWrite(name, c, opts...)
	return h.wrap(name, f, err)
}

// hold makes the next log sync wait for release.
func (h *heldSyncs) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holding = true
}

func (h *heldSyncs) wait() {
	h.mu.Lock()
	hold := h.holding
	h.holding = false
	h.mu.Unlock()
	if hold {
		close(h.held)
		<-h.release
	}
}

type heldFile struct {
	vfs.File
	h *heldSyncs
}

func (f *heldFile) Sync() error     { f.h.wait(); return f.File.Sync() }
func (f *heldFile) SyncData() error { f.h.wait(); return f.File.SyncData() }
func (f *heldFile) SyncTo(n int64) (bool, error) {
	f.h.wait()
	return f.File.SyncTo(n)
}

// TestReadsWaitForTheLogSync: while a batch's log sync has not returned,
// its writes are in Pebble's memtable and visible to a read of the DB; a
// read of the store must not see them (a crash could still lose them), and
// must see them once the write is answered.
func TestReadsWaitForTheLogSync(t *testing.T) {
	fs := &heldSyncs{FS: vfs.Default, held: make(chan struct{}), release: make(chan struct{})}
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "kv"), SweepInterval: -1, fs: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()

	fs.hold()
	done := make(chan error, 1)
	go func() { done <- s.Set(ctx, "p", "k", []byte("v"), 0) }()
	select {
	case <-fs.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the Set never reached its log sync")
	}
	// Pebble itself shows the write already: what the store must hide.
	if _, closer, err := s.db.Get(dataKey("p", []byte("k"))); err != nil {
		t.Logf("Pebble does not show the unsynced write (%v); the check below proves less", err)
	} else {
		closer.Close()
	}
	if _, found, err := s.Get(ctx, "p", "k"); err != nil || found {
		t.Errorf("Get during the log sync = found %v, %v; want the unsynced write invisible", found, err)
	}
	if u, err := s.Usage(ctx, "p"); err != nil || u.Entries != 0 {
		t.Errorf("Usage during the log sync = %+v, %v; want no entries", u, err)
	}
	close(fs.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v, found, err := s.Get(ctx, "p", "k"); err != nil || !found || string(v) != "v" {
		t.Fatalf("Get after the Set returned = %q, %v, %v; want v", v, found, err)
	}
}
