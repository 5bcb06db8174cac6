package boltdump_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/kvsidecar/kvsidecar/internal/bolttest"
	"github.com/kvsidecar/kvsidecar/store/internal/boltdump"
)

// released is testdata/release.kv.db, a file the bbolt store (store/bolt,
// as it was before its removal) wrote, its clock at unix ms
// 1,700,000,000,000, with these calls: Set p/a alpha; Set p/ttl expiring
// (TTL 1h); SetMany p m1=1, m2=""; Set p/gone; Delete p/gone; Incr q/n 41;
// SetQuota q 5000; SetDefaultQuota 7000; Set p/soon x (TTL 1s); Set
// p/last; Delete p/last. p's counter (6) is that of the deleted p/last,
// which no entry carries.
var released = bolttest.File{
	DefaultQuota: 7000,
	Projects: []bolttest.Project{
		{Name: "p", Version: 6, Entries: slices.Values([]bolttest.Entry{
			{Key: "a", Value: []byte("alpha"), Version: 1},
			{Key: "ttl", Value: []byte("expiring"), Expiry: 1_700_003_600_000, Version: 2},
			{Key: "m1", Value: []byte("1"), Version: 3},
			{Key: "m2", Value: []byte(""), Version: 3},
			{Key: "soon", Value: []byte("x"), Expiry: 1_700_000_001_000, Version: 5},
		})},
		{Name: "q", Quota: 5000, Entries: slices.Values([]bolttest.Entry{
			{Key: "n", Value: []byte("41"), Version: 1},
		})},
	},
}

// dumped is what ReadDump shows of a file.
type dumped struct {
	defaultQuota int64
	projects     []boltdump.Project
	entries      map[string]boltdump.Entry // project/key
}

func readDump(t *testing.T, path string) dumped {
	t.Helper()
	d := dumped{entries: map[string]boltdump.Entry{}}
	err := boltdump.ReadDump(path, time.Second, func(dump *boltdump.Dump) error {
		d.defaultQuota = dump.DefaultQuota()
		return dump.Projects(func(p boltdump.Project) error {
			d.projects = append(d.projects, p)
			return dump.Entries(p.Name, func(e boltdump.Entry) error {
				e.Key, e.Value = bytes.Clone(e.Key), bytes.Clone(e.Value)
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

// TestReadsAFileOfARelease: the dump of a file an earlier release wrote
// shows its default quota, each project's override, usage and version
// counter, and every entry with its value, expiry and version, without
// changing the file.
func TestReadsAFileOfARelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	before, err := os.ReadFile("testdata/release.kv.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, before, 0o600); err != nil {
		t.Fatal(err)
	}

	d := readDump(t, path)
	if d.defaultQuota != 7000 {
		t.Errorf("default quota = %d, want 7000", d.defaultQuota)
	}
	want := []boltdump.Project{
		{Name: "p", Bytes: 27, Entries: 5, Version: 6},
		{Name: "q", Bytes: 3, Entries: 1, Quota: 5000, Version: 1},
	}
	if !reflect.DeepEqual(d.projects, want) {
		t.Errorf("projects = %+v, want %+v", d.projects, want)
	}
	for _, p := range released.Projects {
		for e := range p.Entries {
			got, ok := d.entries[p.Name+"/"+e.Key]
			if !ok || !bytes.Equal(got.Value, e.Value) || got.Expiry != e.Expiry || got.Version != e.Version {
				t.Errorf("%s/%s = %q expiry %d v%d (found %v), want %q expiry %d v%d",
					p.Name, e.Key, got.Value, got.Expiry, got.Version, ok, e.Value, e.Expiry, e.Version)
			}
			delete(d.entries, p.Name+"/"+e.Key)
		}
	}
	if len(d.entries) != 0 {
		t.Errorf("entries no write left: %+v", d.entries)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the dump changed the file")
	}
}

// TestWriterWritesWhatAReleaseWrote: bolttest, which writes the migration
// tests' files, writes what the release did: its file of the same content
// dumps the same.
func TestWriterWritesWhatAReleaseWrote(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	bolttest.Write(t, path, released)
	got, want := readDump(t, path), readDump(t, "testdata/release.kv.db")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("bolttest's file dumps as\n%+v\nthe release's as\n%+v", got, want)
	}
}

// TestReadsLayout1 gives a file of layout 1 the versions the upgrade to
// layout 2 did: 1, 2, … in key order, with the counter after them.
func TestReadsLayout1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv.db")
	bolttest.Write(t, path, bolttest.File{Layout: 1, Projects: []bolttest.Project{{Name: "p", Entries: slices.Values([]bolttest.Entry{
		{Key: "b", Value: []byte("22")}, {Key: "a", Value: []byte("1"), Expiry: 5},
	})}}})
	d := readDump(t, path)
	if len(d.projects) != 1 || d.projects[0].Version != 2 || d.projects[0].Bytes != 5 || d.projects[0].Entries != 2 {
		t.Fatalf("projects = %+v, want p with counter 2 and 5 bytes in 2 entries", d.projects)
	}
	a, b := d.entries["p/a"], d.entries["p/b"]
	if a.Version != 1 || a.Expiry != 5 || string(a.Value) != "1" || b.Version != 2 || string(b.Value) != "22" {
		t.Fatalf("entries = %+v, want a v1 = 1 expiring at 5, b v2 = 22", d.entries)
	}
}

// TestRefuses: a file the reader cannot read whole is refused with what is
// wrong, before anything of it is read.
func TestRefuses(t *testing.T) {
	read := func(path string) error {
		return boltdump.ReadDump(path, time.Second, func(*boltdump.Dump) error { return nil })
	}
	release, err := os.ReadFile("testdata/release.kv.db")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		write      func(path string) error
	}{
		{"not bbolt", "not a bbolt file", func(path string) error {
			return os.WriteFile(path, []byte("SQLite format 3\x00"+strings.Repeat("and more bytes ", 100)), 0o600)
		}},
		{"empty", "not a bbolt file", func(path string) error { return os.WriteFile(path, nil, 0o600) }},
		{"truncated", "truncated", func(path string) error { return os.WriteFile(path, release[:len(release)/4], 0o600) }},
		{"a bbolt file of something else", "not a file of the embedded store", func(path string) error {
			return bboltFile(path, func(tx *bbolt.Tx) error {
				_, err := tx.CreateBucket([]byte("other"))
				return err
			})
		}},
		{"a later layout", "layout version", func(path string) error {
			return bboltFile(path, func(tx *bbolt.Tx) error {
				meta, err := tx.CreateBucket([]byte("meta"))
				if err != nil {
					return err
				}
				if _, err := tx.CreateBucket([]byte("projects")); err != nil {
					return err
				}
				return meta.Put([]byte("format"), binary.BigEndian.AppendUint64(nil, 3))
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kv.db")
			if err := tc.write(path); err != nil {
				t.Fatal(err)
			}
			if err := read(path); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadDump = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func bboltFile(path string, fn func(tx *bbolt.Tx) error) error {
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	if err := db.Update(fn); err != nil {
		_ = db.Close()
		return err
	}
	return db.Close()
}
