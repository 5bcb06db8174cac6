package pebble

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/kvsidecar/kvsidecar/store"
)

// waitApplied waits until Pebble itself shows key, i.e. until the batch
// that writes it is applied (published), synced or not. It polls: the
// tests assert on what is visible, never on how long anything took.
func waitApplied(t *testing.T, s *Store, key []byte) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, closer, err := s.db.Get(key)
		if err == nil {
			closer.Close()
			return
		}
		if !errors.Is(err, pebble.ErrNotFound) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the write of %q was never applied", key)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPipelinedReadsWaitForTheLogSync: with a pipeline, the committer
// applies the next batch while a batch's log sync is held, so two batches
// are in Pebble's memtable, visible to a read of the DB, and neither is
// synced. A read of the store must see neither and no caller may have its
// answer (a Set's nor a Do's); once the sync goes on, both are answered
// and visible. A third write waits in the queue: two batches at most are
// in flight.
func TestPipelinedReadsWaitForTheLogSync(t *testing.T) {
	fs := &heldSyncs{FS: vfs.Default, held: make(chan struct{}), release: make(chan struct{})}
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "kv"), SweepInterval: -1, PipelineDepth: 2, fs: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()

	fs.hold()
	first := make(chan error, 1)
	go func() { first <- s.Set(ctx, "p", "a", []byte("1"), 0) }()
	select {
	case <-fs.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the first Set never reached its log sync")
	}
	// The second batch, a write of Do, is applied while the first syncs.
	second := make(chan *store.Op, 1)
	s.Do([]*store.Op{{Kind: store.OpSet, Project: "p", Key: "b", Value: []byte("2"), Done: func(op *store.Op) { second <- op }}})
	waitApplied(t, s, dataKey("p", []byte("b")))
	// The third waits for a slot of the pipeline, in the queue.
	third := make(chan error, 1)
	go func() { third <- s.Set(ctx, "p", "c", []byte("3"), 0) }()
	waitQueued(t, s, 1)

	for _, k := range []string{"a", "b"} {
		if _, found, err := s.Get(ctx, "p", k); err != nil || found {
			t.Errorf("Get(%s) during the log sync = found %v, %v; want the unsynced write invisible", k, found, err)
		}
	}
	if u, err := s.Usage(ctx, "p"); err != nil || u.Entries != 0 {
		t.Errorf("Usage during the log sync = %+v, %v; want no entries", u, err)
	}
	select {
	case err := <-first:
		t.Fatalf("the first Set was answered (%v) before its log sync", err)
	case op := <-second:
		t.Fatalf("the Do was answered (%v) before its log sync", op.Err)
	default:
	}
	if n := s.queue.Len(); n != 1 {
		t.Errorf("%d writes queued, want the third waiting for a slot", n)
	}

	close(fs.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if op := <-second; op.Err != nil || op.Version == 0 {
		t.Fatalf("the Do = version %d, %v", op.Version, op.Err)
	}
	if err := <-third; err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"a": "1", "b": "2", "c": "3"} {
		if v, found, err := s.Get(ctx, "p", k); err != nil || !found || string(v) != want {
			t.Fatalf("Get(%s) after the writes returned = %q, %v, %v; want %s", k, v, found, err, want)
		}
	}
}

// TestPipelinedCloseWaitsForTheSync: Close with a batch in flight (applied,
// its log sync held) returns only after that batch is synced and answered,
// and the write is there after a reopen.
func TestPipelinedCloseWaitsForTheSync(t *testing.T) {
	fs := &heldSyncs{FS: vfs.Default, held: make(chan struct{}), release: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "kv")
	s, err := Open(context.Background(), Config{Path: path, SweepInterval: -1, PipelineDepth: 2, fs: fs})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fs.hold()
	set := make(chan error, 1)
	go func() { set <- s.Set(ctx, "p", "k", []byte("v"), 0) }()
	<-fs.held
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	// Close may not be done while the sync is held; this cannot prove it
	// waits, the checks after the release do.
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a batch waited for its log sync", err)
	case err := <-set:
		t.Fatalf("the Set was answered (%v) before its log sync", err)
	default:
	}
	close(fs.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	// Close returned after the completer ended: the answer is there.
	select {
	case err := <-set:
		if err != nil {
			t.Fatalf("Set = %v", err)
		}
	default:
		t.Fatal("Close returned before the batch in flight was answered")
	}
	s, err = Open(ctx, Config{Path: path, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, found, err := s.Get(ctx, "p", "k"); err != nil || !found || string(v) != "v" {
		t.Fatalf("Get after reopen = %q, %v, %v; want v", v, found, err)
	}
}

// TestPipelinedOrder: the writes of one project submitted one after the
// other, through Do and through Set, many batches in flight, are answered
// in the order they were submitted, with increasing versions, and the last
// write of a key is what stays.
func TestPipelinedOrder(t *testing.T) {
	for _, depth := range []int{1, 2, 4} {
		t.Run("depth="+strconv.Itoa(depth), func(t *testing.T) {
			s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "kv"), SweepInterval: -1, PipelineDepth: depth, ProjectQueueShare: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			const n = 2000
			// At most window ops wait at once, within the queue's capacity.
			const window = 500
			slots := make(chan struct{}, window)
			var mu sync.Mutex
			var order []int
			var versions []uint64
			all := make(chan struct{})
			ops := make([]*store.Op, n)
			for i := range ops {
				ops[i] = &store.Op{Kind: store.OpSet, Project: "p", Key: "k" + strconv.Itoa(i%7), Value: []byte(strconv.Itoa(i)),
					Done: func(op *store.Op) {
						if op.Err != nil {
							t.Errorf("op %d: %v", i, op.Err)
						}
						<-slots
						mu.Lock()
						order = append(order, i)
						versions = append(versions, op.Version)
						if len(order) == n {
							close(all)
						}
						mu.Unlock()
					}}
			}
			// Another project's Sets run alongside, through Submit.
			other := make(chan error, 1)
			go func() {
				var last uint64
				for i := range 200 {
					v, err := s.SetIf(ctx, "q", "k", []byte(strconv.Itoa(i)), 0, store.Cond{})
					if err == nil && v <= last {
						err = errors.New("a later Set got an older version")
					}
					if err != nil {
						other <- err
						return
					}
					last = v
				}
				other <- nil
			}()
			for i := range ops {
				slots <- struct{}{}
				s.Do(ops[i : i+1])
			}
			<-all
			if err := <-other; err != nil {
				t.Fatal(err)
			}
			for i := range order {
				if order[i] != i {
					t.Fatalf("answer %d was op %d's: answers out of order", i, order[i])
				}
				if i > 0 && versions[i] <= versions[i-1] {
					t.Fatalf("op %d has version %d after op %d's %d", i, versions[i], i-1, versions[i-1])
				}
			}
			for k := range 7 {
				last := n - 1 - (n-1-k)%7
				if v, _, err := s.Get(ctx, "p", "k"+strconv.Itoa(k)); err != nil || string(v) != strconv.Itoa(last) {
					t.Fatalf("Get(k%d) = %q, %v; want the last write, %d", k, v, err, last)
				}
			}
		})
	}
}

// failingSyncs is a filesystem whose log syncs fail once failing is set.
type failingSyncs struct {
	vfs.FS
	mu      sync.Mutex
	failing bool
}

var errSyncFailed = errors.New("injected log sync failure")

func (f *failingSyncs) fail() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = true
}

func (f *failingSyncs) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		return errSyncFailed
	}
	return nil
}

func (f *failingSyncs) wrap(name string, file vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return file, err
	}
	return &failingFile{File: file, fs: f}, nil
}

func (f *failingSyncs) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.Create(name, c)
	return f.wrap(name, file, err)
}

func (f *failingSyncs) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.ReuseForWrite(oldname, newname, c)
	return f.wrap(newname, file, err)
}

func (f *failingSyncs) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.OpenReadWrite(name, c, opts...)
	return f.wrap(name, file, err)
}

type failingFile struct {
	vfs.File
	fs *failingSyncs
}

func (f *failingFile) Sync() error {
	if err := f.fs.err(); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *failingFile) SyncData() error {
	if err := f.fs.err(); err != nil {
		return err
	}
	return f.File.SyncData()
}

func (f *failingFile) SyncTo(n int64) (bool, error) {
	if err := f.fs.err(); err != nil {
		return false, err
	}
	return f.File.SyncTo(n)
}

// TestFailedLogSyncStopsWrites: a write whose log sync fails is not
// answered as written; the store then refuses every write, Do's and
// Submit's, with ErrUnavailable (they would build on a write the log may
// not hold), and Ping says so, while reads go on on what was synced.
func TestFailedLogSyncStopsWrites(t *testing.T) {
	for _, depth := range []int{1, 2} {
		t.Run("depth="+strconv.Itoa(depth), func(t *testing.T) {
			fs := &failingSyncs{FS: vfs.Default}
			s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "kv"), SweepInterval: -1, PipelineDepth: depth, fs: fs})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close() // reports the log's failure: not checked
			ctx := context.Background()
			if err := s.Set(ctx, "p", "before", []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
			fs.fail()
			if err := s.Set(ctx, "p", "lost", []byte("v"), 0); !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, errSyncFailed) {
				t.Fatalf("Set with a failing log sync = %v, want ErrUnavailable with the sync's error", err)
			}
			if err := s.Set(ctx, "p", "after", []byte("v"), 0); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("Set after a failed log sync = %v, want ErrUnavailable", err)
			}
			done := make(chan *store.Op, 1)
			s.Do([]*store.Op{{Kind: store.OpDelete, Project: "p", Key: "before", Done: func(op *store.Op) { done <- op }}})
			if op := <-done; !errors.Is(op.Err, store.ErrUnavailable) {
				t.Fatalf("a Do delete after a failed log sync = %v, want ErrUnavailable", op.Err)
			}
			if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
				t.Errorf("Ping after a failed log sync = %v, want ErrUnavailable", err)
			}
			if v, found, err := s.Get(ctx, "p", "before"); err != nil || !found || string(v) != "v" {
				t.Errorf("Get(before) = %q, %v, %v; want the synced write", v, found, err)
			}
			if _, found, err := s.Get(ctx, "p", "lost"); err != nil || found {
				t.Errorf("Get(lost) = found %v, %v; want the unsynced write invisible", found, err)
			}
		})
	}
}
