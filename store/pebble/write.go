package pebble

import (
	"context"
	"fmt"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// Set stores value under key. See store.Store.
func (s *Store) Set(ctx context.Context, project, key string, value []byte, ttl time.Duration) error {
	_, err := s.SetIf(ctx, project, key, value, ttl, store.Cond{})
	return err
}

// SetIf stores value under key if cond holds. See store.Store.
func (s *Store) SetIf(ctx context.Context, project, key string, value []byte, ttl time.Duration, cond store.Cond) (uint64, error) {
	if err := store.CheckProject(project); err != nil {
		return 0, err
	}
	if err := s.limits.CheckSet(key, value, ttl); err != nil {
		return 0, err
	}
	items := []store.Item{{Key: key, Value: value, TTL: ttl, Cond: cond}}
	res := s.submit(ctx, request{project: project, size: len(key) + len(value), apply: func(w *writeTx) (result, error) {
		return w.set(project, items)
	}})
	return res.version, res.err
}

// SetMany stores every item, or none. See store.Store.
func (s *Store) SetMany(ctx context.Context, project string, items []store.Item) error {
	_, err := s.SetManyIf(ctx, project, items)
	return err
}

// SetManyIf stores every item, or none, and returns their versions. See
// store.Store.
func (s *Store) SetManyIf(ctx context.Context, project string, items []store.Item) ([]uint64, error) {
	if err := store.CheckProject(project); err != nil {
		return nil, err
	}
	if err := s.limits.CheckItems(items); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return []uint64{}, s.closedOr(ctx)
	}
	size := 0
	for _, it := range items {
		size += len(it.Key) + len(it.Value)
	}
	res := s.submit(ctx, request{project: project, size: size, apply: func(w *writeTx) (result, error) {
		return w.set(project, items)
	}})
	if res.err != nil {
		return nil, res.err
	}
	return store.SameVersion(len(items), res.version), nil
}

// Delete removes key. See store.Store.
func (s *Store) Delete(ctx context.Context, project, key string) (bool, error) {
	return s.DeleteIf(ctx, project, key, store.Cond{})
}

// DeleteIf removes key if cond holds. See store.Store.
func (s *Store) DeleteIf(ctx context.Context, project, key string, cond store.Cond) (bool, error) {
	if err := store.CheckProject(project); err != nil {
		return false, err
	}
	if err := s.limits.CheckKey(key); err != nil {
		return false, err
	}
	keys := []string{key}
	res := s.submit(ctx, request{project: project, frees: true, size: len(key), apply: func(w *writeTx) (result, error) {
		if cond.Check {
			conflict, err := w.project(project).checkConds([]store.Item{{Key: key, Cond: cond}})
			if conflict != nil || err != nil {
				return result{err: conflict}, err
			}
		}
		return w.delete(project, keys)
	}})
	if res.err != nil {
		return false, res.err
	}
	return res.flags[0], nil
}

// Expire replaces the expiry of key. See store.Store.
func (s *Store) Expire(ctx context.Context, project, key string, ttl time.Duration) (uint64, bool, error) {
	if err := store.CheckProject(project); err != nil {
		return 0, false, err
	}
	if err := s.limits.CheckKey(key); err != nil {
		return 0, false, err
	}
	if err := store.CheckTTL(ttl); err != nil {
		return 0, false, err
	}
	res := s.submit(ctx, request{project: project, size: len(key), apply: func(w *writeTx) (result, error) {
		return w.expire(project, key, ttl)
	}})
	return res.version, res.version != 0, res.err
}

// DeleteMany removes keys. See store.Store.
func (s *Store) DeleteMany(ctx context.Context, project string, keys []string) ([]bool, error) {
	if err := store.CheckProject(project); err != nil {
		return nil, err
	}
	if err := s.limits.CheckKeys(keys); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return []bool{}, s.closedOr(ctx)
	}
	size := 0
	for _, k := range keys {
		size += len(k)
	}
	res := s.submit(ctx, request{project: project, frees: true, size: size, apply: func(w *writeTx) (result, error) {
		return w.delete(project, keys)
	}})
	return res.flags, res.err
}

// Clear removes every entry of the project. See store.Store.
func (s *Store) Clear(ctx context.Context, project string) (int64, error) {
	if err := store.CheckProject(project); err != nil {
		return 0, err
	}
	res := s.submit(ctx, request{project: project, frees: true, apply: func(w *writeTx) (result, error) {
		return w.clear(project)
	}})
	return res.n, res.err
}

// Incr adds delta to the integer under key. See store.Store.
func (s *Store) Incr(ctx context.Context, project, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := store.CheckProject(project); err != nil {
		return 0, err
	}
	if err := s.limits.CheckKey(key); err != nil {
		return 0, err
	}
	if err := store.CheckTTL(ttl); err != nil {
		return 0, err
	}
	res := s.submit(ctx, request{project: project, size: len(key), apply: func(w *writeTx) (result, error) {
		return w.incr(project, key, delta, ttl)
	}})
	return res.n, res.err
}

// SetQuota sets or (with 0) removes the project's quota override.
func (s *Store) SetQuota(ctx context.Context, project string, quota int64) error {
	if err := store.CheckProject(project); err != nil {
		return err
	}
	if quota < 0 {
		return fmt.Errorf("%w: quota is negative (%d)", store.ErrBadArgument, quota)
	}
	return s.submit(ctx, request{project: project, apply: func(w *writeTx) (result, error) {
		return result{}, w.setQuota(project, quota)
	}}).err
}

// SetDefaultQuota sets the quota of projects without an override. It is
// stored, so it outlives a restart (unless Config.DefaultQuota
// sets another at Open).
func (s *Store) SetDefaultQuota(ctx context.Context, quota int64) error {
	if quota <= 0 {
		return fmt.Errorf("%w: default quota must be positive, got %d", store.ErrBadArgument, quota)
	}
	return s.submit(ctx, request{apply: func(w *writeTx) (result, error) {
		w.defaultQuota = quota
		return result{}, w.b.Set(metaKey(metaDefaultQuota), encodeInt(quota), nil)
	}}).err
}

// Sweep deletes up to Config.SweepBatch expired entries and frees their
// quota. See store.Store. It visits only the projects that may have an
// entry due (see dueIndex), those due first, in requests of at most
// sweepVisits projects each, so that the writes of every project go on
// between them however many projects there are.
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	var total int64
	for {
		left := s.cfg.SweepBatch - int(total)
		res := s.submit(ctx, request{frees: true, apply: func(w *writeTx) (result, error) {
			n, more, err := w.sweep(left, sweepVisits)
			return result{n: n, more: more}, err
		}})
		if res.err != nil {
			return total, res.err
		}
		total += res.n
		if !res.more || total >= int64(s.cfg.SweepBatch) {
			return total, nil
		}
	}
}

// closedOr answers a call that has nothing to do: it still fails on a
// cancelled context or a closed store, as any other call would.
func (s *Store) closedOr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	return nil
}

// checkConds checks the items' conditions against the project as this
// batch leaves it: conflict is the refusal, err a failed read.
func (p *projectTx) checkConds(items []store.Item) (conflict, err error) {
	conflict = store.CheckConds(items, func(key string) (bool, uint64) {
		m, rerr := p.liveMeta([]byte(key))
		if rerr != nil {
			err = rerr
		}
		return m.present, m.version
	})
	if err != nil {
		return nil, err
	}
	return conflict, nil
}

// set applies a Set or SetMany: it decides the quota for all items first,
// then writes them in order, so a later duplicate key wins.
func (w *writeTx) set(name string, items []store.Item) (result, error) {
	p := w.project(name)
	if conflict, err := p.checkConds(items); conflict != nil || err != nil {
		return result{err: conflict}, err
	}
	return w.putAll(p, items, func(i int) int64 { return expiryAt(w.now, items[i].TTL) })
}

// putAll writes items to p as one write, after deciding the quota for all
// of them: they share the project's next version, and item i expires at
// expiry(i). Set, SetMany, an import's batches and the migration write
// through it.
func (w *writeTx) putAll(p *projectTx, items []store.Item, expiry func(i int) int64) (result, error) {
	if refusal, err := w.checkQuota(p, func() (int64, error) { return setGrowth(p, items) }); refusal != nil || err != nil {
		return result{err: refusal}, err
	}
	p.ensure()
	version := p.nextVersion()
	for i, it := range items {
		if err := p.put([]byte(it.Key), it.Value, expiry(i), version); err != nil {
			return result{}, err
		}
	}
	return result{version: version, n: int64(len(items))}, nil
}

// setGrowth is how much the stored usage of p grows if items are written.
func setGrowth(p *projectTx, items []store.Item) (int64, error) {
	if len(items) == 1 {
		it := items[0]
		old, err := storedSize(p, it.Key)
		return store.EntrySize(it.Key, it.Value) - old, err
	}
	sizes := make(map[string]int64, len(items))
	var growth int64
	for _, it := range items {
		old, seen := sizes[it.Key]
		if !seen {
			var err error
			if old, err = storedSize(p, it.Key); err != nil {
				return 0, err
			}
		}
		size := store.EntrySize(it.Key, it.Value)
		growth += size - old
		sizes[it.Key] = size
	}
	return growth, nil
}

// storedSize is what the stored record of key counts, expired or not.
func storedSize(p *projectTx, key string) (int64, error) {
	m, err := p.meta([]byte(key))
	return m.size, err
}

// checkQuota decides whether a write that grows p's stored usage by
// growth() fits. If it does not, it first deletes p's expired entries —
// which never count against the quota — and asks growth() again, since an
// overwritten entry may have been among them. A refusal is returned as
// refusal; err means the batch failed.
//
// The purge is bounded by what the batch may still delete (purgeLeft): when
// that runs out while expired entries remain, the refusal is errPurgeMore,
// the committer requeues the write, and the purge goes on in the next
// batch, so that other projects' writes are not held behind it.
func (w *writeTx) checkQuota(p *projectTx, growth func() (int64, error)) (refusal, err error) {
	need, err := growth()
	if err != nil || need <= 0 {
		return nil, err
	}
	quota := p.quota()
	if p.st.bytes+need <= quota {
		return nil, nil
	}
	if w.purgeLeft > 0 {
		n, err := p.purge(w.purgeLeft)
		if err != nil {
			return nil, err
		}
		w.purgeLeft -= int(n)
		if n > 0 {
			if need, err = growth(); err != nil {
				return nil, err
			}
			if p.st.bytes+need <= quota {
				return nil, nil
			}
		}
	}
	if w.purgeLeft <= 0 {
		// The batch may delete no more: expired entries left over are
		// purged in the next batch, which this write waits for.
		more, err := p.hasExpired()
		if err != nil {
			return nil, err
		}
		if more {
			return errPurgeMore, nil
		}
	}
	return store.QuotaError(p.name, p.st.bytes, need, quota), nil
}

func (w *writeTx) delete(name string, keys []string) (result, error) {
	p := w.project(name)
	existed := make([]bool, len(keys))
	for i, k := range keys {
		live, err := p.remove([]byte(k))
		if err != nil {
			return result{}, err
		}
		existed[i] = live
	}
	return result{flags: existed}, nil
}

func (w *writeTx) clear(name string) (result, error) {
	p := w.project(name)
	if !p.stored {
		return result{}, nil
	}
	expiredEntries, _, err := p.expiredUsage()
	if err != nil {
		return result{}, err
	}
	live := p.st.entries - expiredEntries
	return result{n: live}, p.clear()
}

func (w *writeTx) incr(name, key string, delta int64, ttl time.Duration) (result, error) {
	p := w.project(name)
	k := []byte(key)
	// Decide first: parse the live value (an expired one counts as missing).
	expiry := expiryAt(w.now, ttl)
	var current []byte
	rec, err := p.live(k)
	if err != nil {
		return result{}, err
	}
	if rec != nil {
		current = recordValue(rec)
		expiry = recordExpiry(rec) // an existing key keeps its expiry
	}
	value, n, err := store.Increment(current, current != nil, delta)
	if err != nil {
		return result{err: err}, nil
	}
	growth := func() (int64, error) {
		old, err := storedSize(p, key)
		return store.EntrySize(key, value) - old, err
	}
	if refusal, err := w.checkQuota(p, growth); refusal != nil || err != nil {
		return result{err: refusal}, err
	}
	p.ensure()
	version := p.nextVersion()
	if err := p.put(k, value, expiry, version); err != nil {
		return result{}, err
	}
	return result{n: n, version: version}, nil
}

// expire rewrites the record of a live key with a new expiry and version.
// The entry's size is unchanged, so the usage and the quota are too.
func (w *writeTx) expire(name, key string, ttl time.Duration) (result, error) {
	p := w.project(name)
	k := []byte(key)
	rec, err := p.live(k)
	if err != nil || rec == nil {
		return result{}, err
	}
	version := p.nextVersion()
	if err := p.put(k, recordValue(rec), expiryAt(w.now, ttl), version); err != nil {
		return result{}, err
	}
	return result{version: version}, nil
}

func (w *writeTx) setQuota(name string, quota int64) error {
	p := w.project(name)
	if quota == 0 && !p.stored {
		return nil
	}
	p.ensure()
	p.st.quota = quota
	return nil
}
