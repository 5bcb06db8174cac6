package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/kvsidecar/kvsidecar/store"
)

// formatVersion is the layout described in the package doc. Open upgrades
// a file of version 1 (records without versions) and refuses any other
// version rather than misread it.
const formatVersion = 2

// Bucket and key names of the layout in the package doc.
var (
	bucketMeta     = []byte("meta")
	bucketProjects = []byte("projects")
	bucketData     = []byte("data")
	bucketExp      = []byte("exp")

	keyFormat       = []byte("format")
	keyDefaultQuota = []byte("default_quota")
	keyUsage        = []byte("usage")
	keyQuota        = []byte("quota")
	keyVersion      = []byte("version")
)

// recordHeader is the expiry and version that prefix every stored value.
const recordHeader = 16

// initFile creates the top-level buckets of a new file, checks the format of
// an existing one, and stores the configured default quota if one is given.
func initFile(tx *bbolt.Tx, defaultQuota int64) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists(bucketProjects); err != nil {
		return err
	}
	v := meta.Get(keyFormat)
	switch {
	case v == nil:
	case len(v) == 8 && binary.BigEndian.Uint64(v) == formatVersion:
	case len(v) == 8 && binary.BigEndian.Uint64(v) == 1:
		if err := upgradeFrom1(tx); err != nil {
			return fmt.Errorf("upgrade the file from layout version 1: %w", err)
		}
	default:
		return fmt.Errorf("the file has layout version %x, this build reads version %d", v, formatVersion)
	}
	if err := meta.Put(keyFormat, binary.BigEndian.AppendUint64(nil, formatVersion)); err != nil {
		return err
	}
	if defaultQuota > 0 {
		return meta.Put(keyDefaultQuota, encodeInt(defaultQuota))
	}
	return nil
}

func encodeInt(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }

func decodeInt(b []byte) int64 {
	if len(b) < 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

// upgradeFrom1 rewrites every record of a version 1 file, which held only
// the expiry before the value, with a version: each project's entries get
// versions 1, 2, … in key order, and its counter starts after them. It runs
// in the transaction of Open, so a file is upgraded whole or not at all.
func upgradeFrom1(tx *bbolt.Tx) error {
	projects := tx.Bucket(bucketProjects)
	var names [][]byte
	if err := projects.ForEach(func(k, v []byte) error {
		if v == nil {
			names = append(names, bytes.Clone(k))
		}
		return nil
	}); err != nil {
		return err
	}
	for _, name := range names {
		b := projects.Bucket(name)
		var version uint64
		if data := b.Bucket(bucketData); data != nil {
			type row struct{ key, rec []byte }
			var rows []row
			if err := data.ForEach(func(k, old []byte) error {
				if len(old) < 8 {
					return fmt.Errorf("project %q key %q: a record of %d bytes", name, k, len(old))
				}
				version++
				rows = append(rows, row{bytes.Clone(k), encodeRecord(int64(binary.BigEndian.Uint64(old)), version, old[8:])})
				return nil
			}); err != nil {
				return err
			}
			for _, r := range rows {
				if err := data.Put(r.key, r.rec); err != nil {
					return err
				}
			}
		}
		if err := b.Put(keyVersion, binary.BigEndian.AppendUint64(nil, version)); err != nil {
			return err
		}
	}
	return nil
}

// encodeRecord builds the stored form of a value: its expiry, its version,
// then the bytes.
func encodeRecord(expiry int64, version uint64, value []byte) []byte {
	rec := make([]byte, recordHeader, recordHeader+len(value))
	binary.BigEndian.PutUint64(rec, uint64(expiry))
	binary.BigEndian.PutUint64(rec[8:], version)
	return append(rec, value...)
}

func recordExpiry(rec []byte) int64 { return int64(binary.BigEndian.Uint64(rec)) }

func recordVersion(rec []byte) uint64 { return binary.BigEndian.Uint64(rec[8:]) }

// recordValue returns the value of a record: non-nil even when empty. It
// aliases rec.
func recordValue(rec []byte) []byte { return rec[recordHeader:] }

// recordSize is what a stored record counts against the quota.
func recordSize(key, rec []byte) int64 { return int64(len(key) + len(rec) - recordHeader) }

// expired reports whether an entry with this expiry is dead at now.
func expired(expiry, now int64) bool { return expiry != 0 && expiry <= now }

// expiryKey is the expiry index row of key.
func expiryKey(expiry int64, key []byte) []byte {
	k := make([]byte, 8, 8+len(key))
	binary.BigEndian.PutUint64(k, uint64(expiry))
	return append(k, key...)
}

// expiryAt turns a TTL into an absolute expiry in unix ms (0 = never). A TTL
// that is not a whole number of milliseconds is rounded up, so an entry never
// expires before its TTL has passed.
func expiryAt(now int64, ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	ms := int64(ttl / time.Millisecond)
	if ttl%time.Millisecond != 0 {
		ms++
	}
	return now + ms
}

// projectTx is one project's buckets within a transaction. Its buckets are nil
// when the project (or its entries) do not exist yet.
type projectTx struct {
	name    string
	tx      *bbolt.Tx
	b       *bbolt.Bucket
	data    *bbolt.Bucket
	exp     *bbolt.Bucket
	bytes   int64 // stored usage, expired entries included
	entries int64
}

// openProject looks a project up without creating anything.
func openProject(tx *bbolt.Tx, name string) *projectTx {
	p := openProjectData(tx, name)
	if p.b == nil {
		return p
	}
	p.exp = p.b.Bucket(bucketExp)
	if u := p.b.Get(keyUsage); len(u) == 16 {
		p.bytes = decodeInt(u[:8])
		p.entries = decodeInt(u[8:])
	}
	return p
}

// openProjectData opens only what reads of entries need: the data bucket.
// The expiry index and usage stay unloaded (nil and zero); opening a bucket
// costs a B-tree search and allocations, which show on the hot read path.
func openProjectData(tx *bbolt.Tx, name string) *projectTx {
	p := &projectTx{name: name, tx: tx}
	p.b = tx.Bucket(bucketProjects).Bucket([]byte(name))
	if p.b != nil {
		p.data = p.b.Bucket(bucketData)
	}
	return p
}

// record returns the stored record of key (nil if none), expired or not.
func (p *projectTx) record(key []byte) []byte {
	if p.data == nil {
		return nil
	}
	return p.data.Get(key)
}

// live returns the record of key if it exists and has not expired.
func (p *projectTx) live(key []byte, now int64) []byte {
	rec := p.record(key)
	if rec == nil || expired(recordExpiry(rec), now) {
		return nil
	}
	return rec
}

// quota is the quota in force for the project.
func (p *projectTx) quota() int64 {
	if p.b != nil {
		if q := p.b.Get(keyQuota); q != nil {
			return decodeInt(q)
		}
	}
	if q := p.tx.Bucket(bucketMeta).Get(keyDefaultQuota); q != nil {
		return decodeInt(q)
	}
	return store.DefaultQuota
}

// forExpired calls fn for each expired entry, oldest expiry first, until fn
// returns false. fn must not modify the project.
func (p *projectTx) forExpired(now int64, fn func(key []byte, expiry int64) bool) {
	if p.exp == nil {
		return
	}
	c := p.exp.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		e := int64(binary.BigEndian.Uint64(k))
		if e > now || !fn(k[8:], e) {
			return
		}
	}
}

// hasExpired reports whether the project has an expired entry left.
func (p *projectTx) hasExpired(now int64) bool {
	found := false
	p.forExpired(now, func([]byte, int64) bool { found = true; return false })
	return found
}

// expiredUsage is what the project's expired, not yet deleted entries count
// in its stored usage.
func (p *projectTx) expiredUsage(now int64) (entries, size int64) {
	p.forExpired(now, func(key []byte, _ int64) bool {
		if rec := p.data.Get(key); rec != nil {
			entries++
			size += recordSize(key, rec)
		}
		return true
	})
	return entries, size
}

// ensure creates the project's buckets if they are missing.
func (p *projectTx) ensure() error {
	var err error
	if p.b == nil {
		if p.b, err = p.tx.Bucket(bucketProjects).CreateBucketIfNotExists([]byte(p.name)); err != nil {
			return err
		}
	}
	if p.data == nil {
		if p.data, err = p.b.CreateBucketIfNotExists(bucketData); err != nil {
			return err
		}
	}
	if p.exp == nil {
		if p.exp, err = p.b.CreateBucketIfNotExists(bucketExp); err != nil {
			return err
		}
	}
	return nil
}

// saveUsage writes the usage record. The project's buckets must exist.
func (p *projectTx) saveUsage() error {
	u := make([]byte, 0, 16)
	u = binary.BigEndian.AppendUint64(u, uint64(p.bytes))
	u = binary.BigEndian.AppendUint64(u, uint64(p.entries))
	return p.b.Put(keyUsage, u)
}

// nextVersion advances the project's version counter and returns the new
// version. The project's bucket must exist.
func (p *projectTx) nextVersion() (uint64, error) {
	v := uint64(decodeInt(p.b.Get(keyVersion))) + 1
	return v, p.b.Put(keyVersion, binary.BigEndian.AppendUint64(nil, v))
}

// put stores value under key with the given version, replacing any record
// and its index row, and updates the usage (saveUsage writes it). The
// buckets must exist.
func (p *projectTx) put(key, value []byte, expiry int64, version uint64) error {
	// The Put below replaces the old record in place, so only its index row
	// and its usage go first: deleting it as well would cost one more
	// search of the tree per write.
	if rec := p.record(key); rec != nil {
		old, size := recordExpiry(rec), recordSize(key, rec)
		if old != 0 {
			if err := p.exp.Delete(expiryKey(old, key)); err != nil {
				return err
			}
		}
		p.bytes -= size
		p.entries--
	}
	if err := p.data.Put(key, encodeRecord(expiry, version, value)); err != nil {
		return err
	}
	if expiry != 0 {
		if err := p.exp.Put(expiryKey(expiry, key), nil); err != nil {
			return err
		}
	}
	p.bytes += int64(len(key) + len(value))
	p.entries++
	return nil
}

// remove deletes the record of key and its index row, updates the usage
// (in memory; saveUsage writes it) and reports whether the removed record
// was live at now.
func (p *projectTx) remove(key []byte, now int64) (wasLive bool, err error) {
	rec := p.record(key)
	if rec == nil {
		return false, nil
	}
	expiry := recordExpiry(rec)
	size := recordSize(key, rec)
	if expiry != 0 {
		if err := p.exp.Delete(expiryKey(expiry, key)); err != nil {
			return false, err
		}
	}
	if err := p.data.Delete(key); err != nil {
		return false, err
	}
	p.bytes -= size
	p.entries--
	return !expired(expiry, now), nil
}

// purge deletes up to limit expired entries (limit <= 0: all of them) and
// returns how many it deleted. It updates the usage in memory only.
func (p *projectTx) purge(now int64, limit int) (int64, error) {
	var keys [][]byte
	p.forExpired(now, func(key []byte, _ int64) bool {
		keys = append(keys, bytes.Clone(key))
		return limit <= 0 || len(keys) < limit
	})
	for _, k := range keys {
		if _, err := p.remove(k, now); err != nil {
			return 0, err
		}
	}
	return int64(len(keys)), nil
}
