package pebble

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/kvsidecar/kvsidecar/store"
)

// formatVersion is the layout described in the package doc. Open refuses
// any other version rather than misread it.
const formatVersion = 1

// The kind bytes that start every key (package doc, Layout).
const (
	kindMeta    byte = 0x01
	kindProject byte = 0x02
	kindData    byte = 0x03
	kindExp     byte = 0x04
)

// Names of the meta keys.
const (
	metaFormat       = "format"
	metaDefaultQuota = "default_quota"
)

// recordHeader is the expiry and version that prefix every stored value.
const recordHeader = 16

// stateSize is the size of a project's stored state.
const stateSize = 32

func metaKey(name string) []byte { return append([]byte{kindMeta}, name...) }

// projectKey is the key of a project's state.
func projectKey(name string) []byte { return append([]byte{kindProject}, name...) }

// projectPrefix is the start of every key of kind in the project's range:
// the kind, the name's length and the name.
func projectPrefix(kind byte, name string, extra int) []byte {
	k := make([]byte, 0, 2+len(name)+extra)
	k = append(k, kind, byte(len(name)))
	return append(k, name...)
}

// dataKey is the key of a project's entry.
func dataKey(name string, key []byte) []byte {
	return append(projectPrefix(kindData, name, len(key)), key...)
}

// expKey is the expiry index row of a project's entry.
func expKey(name string, expiry int64, key []byte) []byte {
	k := projectPrefix(kindExp, name, 8+len(key))
	k = binary.BigEndian.AppendUint64(k, uint64(expiry))
	return append(k, key...)
}

// prefixEnd is the first key after every key that starts with prefix.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // every byte was 0xff: no end (cannot happen for our prefixes)
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

// validRecord reports whether rec is long enough to be a record.
func validRecord(rec []byte) bool { return len(rec) >= recordHeader }

// expired reports whether an entry with this expiry is dead at now.
func expired(expiry, now int64) bool { return expiry != 0 && expiry <= now }

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

// projectState is a project's stored state (package doc, Layout).
type projectState struct {
	bytes   int64  // stored usage, expired entries included
	entries int64  // stored entries, expired ones included
	version uint64 // the last version given to a write of the project
	quota   int64  // the project's override; 0: the default applies
}

func (st projectState) encode() []byte {
	b := make([]byte, 0, stateSize)
	b = binary.BigEndian.AppendUint64(b, uint64(st.bytes))
	b = binary.BigEndian.AppendUint64(b, uint64(st.entries))
	b = binary.BigEndian.AppendUint64(b, st.version)
	return binary.BigEndian.AppendUint64(b, uint64(st.quota))
}

func decodeState(b []byte) (projectState, error) {
	if len(b) != stateSize {
		return projectState{}, fmt.Errorf("a project state of %d bytes, want %d", len(b), stateSize)
	}
	return projectState{
		bytes:   int64(binary.BigEndian.Uint64(b)),
		entries: int64(binary.BigEndian.Uint64(b[8:])),
		version: binary.BigEndian.Uint64(b[16:]),
		quota:   int64(binary.BigEndian.Uint64(b[24:])),
	}, nil
}

func encodeInt(n int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }

// quotaOf is the quota in force for a project with state st, the default
// being def (0: store.DefaultQuota).
func quotaOf(st projectState, def int64) int64 {
	if st.quota > 0 {
		return st.quota
	}
	if def > 0 {
		return def
	}
	return store.DefaultQuota
}

// load checks the format, stores the configured default quota and reads
// every project's state into the committer's memory. It runs in Open,
// before the committer starts.
func (s *Store) load(defaultQuota int64) error {
	v, closer, err := s.db.Get(metaKey(metaFormat))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := s.db.Set(metaKey(metaFormat), encodeInt(formatVersion), pebble.Sync); err != nil {
			return fmt.Errorf("write the format version: %w", err)
		}
	case err != nil:
		return fmt.Errorf("read the format version: %w", err)
	default:
		ok := len(v) == 8 && binary.BigEndian.Uint64(v) == formatVersion
		got := fmt.Sprintf("%x", v)
		_ = closer.Close()
		if !ok {
			return fmt.Errorf("the store has layout version %s, this build reads version %d", got, formatVersion)
		}
	}
	if defaultQuota > 0 {
		if err := s.db.Set(metaKey(metaDefaultQuota), encodeInt(defaultQuota), pebble.Sync); err != nil {
			return fmt.Errorf("store the default quota: %w", err)
		}
	}
	if v, closer, err := s.db.Get(metaKey(metaDefaultQuota)); err == nil {
		if len(v) == 8 {
			s.defaultQuota = int64(binary.BigEndian.Uint64(v))
		}
		_ = closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return fmt.Errorf("read the default quota: %w", err)
	}

	s.projects = make(map[string]projectState)
	lower := []byte{kindProject}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return fmt.Errorf("read the projects: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		st, err := decodeState(it.Value())
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("project %q: %w", it.Key()[1:], err)
		}
		s.projects[string(it.Key()[1:])] = st
	}
	// What expires when is not stored: every project is looked at by the
	// first sweeps.
	s.due.soon = make(map[string]int64, len(s.projects))
	for name := range s.projects {
		s.due.set(name, unknownDue)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("read the projects: %w", err)
	}
	return nil
}
