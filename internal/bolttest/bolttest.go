// Package bolttest writes kv.db files in the layout the embedded store of
// earlier releases wrote (one bbolt file; the layout is in package
// store/internal/boltdump's doc), for the tests of the migration that reads
// them. It is for tests only: no release writes this layout any more.
//
// It knows the layout on its own, not through the reader's constants, so
// that a test of the reader checks it against a second statement of the
// layout; boltdump's tests check it against a file an earlier release
// wrote.
package bolttest

import (
	"bytes"
	"encoding/binary"
	"iter"
	"testing"

	"go.etcd.io/bbolt"
)

// File is what a kv.db holds.
type File struct {
	// Layout is the file's layout version: 2, that of the last release
	// with a bbolt store (0 means 2), or 1, whose records had no versions.
	Layout uint64
	// DefaultQuota is the stored default quota in bytes; 0 stores none.
	DefaultQuota int64
	Projects     []Project
}

// Project is one project of a File.
type Project struct {
	Name string
	// Quota is the project's override in bytes; 0 stores none.
	Quota int64
	// Version is the project's version counter, the last version given to
	// a write of it (layout 2 only); 0 means its entries' highest. A
	// counter above every entry's is what a deleted key's write leaves.
	Version uint64
	// Entries are the project's stored entries, expired or not, each key
	// once, in any order (slices.Values of a list, or a generator for large files).
	Entries iter.Seq[Entry]
}

// Entry is one stored entry.
type Entry struct {
	Key     string
	Value   []byte
	Expiry  int64  // unix ms; 0 = never
	Version uint64 // layout 2 only
}

// chunkBytes bounds the data of one bbolt transaction of Write, so that a
// file of large values is written without holding it in memory.
const chunkBytes = 4 << 20

// Write writes f to a new bbolt file at path, as the last release that
// kept one would have left it: the meta and projects buckets, each
// project's usage of every stored entry, quota override and version
// counter, its data bucket of records and its expiry index.
func Write(t testing.TB, path string, f File) {
	t.Helper()
	layout := f.Layout
	if layout == 0 {
		layout = 2
	}
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
	defer db.Close()
	u64 := func(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
	update := func(fn func(tx *bbolt.Tx) error) {
		t.Helper()
		if err := db.Update(fn); err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
	}
	update(func(tx *bbolt.Tx) error {
		meta, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		if err := meta.Put([]byte("format"), u64(layout)); err != nil {
			return err
		}
		if f.DefaultQuota > 0 {
			if err := meta.Put([]byte("default_quota"), u64(uint64(f.DefaultQuota))); err != nil {
				return err
			}
		}
		_, err = tx.CreateBucket([]byte("projects"))
		return err
	})
	for _, p := range f.Projects {
		bucket := func(tx *bbolt.Tx, name string) *bbolt.Bucket {
			return tx.Bucket([]byte("projects")).Bucket([]byte(p.Name)).Bucket([]byte(name))
		}
		update(func(tx *bbolt.Tx) error {
			b, err := tx.Bucket([]byte("projects")).CreateBucket([]byte(p.Name))
			if err != nil {
				return err
			}
			if _, err := b.CreateBucket([]byte("data")); err != nil {
				return err
			}
			_, err = b.CreateBucket([]byte("exp"))
			return err
		})
		var size, entries int64
		var version uint64
		var chunk []Entry
		chunked := 0
		flush := func() {
			t.Helper()
			update(func(tx *bbolt.Tx) error {
				data, exp := bucket(tx, "data"), bucket(tx, "exp")
				for _, e := range chunk {
					rec := u64(uint64(e.Expiry))
					if layout >= 2 {
						rec = binary.BigEndian.AppendUint64(rec, e.Version)
					}
					if err := data.Put([]byte(e.Key), append(rec, e.Value...)); err != nil {
						return err
					}
					if e.Expiry != 0 {
						if err := exp.Put(append(u64(uint64(e.Expiry)), e.Key...), nil); err != nil {
							return err
						}
					}
				}
				return nil
			})
			chunk, chunked = chunk[:0], 0
		}
		if p.Entries != nil {
			for e := range p.Entries {
				e.Value = bytes.Clone(e.Value) // a generator may reuse it
				chunk = append(chunk, e)
				size += int64(len(e.Key) + len(e.Value))
				entries++
				version = max(version, e.Version)
				if chunked += len(e.Key) + len(e.Value); chunked >= chunkBytes {
					flush()
				}
			}
		}
		flush()
		if p.Version != 0 {
			version = p.Version
		}
		update(func(tx *bbolt.Tx) error {
			b := tx.Bucket([]byte("projects")).Bucket([]byte(p.Name))
			if err := b.Put([]byte("usage"), append(u64(uint64(size)), u64(uint64(entries))...)); err != nil {
				return err
			}
			if p.Quota > 0 {
				if err := b.Put([]byte("quota"), u64(uint64(p.Quota))); err != nil {
					return err
				}
			}
			if layout >= 2 {
				return b.Put([]byte("version"), u64(version))
			}
			return nil
		})
	}
	if err := db.Close(); err != nil {
		t.Fatalf("close %s: %v", path, err)
	}
}
