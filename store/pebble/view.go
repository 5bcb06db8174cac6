package pebble

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/kvsidecar/kvsidecar/store"
)

// views holds the snapshot reads use. Pebble makes a batch's writes visible
// before its log sync returns (see the package doc), so reads go through a
// snapshot that the committer takes right after each batch's apply, and
// that the completer makes current once the batch is synced and before it
// answers the batch's callers (pipeline.go): a read sees what was
// answered, never a write that a crash could still lose. A snapshot is closed when it is no longer
// current and its last reader is done.
type views struct {
	mu  sync.Mutex // guards cur; held only to take a reference
	cur *snapView
}

// snapView is one snapshot and its references: one for being current, one
// per read running on it.
type snapView struct {
	snap *pebble.Snapshot
	refs atomic.Int64
}

func newSnapView(db *pebble.DB) *snapView {
	v := &snapView{snap: db.NewSnapshot()}
	v.refs.Store(1)
	return v
}

func (v *snapView) release() {
	if v.refs.Add(-1) == 0 {
		_ = v.snap.Close()
	}
}

// init makes the first snapshot, in Open.
func (vs *views) init(db *pebble.DB) { vs.cur = newSnapView(db) }

// acquire returns the current snapshot with a reference for the caller,
// who must release it.
func (vs *views) acquire() *snapView {
	vs.mu.Lock()
	v := vs.cur
	v.refs.Add(1)
	vs.mu.Unlock()
	return v
}

// swap makes v, with its reference for being current, the current
// snapshot. The completer calls it once v's batch is synced.
func (vs *views) swap(v *snapView) {
	vs.mu.Lock()
	old := vs.cur
	vs.cur = v
	vs.mu.Unlock()
	old.release()
}

// close drops the current snapshot, in Close once no read runs.
func (vs *views) close() {
	vs.mu.Lock()
	old := vs.cur
	vs.cur = nil
	vs.mu.Unlock()
	if old != nil {
		old.release()
	}
}

// reader reads one snapshot.
type reader struct{ snap *pebble.Snapshot }

// read runs fn on the current snapshot, with the store's clock.
func (s *Store) read(ctx context.Context, fn func(r reader, now int64) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	v := s.views.acquire()
	defer v.release()
	return fn(reader{v.snap}, s.nowMs())
}

// readProject is read for the calls of one project: it checks the name.
func (s *Store) readProject(ctx context.Context, name string, fn func(r reader, now int64) error) error {
	if err := store.CheckProject(name); err != nil {
		return err
	}
	return s.read(ctx, fn)
}

// with calls fn with the value of key, valid only while fn runs; found is
// false when there is none.
func (r reader) with(key []byte, fn func(v []byte)) (found bool, err error) {
	v, closer, err := r.snap.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: read: %w", store.ErrUnavailable, err)
	}
	fn(v)
	return true, closer.Close()
}

// get returns a copy of the value of key.
func (r reader) get(key []byte) (v []byte, found bool, err error) {
	found, err = r.with(key, func(b []byte) { v = bytes.Clone(b) })
	return v, found, err
}

// live returns a copy of the record of key in project name if it exists and
// has not expired at now.
func (r reader) live(name string, key []byte, now int64) ([]byte, error) {
	rec, found, err := r.get(dataKey(name, key))
	if err != nil || !found {
		return nil, err
	}
	if !validRecord(rec) {
		return nil, fmt.Errorf("%w: project %q key %q: a record of %d bytes", store.ErrUnavailable, name, key, len(rec))
	}
	if expired(recordExpiry(rec), now) {
		return nil, nil
	}
	return rec, nil
}

// state returns a project's stored state, and whether it has one.
func (r reader) state(name string) (projectState, bool, error) {
	b, found, err := r.get(projectKey(name))
	if err != nil || !found {
		return projectState{}, false, err
	}
	st, err := decodeState(b)
	if err != nil {
		return projectState{}, false, fmt.Errorf("%w: project %q: %w", store.ErrUnavailable, name, err)
	}
	return st, true, nil
}

// defaultQuota returns the stored default quota, 0 if none.
func (r reader) defaultQuota() (int64, error) {
	b, found, err := r.get(metaKey(metaDefaultQuota))
	if err != nil || !found || len(b) != 8 {
		return 0, err
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}

// iter returns an iterator over the keys in [lower, upper).
func (r reader) iter(lower, upper []byte) (*pebble.Iterator, error) {
	it, err := r.snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", store.ErrUnavailable, err)
	}
	return it, nil
}

// expiredUsage is what the project's expired, not yet deleted entries count
// in its stored usage at now.
func (r reader) expiredUsage(name string, now int64) (entries, size int64, err error) {
	err = forExpired(r.iter, name, now, func(key []byte, _ int64) (bool, error) {
		found, err := r.with(dataKey(name, key), func(rec []byte) { size += recordSize(key, rec) })
		if found {
			entries++
		}
		return true, err
	})
	return entries, size, err
}

// forExpired calls fn for each expired row of the project's expiry index,
// oldest first, until fn returns false or an error. key is valid only while
// fn runs.
func forExpired(iter func(lower, upper []byte) (*pebble.Iterator, error), name string, now int64, fn func(key []byte, expiry int64) (bool, error)) error {
	lower := projectPrefix(kindExp, name, 0)
	// Rows of expiry <= now sort before the row prefix of now+1.
	upper := binary.BigEndian.AppendUint64(projectPrefix(kindExp, name, 8), uint64(now+1))
	it, err := iter(lower, upper)
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[len(lower):]
		if len(k) < 8 {
			continue
		}
		expiry := int64(binary.BigEndian.Uint64(k))
		if expiry == 0 { // never written: 0 means no expiry
			continue
		}
		more, err := fn(k[8:], expiry)
		if err != nil || !more {
			return errors.Join(err, closeIter(it))
		}
	}
	return closeIter(it)
}

func closeIter(it io.Closer) error {
	if err := it.Close(); err != nil {
		return fmt.Errorf("%w: read: %w", store.ErrUnavailable, err)
	}
	return nil
}
