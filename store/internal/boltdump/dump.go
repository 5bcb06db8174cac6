// Package boltdump reads the file of the embedded store of earlier
// releases, kv.db (one bbolt file), as it is stored and without changing
// it, for store/pebble's migration to copy into a Pebble directory. It
// opens the file read-only, so it needs no daemon to have it open, and sees
// one consistent state of it. It writes nothing: no release writes this
// layout any more.
//
// # File layout
//
// Everything is keyed by project first:
//
//	meta                       bucket
//	  "format"                 uint64 layout version, 1 or 2; absent in a file
//	                           created and never written (read as 2)
//	  "default_quota"          int64 bytes; absent means store.DefaultQuota
//	projects                   bucket, one nested bucket per project name:
//	  <project>
//	    "usage"                int64 bytes ++ int64 entries of every stored entry,
//	                           expired or not
//	    "quota"                int64 bytes: the project's override; absent means the default
//	    "version"              uint64: the last version given to a write of the
//	                           project (layout 2 only)
//	    data                   bucket: key -> uint64 expiry (unix ms, 0 = never) ++
//	                           uint64 version ++ value (layout 1: no version)
//	    exp                    bucket: uint64 expiry (unix ms) ++ key -> empty;
//	                           one row per entry that expires
//
// Integers are big-endian. Versions were strictly increasing per project
// and every entry's is at most its project's counter. Layout 1 had no
// versions: the release that wrote layout 2 gave a layout 1 file's entries
// 1, 2, … in key order as it upgraded it, and so does this reader.
//
// A file that is not bbolt, is shorter than its meta pages say, or has a
// page bbolt cannot read is refused with an error that says so (ReadDump).
package boltdump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// formatVersion is the last layout version earlier releases wrote.
const formatVersion = 2

// Bucket and key names of the layout in the package doc.
var (
	bucketMeta     = []byte("meta")
	bucketProjects = []byte("projects")
	bucketData     = []byte("data")

	keyFormat       = []byte("format")
	keyDefaultQuota = []byte("default_quota")
	keyUsage        = []byte("usage")
	keyQuota        = []byte("quota")
	keyVersion      = []byte("version")
)

// recordHeader is the expiry and version that prefix every value of
// layout 2 (layout 1: the expiry alone).
const recordHeader = 16

// Dump is an open read-only view of a file. It is valid only inside the
// function given to ReadDump.
type Dump struct {
	tx     *bbolt.Tx
	format uint64
}

// Project is one project's stored state.
type Project struct {
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

// Entry is one stored entry, expired or not.
type Entry struct {
	Key, Value []byte // valid only during the callback
	Expiry     int64  // unix ms; 0 = never
	Version    uint64
}

// ReadDump checks that the file at path is a whole bbolt file, opens it
// read-only, waiting up to timeout for a process that holds it for
// writing, and calls fn with a view of it in one read transaction.
//
// bbolt panics on a page that is not the one it looked for (a corrupt
// file); ReadDump turns that into an error, so that a damaged file stops
// the daemon with what is wrong rather than a stack trace. A panic of fn is
// reported the same way.
func ReadDump(path string, timeout time.Duration, fn func(d *Dump) error) (err error) {
	if err := check(path); err != nil {
		return err
	}
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%s: the bbolt file is corrupt (%v); restore it from a backup or move it away to start with a new store", path, v)
		}
	}()
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
			return fmt.Errorf("read %s: not a file of the embedded store (no meta or projects bucket)", path)
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
func (d *Dump) Projects(fn func(p Project) error) error {
	return d.tx.Bucket(bucketProjects).ForEach(func(k, v []byte) error {
		if v != nil {
			return nil // not a bucket
		}
		b := d.tx.Bucket(bucketProjects).Bucket(k)
		p := Project{Name: string(k), Quota: decodeInt(b.Get(keyQuota))}
		if u := b.Get(keyUsage); len(u) == 16 {
			p.Bytes, p.Entries = decodeInt(u[:8]), decodeInt(u[8:])
		}
		if d.format == 1 {
			// Layout 1 had no versions: the upgrade to layout 2 gave the
			// entries 1, 2, … in key order, and so does Entries.
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
func (d *Dump) Entries(project string, fn func(e Entry) error) error {
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
			return fn(Entry{Key: k, Value: rec[8:], Expiry: recordExpiry(rec), Version: n})
		}
		if len(rec) < recordHeader {
			return fmt.Errorf("project %q key %q: a record of %d bytes", project, k, len(rec))
		}
		return fn(Entry{Key: k, Value: rec[recordHeader:], Expiry: recordExpiry(rec), Version: binary.BigEndian.Uint64(rec[8:])})
	})
}

func decodeInt(b []byte) int64 {
	if len(b) < 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

func recordExpiry(rec []byte) int64 { return int64(binary.BigEndian.Uint64(rec)) }

// check fails unless the file at path starts as a bbolt file does and
// holds every page its meta pages say it has: bbolt maps the file and reads
// a page past its end as memory that is not there, a fault that ends the
// process, so a truncated file (a copy cut short, a full disk) must be
// refused before it is opened.
func check(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, metaEnd)
	if _, err := io.ReadFull(f, head); err != nil || !isFile(head) {
		return fmt.Errorf("%s: not a bbolt file; move it away to start with a new store", path)
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	// The pages in use are those of the meta page with the later
	// transaction; the second meta page is the file's second page.
	pageSize, pages, txid := meta(head)
	second := make([]byte, metaEnd)
	if pageSize > 0 {
		if _, err := f.ReadAt(second, int64(pageSize)); err == nil && isFile(second) {
			if ps, n, tx := meta(second); tx > txid {
				pageSize, pages = ps, n
			}
		}
	}
	if need := int64(pageSize) * int64(pages); pageSize == 0 || fi.Size() < need {
		return fmt.Errorf("%s: the bbolt file is truncated (%d bytes, its meta page says %d pages of %d bytes); restore it from a backup or move it away to start with a new store",
			path, fi.Size(), pages, pageSize)
	}
	return nil
}

// metaEnd is the end of the fields of a bbolt meta page that meta reads: a
// page header (16 bytes), then magic, version, page size and flags (4
// bytes each), the root bucket (16), the freelist's page (8), the next page
// to allocate (8) and the transaction id (8).
const metaEnd = 72

// isFile reports whether a page is a bbolt meta page: a page header (id 8,
// flags 2, count 2, overflow 4 bytes), then the magic number, in the
// machine's byte order (little-endian on every platform the daemon is
// built for).
func isFile(page []byte) bool {
	const magic = 0xED0CDAED
	return len(page) >= 20 && binary.LittleEndian.Uint32(page[16:20]) == magic
}

// meta reads the page size, the number of pages in use and the transaction
// id of a bbolt meta page, little-endian as isFile assumes.
func meta(page []byte) (pageSize uint32, pages, txid uint64) {
	return binary.LittleEndian.Uint32(page[24:28]), binary.LittleEndian.Uint64(page[56:64]), binary.LittleEndian.Uint64(page[64:72])
}
