package bolt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// A dump reads a file of this store as it is stored, without changing it,
// for copying it into another engine (store/pebble migrates the embedded
// store's file this way). It opens the file read-only, so it needs no
// daemon to have it open, and sees one consistent state of it.

// Dump is an open read-only view of a file. It is valid only inside the
// function given to ReadDump.
type Dump struct {
	tx     *bbolt.Tx
	format uint64
}

// DumpProject is one project's stored state.
type DumpProject struct {
	Name string
	// Bytes and Entries are the stored usage: every stored entry, expired
	// or not.
	Bytes, Entries int64
	// Quota is the project's override in bytes; 0 when the default applies.
	Quota int64
	// Version is the last version given to a write of the project: every
	// entry's version is at most this.
	Version uint64
}

// DumpEntry is one stored entry, expired or not.
type DumpEntry struct {
	Key, Value []byte // valid only during the callback
	Expiry     int64  // unix ms; 0 = never
	Version    uint64
}

// ReadDump opens the file at path read-only, waiting up to timeout for a
// process that holds it for writing, and calls fn with a view of it in one
// read transaction.
func ReadDump(path string, timeout time.Duration, fn func(d *Dump) error) error {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("open %s: the file is locked by another process (waited %s): %w", path, timeout, err)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	return db.View(func(tx *bbolt.Tx) error {
		d := &Dump{tx: tx}
		meta := tx.Bucket(bucketMeta)
		if meta == nil || tx.Bucket(bucketProjects) == nil {
			return fmt.Errorf("read %s: not a file of this store (no meta or projects bucket)", path)
		}
		v := meta.Get(keyFormat)
		switch {
		case v == nil:
			d.format = formatVersion // a file created and never written
		case len(v) == 8 && (binary.BigEndian.Uint64(v) == formatVersion || binary.BigEndian.Uint64(v) == 1):
			d.format = binary.BigEndian.Uint64(v)
		default:
			return fmt.Errorf("read %s: layout version %x, this build reads versions 1 and %d", path, v, formatVersion)
		}
		return fn(d)
	})
}

// Size is the file's size in bytes.
func (d *Dump) Size() int64 { return d.tx.Size() }

// DefaultQuota is the stored default quota; 0 when none is stored.
func (d *Dump) DefaultQuota() int64 {
	return decodeInt(d.tx.Bucket(bucketMeta).Get(keyDefaultQuota))
}

// Projects calls fn for every project, in name order.
func (d *Dump) Projects(fn func(p DumpProject) error) error {
	return d.tx.Bucket(bucketProjects).ForEach(func(k, v []byte) error {
		if v != nil {
			return nil // not a bucket
		}
		b := d.tx.Bucket(bucketProjects).Bucket(k)
		p := DumpProject{Name: string(k), Quota: decodeInt(b.Get(keyQuota))}
		if u := b.Get(keyUsage); len(u) == 16 {
			p.Bytes, p.Entries = decodeInt(u[:8]), decodeInt(u[8:])
		}
		if d.format == 1 {
			// Layout 1 had no versions: Open would give the entries 1, 2, …
			// in key order (upgradeFrom1), and so does Entries.
			if data := b.Bucket(bucketData); data != nil {
				p.Version = uint64(data.Stats().KeyN)
			}
		} else {
			p.Version = uint64(decodeInt(b.Get(keyVersion)))
		}
		return fn(p)
	})
}

// Entries calls fn for every stored entry of the project, expired or not,
// in key order.
func (d *Dump) Entries(project string, fn func(e DumpEntry) error) error {
	b := d.tx.Bucket(bucketProjects).Bucket([]byte(project))
	if b == nil {
		return nil
	}
	data := b.Bucket(bucketData)
	if data == nil {
		return nil
	}
	var n uint64
	return data.ForEach(func(k, rec []byte) error {
		n++
		if d.format == 1 {
			if len(rec) < 8 {
				return fmt.Errorf("project %q key %q: a record of %d bytes", project, k, len(rec))
			}
			return fn(DumpEntry{Key: k, Value: rec[8:], Expiry: recordExpiry(rec), Version: n})
		}
		if len(rec) < recordHeader {
			return fmt.Errorf("project %q key %q: a record of %d bytes", project, k, len(rec))
		}
		return fn(DumpEntry{Key: k, Value: recordValue(rec), Expiry: recordExpiry(rec), Version: recordVersion(rec)})
	})
}

// IsFile reports whether the first bytes of a file are those of a bbolt
// file (its first meta page's magic number).
func IsFile(head []byte) bool {
	// A page header (id 8, flags 2, count 2, overflow 4 bytes) then the
	// meta page, whose first field is the magic, in the machine's byte
	// order (little-endian on every platform the daemon is built for).
	const magic = 0xED0CDAED
	return len(head) >= 20 && binary.LittleEndian.Uint32(head[16:20]) == magic
}
