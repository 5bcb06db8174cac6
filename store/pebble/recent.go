package pebble

// The committer's map of recently written keys. A set needs only the size,
// expiry and version of the record it replaces (for the quota, the expiry
// index and a condition), and reading them from Pebble is the largest part
// of the committer's work per set (a search of the memtable's skiplist and
// of the levels). The committer is the only writer, so what it wrote is
// exactly what is stored: it keeps that for the last maxRecent keys it
// wrote or read, and reads Pebble only for the others.

// maxRecent bounds the keys the committer remembers. The map held ~11 MiB
// at 32,768 keys of about 20 bytes (a heap profile under sets over a
// million keys: a few hundred bytes a key with Go's map and the key
// strings), which the collector lets grow to twice that; 16,384 keeps it
// near 5 MiB, and lowered the daemon's peak RSS in that run from ~140 to
// ~125 MiB. Enough for the hot keys of a store, and every key of
// kvbench's 10,000.
const maxRecent = 16 << 10

// maxRecentKey is the longest data key (dataKey) the committer remembers:
// longer ones are always read from Pebble, so the map holds at most about
// maxRecent times this many bytes of keys (5 MiB), whatever key size the
// limits allow.
const maxRecentKey = 320

// recMeta is what the committer remembers of a key: whether it has a
// record and, if so, the record's size, expiry and version.
type recMeta struct {
	present bool
	size    int64 // what the record counts against the quota
	expiry  int64
	version uint64
}

func metaOf(key, rec []byte) recMeta {
	if rec == nil {
		return recMeta{}
	}
	return recMeta{present: true, size: recordSize(key, rec), expiry: recordExpiry(rec), version: recordVersion(rec)}
}

// recent maps a data key (dataKey) to what is stored under it. Only the
// committer touches it.
type recent map[string]recMeta

// remember notes what is stored under a data key, making room first when
// the map is full. The keys dropped are whichever Go's map iteration gives
// first: any key may go, since a key not remembered is read from Pebble.
func (r recent) remember(dk []byte, m recMeta) {
	if len(dk) > maxRecentKey {
		return // never remembered, so never stale
	}
	if _, ok := r[string(dk)]; !ok && len(r) >= maxRecent {
		n := maxRecent / 4
		for k := range r {
			delete(r, k)
			if n--; n == 0 {
				break
			}
		}
	}
	r[string(dk)] = m
}

// forgetProject drops every key of a project (after a Clear).
func (r recent) forgetProject(name string) {
	prefix := string(projectPrefix(kindData, name, 0))
	for k := range r {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			delete(r, k)
		}
	}
}
