package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/batch"
)

// writeOp is the kind of a write call.
type writeOp uint8

const (
	opSet writeOp = iota
	opSetMany
	opDelete
	opDeleteMany
	opClear
	opIncr
	opExpire
)

// writeReq is one write call waiting for its committer.
type writeReq struct {
	op      writeOp
	project string
	items   []store.Item // opSet (one item), opSetMany
	keys    []string     // opDelete (one key), opDeleteMany, opIncr and opExpire (one key)
	delta   int64        // opIncr
	ttl     time.Duration
	cond    store.Cond // opDelete
	// async is set for a write of Do (async.go): its outcome goes into
	// the op, and items or keys is oneItem[:] or oneKey[:], held in the
	// call itself, so that the write allocates no slice of its own.
	async   *store.Op
	oneItem [1]store.Item
	oneKey  [1]string
}

// writeResult is the answer to one write call.
type writeResult struct {
	n       int64  // opClear: entries removed; opIncr: the new value
	existed []bool // opDelete, opDeleteMany
	version uint64 // opSet, opSetMany, opIncr, opExpire: the version written (0: none)
	err     error
}

// writeCall is a write call in its committer's queue.
type writeCall = batch.Call[writeReq, writeResult]

// weight is what the call counts against Config.MaxBatch.
func (r writeReq) weight() int {
	return max(len(r.items)+len(r.keys), 1)
}

// bytes is what the call counts against maxBatchBytes.
func (r writeReq) bytes() int {
	n := 0
	for _, it := range r.items {
		n += len(it.Key) + len(it.Value)
	}
	for _, k := range r.keys {
		n += len(k)
	}
	return n
}

// newWriteQueue returns the queue of one committer, whose goroutine runs
// commit until Close. A caller whose ctx ends while its call is queued
// stops waiting, and the call is dropped unless its batch has started.
func (s *Store) newWriteQueue(h *holder, capacity int) *batch.Queue[writeReq, writeResult] {
	return batch.New(s.writeQueueConfig(h, capacity))
}

// writeQueueConfig is the configuration of a committer's queue.
func (s *Store) writeQueueConfig(h *holder, capacity int) batch.Config[writeReq, writeResult] {
	return batch.Config[writeReq, writeResult]{
		Name:             "write",
		Capacity:         capacity,
		Key:              func(r writeReq) string { return r.project },
		MaxPerKey:        max(int(s.cfg.ProjectQueueShare*float64(capacity)), 1),
		MaxWeight:        s.cfg.MaxBatch,
		Weight:           writeReq.weight,
		MaxBytes:         maxBatchBytes,
		Bytes:            writeReq.bytes,
		TurnBytes:        turnBytes,
		Abandonable:      true,
		AbandonedMessage: "gave up waiting for the commit, the write may or may not be applied",
		Apply:            func(calls []*writeCall) { s.commit(h, calls) },
		Idle:             func() time.Duration { return s.idleLeases(h) },
		Notify:           s.notifyWrite,
		Logger:           s.log,
	}
}

// write queues r on its committer (committerFor) and waits for the result.
//
// While the queue is full the caller waits, within ctx; when ctx ends first
// the call fails with store.ErrBusy and nothing is written. Once queued, a
// caller whose ctx ends gets store.ErrUnavailable: the write may still
// commit (if its batch had started) or not.
func (s *Store) write(ctx context.Context, r writeReq) writeResult {
	set := r.op == opSet && !r.items[0].Cond.Check
	key := ""
	if set {
		key = r.items[0].Key
	}
	res, err := s.writeQs[s.committerFor(r.project, key, set)].Submit(ctx, r)
	if err != nil {
		return writeResult{err: err}
	}
	return res
}

// copyValues returns items with their values copied into one allocation. A
// caller may return before its write is applied (when its ctx ends) and then
// reuse its buffers; the committer must not see that.
func copyValues(items []store.Item) []store.Item {
	n := 0
	for _, it := range items {
		n += len(it.Value)
	}
	buf := make([]byte, 0, n)
	out := make([]store.Item, len(items))
	for i, it := range items {
		start := len(buf)
		buf = append(buf, it.Value...)
		out[i] = store.Item{Key: it.Key, Value: buf[start:len(buf):len(buf)], TTL: it.TTL, Cond: it.Cond}
	}
	return out
}

// Set stores value under key. See store.Store.
func (s *Store) Set(ctx context.Context, project, key string, value []byte, ttl time.Duration) error {
	_, err := s.SetIf(ctx, project, key, value, ttl, store.Cond{})
	return err
}

// SetIf stores value under key if cond holds. See store.Store.
func (s *Store) SetIf(ctx context.Context, project, key string, value []byte, ttl time.Duration, cond store.Cond) (uint64, error) {
	if err := checkProject(project); err != nil {
		return 0, err
	}
	if err := s.cfg.Limits.CheckSet(key, value, ttl); err != nil {
		return 0, err
	}
	items := []store.Item{{Key: key, Value: value, TTL: ttl, Cond: cond}}
	res := s.write(ctx, writeReq{op: opSet, project: project, items: copyValues(items)})
	return res.version, res.err
}

// SetMany stores every item atomically. See store.Store.
func (s *Store) SetMany(ctx context.Context, project string, items []store.Item) error {
	_, err := s.SetManyIf(ctx, project, items)
	return err
}

// SetManyIf stores every item atomically and returns their versions. See
// store.Store.
func (s *Store) SetManyIf(ctx context.Context, project string, items []store.Item) ([]uint64, error) {
	if err := checkProject(project); err != nil {
		return nil, err
	}
	if err := s.cfg.Limits.CheckItems(items); err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return []uint64{}, s.ready(ctx)
	}
	res := s.write(ctx, writeReq{op: opSetMany, project: project, items: copyValues(items)})
	if res.err != nil {
		return nil, res.err
	}
	return store.SameVersion(len(items), res.version), nil
}

// Delete removes key and reports whether it existed. See store.Store.
func (s *Store) Delete(ctx context.Context, project, key string) (bool, error) {
	return s.DeleteIf(ctx, project, key, store.Cond{})
}

// DeleteIf removes key if cond holds. See store.Store.
func (s *Store) DeleteIf(ctx context.Context, project, key string, cond store.Cond) (bool, error) {
	if err := checkProject(project); err != nil {
		return false, err
	}
	if err := s.cfg.Limits.CheckKey(key); err != nil {
		return false, err
	}
	res := s.write(ctx, writeReq{op: opDelete, project: project, keys: []string{key}, cond: cond})
	if res.err != nil {
		return false, res.err
	}
	return res.existed[0], nil
}

// Expire replaces the expiry of key. See store.Store.
func (s *Store) Expire(ctx context.Context, project, key string, ttl time.Duration) (uint64, bool, error) {
	if err := checkProject(project); err != nil {
		return 0, false, err
	}
	if err := s.cfg.Limits.CheckKey(key); err != nil {
		return 0, false, err
	}
	if err := store.CheckTTL(ttl); err != nil {
		return 0, false, err
	}
	res := s.write(ctx, writeReq{op: opExpire, project: project, keys: []string{key}, ttl: ttl})
	return res.version, res.version != 0, res.err
}

// DeleteMany removes keys and reports, per key, whether it existed. See
// store.Store.
func (s *Store) DeleteMany(ctx context.Context, project string, keys []string) ([]bool, error) {
	if err := checkProject(project); err != nil {
		return nil, err
	}
	if err := s.cfg.Limits.CheckKeys(keys); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		if err := s.ready(ctx); err != nil {
			return nil, err
		}
		return []bool{}, nil
	}
	res := s.write(ctx, writeReq{op: opDeleteMany, project: project, keys: keys})
	return res.existed, res.err
}

// Clear removes every entry of the project. See store.Store.
func (s *Store) Clear(ctx context.Context, project string) (int64, error) {
	if err := checkProject(project); err != nil {
		return 0, err
	}
	res := s.write(ctx, writeReq{op: opClear, project: project})
	return res.n, res.err
}

// Incr adds delta to the integer under key. See store.Store.
func (s *Store) Incr(ctx context.Context, project, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := checkProject(project); err != nil {
		return 0, err
	}
	if err := s.cfg.Limits.CheckKey(key); err != nil {
		return 0, err
	}
	if err := store.CheckTTL(ttl); err != nil {
		return 0, err
	}
	res := s.write(ctx, writeReq{op: opIncr, project: project, keys: []string{key}, delta: delta, ttl: ttl})
	return res.n, res.err
}

// SetQuota sets or (with 0) removes the project's quota override. It takes
// effect for every batch that starts after it returns, in every daemon.
func (s *Store) SetQuota(ctx context.Context, project string, quota int64) error {
	if err := checkProject(project); err != nil {
		return err
	}
	if quota < 0 {
		return fmt.Errorf("%w: quota is negative (%d)", store.ErrBadArgument, quota)
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	var arg any // NULL removes the override
	if quota > 0 {
		arg = quota
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	// The project's leases end with the change (lease.go): a lowered
	// quota holds for them too. The upsert locks the usage row first.
	err := s.twice(ctx, func(q querier) error {
		b := &pgx.Batch{}
		b.Queue(sqlSetQuota, project, arg)
		b.Queue(sqlFoldLeases, project)
		return q.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return dbError(err)
	}
	s.known.Store(project, true)
	return nil
}

// SetDefaultQuota sets the quota of projects without an override, for every
// daemon sharing the database.
func (s *Store) SetDefaultQuota(ctx context.Context, quota int64) error {
	if quota <= 0 {
		return fmt.Errorf("%w: default quota must be positive, got %d", store.ErrBadArgument, quota)
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	// The leases of the projects without an override end with the change
	// (lease.go). The default's row is locked first, then their usage rows,
	// as a grant does.
	err := s.twice(ctx, func(q querier) error {
		b := &pgx.Batch{}
		b.Queue(sqlSetDefaultQuota, quota)
		b.Queue(sqlLockLeasedDefault)
		b.Queue(sqlFoldLeasedDefault)
		return q.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return dbError(err)
	}
	return nil
}
