package bolt_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store/bolt"
)

// dumped is what ReadDump shows of a file.
type dumped struct {
	defaultQuota int64
	projects     []bolt.DumpProject
	entries      map[string]bolt.DumpEntry // project/key
}

func readDump(t *testing.T, path string) dumped {
	t.Helper()
	d := dumped{entries: map[string]bolt.DumpEntry{}}
	err := bolt.ReadDump(path, time.Second, func(dump *bolt.Dump) error {
		d.defaultQuota = dump.DefaultQuota()
		return dump.Projects(func(p bolt.DumpProject) error {
			d.projects = append(d.projects, p)
			return dump.Entries(p.Name, func(e bolt.DumpEntry) error {
				e.Key, e.Value = append([]byte(nil), e.Key...), append([]byte(nil), e.Value...)
				d.entries[p.Name+"/"+string(e.Key)] = e
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDumpShowsWhatIsStored: a dump of a file written through the store
// shows its default quota, each project's override, usage and version
// counter, and every entry with its value, expiry and version, without
// changing the file.
func TestDumpShowsWhatIsStored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	ctx := context.Background()
	s := open(t, bolt.Config{Path: path, SweepInterval: -1, Now: func() time.Time { return time.UnixMilli(1_000_000) }})
	if err := s.Set(ctx, "p", "a", []byte("alpha"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "p", "gone", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "p", "gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetQuota(ctx, "q", 5000); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDefaultQuota(ctx, 7000); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	d := readDump(t, path)
	if d.defaultQuota != 7000 {
		t.Errorf("default quota = %d, want 7000", d.defaultQuota)
	}
	want := []bolt.DumpProject{
		{Name: "p", Bytes: 6, Entries: 1, Version: 2},
		{Name: "q", Quota: 5000},
	}
	if len(d.projects) != 2 || d.projects[0] != want[0] || d.projects[1] != want[1] {
		t.Errorf("projects = %+v, want %+v", d.projects, want)
	}
	e, ok := d.entries["p/a"]
	if !ok || string(e.Value) != "alpha" || e.Expiry != 1_000_000+60_000 || e.Version != 1 || len(d.entries) != 1 {
		t.Errorf("entries = %+v, want p/a = alpha, expiring a minute after the clock, version 1", d.entries)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Error("the dump changed the file")
	}
}

// TestDumpOfLayout1 gives a file of layout 1 the versions Open's upgrade
// would: 1, 2, … in key order, with the counter after them.
func TestDumpOfLayout1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	writeLayout1(t, path, map[string]string{"a": "1", "b": "22"})
	d := readDump(t, path)
	if len(d.projects) != 1 || d.projects[0].Version != 2 || d.projects[0].Bytes != 5 {
		t.Fatalf("projects = %+v, want p with counter 2 and 5 bytes", d.projects)
	}
	if d.entries["p/a"].Version != 1 || d.entries["p/b"].Version != 2 || string(d.entries["p/b"].Value) != "22" {
		t.Fatalf("entries = %+v, want a v1, b v2 = 22", d.entries)
	}
}

func TestIsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	s := open(t, bolt.Config{Path: path})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	head, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bolt.IsFile(head[:64]) {
		t.Error("IsFile of a bbolt file = false")
	}
	if bolt.IsFile([]byte("SQLite format 3\x00 and more bytes than twenty")) {
		t.Error("IsFile of another file = true")
	}
}
