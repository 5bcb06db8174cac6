package pebble_test

import (
	"context"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/internal/bolttest"
	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/boltdump"
	"github.com/kvsidecar/kvsidecar/store/pebble"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// boltFile writes a bbolt file as a daemon of the last release with one
// would have left it: entries with and without TTLs, one about to expire,
// an integer, a quota override, a stored default quota, and in project p a
// version counter above every entry's (its last write set a key it then
// deleted). It returns each entry's versioned value and p's counter.
func boltFile(t *testing.T, path string, clock *storetest.Clock) (map[string]store.Versioned, uint64) {
	t.Helper()
	now := clock.Now().UnixMilli()
	const last = 7
	p := []bolttest.Entry{
		{Key: "a", Value: []byte("alpha"), Version: 1},
		{Key: "ttl", Value: []byte("expiring"), Expiry: now + time.Hour.Milliseconds(), Version: 2},
		{Key: "m1", Value: []byte("1"), Version: 3},
		{Key: "m2", Value: []byte(""), Version: 3},
		{Key: "soon", Value: []byte("x"), Expiry: now + time.Second.Milliseconds(), Version: 5},
	}
	q := []bolttest.Entry{{Key: "n", Value: []byte("41"), Version: 1}}
	bolttest.Write(t, path, bolttest.File{DefaultQuota: 7000, Projects: []bolttest.Project{
		{Name: "p", Version: last, Entries: slices.Values(p)},
		{Name: "q", Quota: 5000, Entries: slices.Values(q)},
	}})
	want := map[string]store.Versioned{}
	for name, entries := range map[string][]bolttest.Entry{"p": p, "q": q} {
		for _, e := range entries {
			want[name+"/"+e.Key] = store.Versioned{Value: e.Value, Version: e.Version}
		}
	}
	return want, last
}

// entries is n entries of size bytes under keys k000000, k000001, …, each
// value starting with the byte of its index.
func entries(n, size int) iter.Seq[bolttest.Entry] {
	return func(yield func(bolttest.Entry) bool) {
		value := make([]byte, size)
		for i := range n {
			if size > 0 {
				value[0] = byte(i)
			}
			if !yield(bolttest.Entry{Key: fmt.Sprintf("k%06d", i), Value: value, Version: uint64(i + 1)}) {
				return
			}
		}
	}
}

// bigFile writes a bbolt file of one project p of n entries of size bytes.
func bigFile(t *testing.T, path string, n, size int) {
	t.Helper()
	bolttest.Write(t, path, bolttest.File{Projects: []bolttest.Project{{Name: "p", Entries: entries(n, size)}}})
}

func TestMigrateBolt(t *testing.T) {
	dir := t.TempDir()
	from, to := filepath.Join(dir, "kv.db"), filepath.Join(dir, "kv")
	clock := storetest.NewClock()
	want, last := boltFile(t, from, clock)
	if err := os.WriteFile(from+".reserve", make([]byte, 1024), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cfg := pebble.Config{Path: to, Now: clock.Now, SweepInterval: -1}

	res, err := pebble.MigrateBolt(ctx, from, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Migrated || res.Projects != 2 || res.Entries != 6 {
		t.Fatalf("MigrateBolt = %+v, want 2 projects and 6 entries migrated", res)
	}
	if _, err := os.Stat(from); !os.IsNotExist(err) {
		t.Fatalf("the bbolt file is still at %s (%v)", from, err)
	}
	if _, err := os.Stat(from + pebble.MigratedSuffix); err != nil {
		t.Fatalf("the bbolt file was not renamed: %v", err)
	}
	if _, err := os.Stat(from + ".reserve"); !os.IsNotExist(err) {
		t.Fatalf("bbolt's reserve file is left (%v)", err)
	}

	s := open(t, cfg)
	for pk, w := range want {
		project, key, _ := strings.Cut(pk, "/")
		v, found, err := s.GetVersioned(ctx, project, key)
		if err != nil || !found || string(v.Value) != string(w.Value) || v.Version != w.Version {
			t.Errorf("GetVersioned(%s) after migration = %q v%d, %v, %v; want %q v%d", pk, v.Value, v.Version, found, err, w.Value, w.Version)
		}
	}
	if found, _ := s.Has(ctx, "p", "gone"); found {
		t.Error("a deleted key came back")
	}
	if ttl, found, err := s.TTL(ctx, "p", "ttl"); err != nil || !found || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("TTL(ttl) = %v, %v, %v; want about an hour", ttl, found, err)
	}
	if u, _ := s.Usage(ctx, "q"); u.Quota != 5000 || u.Entries != 1 {
		t.Errorf("Usage(q) = %+v, want its override 5000 and 1 entry", u)
	}
	if u, _ := s.Usage(ctx, "new"); u.Quota != 7000 {
		t.Errorf("default quota = %d, want 7000 from the bbolt file", u.Quota)
	}
	pu, err := s.Usage(ctx, "p")
	if err != nil || pu.Entries != 5 || pu.Bytes != int64(len("a")+5+len("ttl")+8+len("m1")+1+len("m2")+len("soon")+1) {
		t.Errorf("Usage(p) = %+v, %v; want 5 entries and their bytes", pu, err)
	}
	// The versions go on after the last one given, including the deleted
	// key's: a client holding it must see its condition fail.
	v, err := s.SetIf(ctx, "p", "gone", []byte("new"), 0, store.Cond{})
	if err != nil || v <= last {
		t.Errorf("SetIf after migration = v%d, %v; want a version after %d", v, err, last)
	}
	if n, err := s.Incr(ctx, "q", "n", 1, 0); err != nil || n != 42 {
		t.Errorf("Incr(q/n) = %d, %v; want 42", n, err)
	}
	clock.Advance(2 * time.Second)
	if found, _ := s.Has(ctx, "p", "soon"); found {
		t.Error("an entry past its migrated expiry is visible")
	}
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v; want the expired migrated entry swept", n, err)
	}

	// Run again (a restart): nothing to do.
	if res, err := pebble.MigrateBolt(ctx, from, cfg); err != nil || res.Migrated {
		t.Fatalf("MigrateBolt again = %+v, %v; want nothing done", res, err)
	}
}

// TestMigrateBoltLayout1: a file of the layout before versions (the
// records held only an expiry and the value) migrates with a version for
// each entry, and new writes get versions after them.
func TestMigrateBoltLayout1(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	from, to := filepath.Join(dir, "kv.db"), filepath.Join(dir, "kv")
	bolttest.Write(t, from, bolttest.File{Layout: 1, Projects: []bolttest.Project{{Name: "p", Entries: slices.Values([]bolttest.Entry{
		{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("22")},
	})}}})
	cfg := pebble.Config{Path: to, SweepInterval: -1}
	if res, err := pebble.MigrateBolt(ctx, from, cfg); err != nil || !res.Migrated || res.Entries != 2 {
		t.Fatalf("MigrateBolt = %+v, %v; want 2 entries migrated", res, err)
	}
	s := open(t, cfg)
	seen := map[uint64]bool{}
	for k, want := range map[string]string{"a": "1", "b": "22"} {
		v, found, err := s.GetVersioned(ctx, "p", k)
		if err != nil || !found || string(v.Value) != want || v.Version == 0 {
			t.Fatalf("GetVersioned(%q) after the migration = (%q, version %d, %v, %v), want %q with a version", k, v.Value, v.Version, found, err, want)
		}
		seen[v.Version] = true
	}
	if len(seen) != 2 {
		t.Fatalf("the migrated entries share a version: %v", seen)
	}
	if u, err := s.Usage(ctx, "p"); err != nil || u.Bytes != 5 || u.Entries != 2 {
		t.Fatalf("Usage after the migration = (%+v, %v), want 5 bytes in 2 entries", u, err)
	}
	v, err := s.SetIf(ctx, "p", "c", []byte("3"), 0, store.IfAbsent())
	if err != nil {
		t.Fatal(err)
	}
	for old := range seen {
		if v <= old {
			t.Fatalf("a write after the migration got version %d, not above the migrated %d", v, old)
		}
	}
}

// TestMigrateBoltAfterCrash: a restart after a crash at any point of a
// migration ends migrated.
func TestMigrateBoltAfterCrash(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()

	t.Run("during the copy", func(t *testing.T) {
		dir := t.TempDir()
		from, to := filepath.Join(dir, "kv.db"), filepath.Join(dir, "kv")
		want, _ := boltFile(t, from, clock)
		// What a crash leaves: a partial copy beside the directory.
		if err := os.MkdirAll(to+".migrating", 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to+".migrating", "000001.log"), []byte("torn"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := pebble.Config{Path: to, Now: clock.Now, SweepInterval: -1}
		if res, err := pebble.MigrateBolt(ctx, from, cfg); err != nil || !res.Migrated {
			t.Fatalf("MigrateBolt = %+v, %v", res, err)
		}
		if _, err := os.Stat(to + ".migrating"); !os.IsNotExist(err) {
			t.Fatalf("the partial copy is left (%v)", err)
		}
		s := open(t, cfg)
		if v, found, err := s.GetVersioned(ctx, "p", "a"); err != nil || !found || v.Version != want["p/a"].Version {
			t.Fatalf("GetVersioned(p/a) = %+v, %v, %v", v, found, err)
		}
	})

	t.Run("before the bbolt file's rename", func(t *testing.T) {
		dir := t.TempDir()
		from, to := filepath.Join(dir, "kv.db"), filepath.Join(dir, "kv")
		boltFile(t, from, clock)
		cfg := pebble.Config{Path: to, Now: clock.Now, SweepInterval: -1}
		if _, err := pebble.MigrateBolt(ctx, from, cfg); err != nil {
			t.Fatal(err)
		}
		// What a crash between the two renames leaves.
		if err := os.Rename(from+pebble.MigratedSuffix, from); err != nil {
			t.Fatal(err)
		}
		if res, err := pebble.MigrateBolt(ctx, from, cfg); err != nil || !res.Migrated {
			t.Fatalf("MigrateBolt = %+v, %v; want the rename finished", res, err)
		}
		if _, err := os.Stat(from); !os.IsNotExist(err) {
			t.Fatalf("the bbolt file is still there (%v)", err)
		}
	})
}

func TestMigrateBoltRefuses(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()

	t.Run("a directory not made from the file", func(t *testing.T) {
		dir := t.TempDir()
		from, to := filepath.Join(dir, "kv.db"), filepath.Join(dir, "kv")
		boltFile(t, from, clock)
		s := open(t, pebble.Config{Path: to})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		_, err := pebble.MigrateBolt(ctx, from, pebble.Config{Path: to})
		if err == nil || !strings.Contains(err.Error(), "move one of them away") {
			t.Fatalf("MigrateBolt = %v, want a refusal saying to move one away", err)
		}
	})

	t.Run("not a bbolt file", func(t *testing.T) {
		dir := t.TempDir()
		from := filepath.Join(dir, "kv.db")
		if err := os.WriteFile(from, []byte(strings.Repeat("not bbolt ", 100)), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := pebble.MigrateBolt(ctx, from, pebble.Config{Path: filepath.Join(dir, "kv")})
		if err == nil || !strings.Contains(err.Error(), "not a bbolt file") {
			t.Fatalf("MigrateBolt = %v, want a refusal naming the file as not bbolt", err)
		}
	})

	t.Run("a truncated bbolt file", func(t *testing.T) {
		dir := t.TempDir()
		from := filepath.Join(dir, "kv.db")
		bigFile(t, from, 3000, 500)
		// What a copy cut short leaves: bbolt reading past the end of its
		// map faults, which no recover catches.
		fi, err := os.Stat(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(from, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
		_, err = pebble.MigrateBolt(ctx, from, pebble.Config{Path: filepath.Join(dir, "kv")})
		if err == nil || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("MigrateBolt of a truncated file = %v, want a refusal naming it truncated", err)
		}
		if after, err := os.Stat(from); err != nil || after.Size() != fi.Size()/2 {
			t.Fatalf("the truncated file changed: %v, %v", after, err)
		}
	})

	t.Run("a bbolt file with a garbled page", func(t *testing.T) {
		dir := t.TempDir()
		from, to := filepath.Join(dir, "kv.db"), filepath.Join(dir, "kv")
		bigFile(t, from, 3000, 500)
		junk := make([]byte, 64<<10)
		for i := range junk {
			junk[i] = byte(i * 7)
		}
		f, err := os.OpenFile(from, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(junk, 5*4096); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// bbolt panics on the page; the migration must say the file is
		// corrupt instead of taking the daemon down.
		_, err = pebble.MigrateBolt(ctx, from, pebble.Config{Path: to})
		if err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Fatalf("MigrateBolt of a garbled file = %v, want a refusal naming it corrupt", err)
		}
		for _, path := range []string{to, to + ".migrating"} {
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("%s is left after a refused migration (%v)", filepath.Base(path), err)
			}
		}
		if _, err := os.Stat(from); err != nil {
			t.Fatalf("the bbolt file is gone after a refused migration: %v", err)
		}
	})

	t.Run("no room for the copy", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("mounting a small tmpfs needs root")
		}
		dir := t.TempDir()
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", 48<<20)); err != nil {
			t.Skipf("cannot mount a tmpfs (%v)", err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(dir, 0) })
		from := filepath.Join(dir, "kv.db")
		bigFile(t, from, 200, 64<<10)
		_, err := pebble.MigrateBolt(ctx, from, pebble.Config{Path: filepath.Join(dir, "kv")})
		if err == nil || !strings.Contains(err.Error(), "not enough disk space") || !strings.Contains(err.Error(), "needs") {
			t.Fatalf("MigrateBolt = %v, want a refusal saying how much space it needs", err)
		}
		if _, err := os.Stat(from); err != nil {
			t.Fatalf("the bbolt file is gone after a refused migration: %v", err)
		}
	})
}

// TestMigrateBoltAfterRollback: a bbolt file written after a migration (a
// rollback to the last release made a new kv.db and served writes from it)
// is not taken for the migrated one: migrating again refuses, and neither
// the new file nor the renamed original is overwritten.
func TestMigrateBoltAfterRollback(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	dir := t.TempDir()
	from, to := filepath.Join(dir, "kv.db"), filepath.Join(dir, "kv")
	want, _ := boltFile(t, from, clock)
	cfg := pebble.Config{Path: to, Now: clock.Now, SweepInterval: -1}
	if _, err := pebble.MigrateBolt(ctx, from, cfg); err != nil {
		t.Fatal(err)
	}
	// The last release starts on the data directory: a new kv.db, and a
	// write it acknowledged.
	bolttest.Write(t, from, bolttest.File{Projects: []bolttest.Project{{Name: "p", Version: 1, Entries: slices.Values([]bolttest.Entry{
		{Key: "after-rollback", Value: []byte("acknowledged"), Version: 1},
	})}}})

	_, err := pebble.MigrateBolt(ctx, from, cfg)
	if err == nil || !strings.Contains(err.Error(), "move one of them away") {
		t.Fatalf("MigrateBolt of a bbolt file written after the migration = %v, want a refusal", err)
	}
	// Both bbolt files are as they were: the new one with its write, the
	// renamed original with the migrated data.
	for path, key := range map[string]string{from: "after-rollback", from + pebble.MigratedSuffix: "a"} {
		err := boltdump.ReadDump(path, time.Second, func(d *boltdump.Dump) error {
			found := false
			err := d.Entries("p", func(e boltdump.Entry) error {
				found = found || string(e.Key) == key
				return nil
			})
			if err == nil && !found {
				err = fmt.Errorf("no key %q", key)
			}
			return err
		})
		if err != nil {
			t.Errorf("%s after the refused migration: %v", filepath.Base(path), err)
		}
	}
	s := open(t, cfg)
	if v, found, err := s.GetVersioned(ctx, "p", "a"); err != nil || !found || v.Version != want["p/a"].Version {
		t.Errorf("GetVersioned(p/a) = %+v, %v, %v; want the migrated entry", v, found, err)
	}
}

// TestMigrateBoltTwoProcesses: two daemons started at once on one data
// directory both find the bbolt file to migrate. The second must neither
// remove nor write into the first one's copy: one migrates, the other
// waits or fails, and the directory holds every entry.
func TestMigrateBoltTwoProcesses(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	from, to := filepath.Join(dir, "kv.db"), filepath.Join(dir, "kv")
	const n = 20_000
	bigFile(t, from, n, 100)

	cfg := pebble.Config{Path: to, SweepInterval: -1, LockTimeout: 30 * time.Second}
	first := make(chan error, 1)
	go func() {
		_, err := pebble.MigrateBolt(ctx, from, cfg)
		first <- err
	}()
	// The second starts once the first is copying.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := os.Stat(to + ".migrating"); err == nil {
			break
		}
		if _, err := os.Stat(to); err == nil || time.Now().After(deadline) {
			t.Skip("the first migration ended before the second could start")
		}
	}
	_, err2 := pebble.MigrateBolt(ctx, from, cfg)
	err1 := <-first
	if err1 != nil && err2 != nil {
		t.Fatalf("both migrations failed: %v; %v", err1, err2)
	}
	s := open(t, pebble.Config{Path: to, SweepInterval: -1})
	if u, err := s.Usage(ctx, "p"); err != nil || u.Entries != n {
		t.Fatalf("Usage(p) after two migrations = %+v, %v; want %d entries (first: %v, second: %v)", u, err, n, err1, err2)
	}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%06d", i)
	}
	for i := 0; i < n; i += 1000 {
		values, err := s.GetMany(ctx, "p", keys[i:i+1000])
		if err != nil {
			t.Fatal(err)
		}
		for j, v := range values {
			if len(v) != 100 {
				t.Fatalf("Get(%s) after two migrations = %d bytes, want 100", keys[i+j], len(v))
			}
		}
	}
}

// TestMigrateBoltLargeValuesInBoundedMemory: a bbolt file of large values
// is copied in batches of a few MiB, not of a thousand entries whatever
// their size: the daemon's heap stays far below the file's size during the
// migration (a thousand values of 1 MiB would be a batch of a GiB, more
// than a sidecar container's memory). The file is 128 MiB, and the heap
// may not grow by as much.
func TestMigrateBoltLargeValuesInBoundedMemory(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	from, to := filepath.Join(dir, "kv.db"), filepath.Join(dir, "kv")
	const values, valueSize = 128, 1 << 20
	bigFile(t, from, values, valueSize)

	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	base := sample[0].Value.Uint64()
	var peak atomic.Uint64
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	res, err := pebble.MigrateBolt(ctx, from, pebble.Config{Path: to, SweepInterval: -1})
	close(stop)
	<-sampled
	if err != nil || !res.Migrated || res.Entries != values {
		t.Fatalf("MigrateBolt = %+v, %v", res, err)
	}
	// Pebble's memtables and block cache take about 50 MiB whatever the
	// file (85 under the race detector); a batch of every entry took 600.
	const limit = values * valueSize
	grew := peak.Load() - min(base, peak.Load())
	t.Logf("the heap grew by %d MiB during the migration of a %d MiB file", grew>>20, values*valueSize>>20)
	if grew > limit {
		t.Errorf("the heap grew by %d MiB during the migration of a %d MiB file, want at most %d MiB",
			grew>>20, values*valueSize>>20, limit>>20)
	}
	s := open(t, pebble.Config{Path: to, SweepInterval: -1})
	for _, i := range []int{0, values - 1} {
		v, found, err := s.Get(ctx, "p", fmt.Sprintf("k%06d", i))
		if err != nil || !found || len(v) != valueSize || v[0] != byte(i) {
			t.Fatalf("Get(k%06d) after the migration = %d bytes, %v, %v", i, len(v), found, err)
		}
	}
}
