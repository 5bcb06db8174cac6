package bolt

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/batch"
)

const (
	// maxBatch bounds the requests of one transaction. Larger batches share
	// one fsync among more writers, but the first writer of a batch waits
	// until the last is applied, and the transaction's dirty pages grow with
	// it. A thousand ~100-byte sets apply in about a millisecond, the cost of
	// the fsync itself, so beyond this size throughput gains little while
	// latency keeps growing.
	maxBatch = 1024
	// maxBatchBytes bounds the keys and values of one transaction (the first
	// request always goes in, however large). A small write of another
	// project waits for the transaction being written, so this bounds that
	// wait: 2 MiB write and sync in a few milliseconds, where 16 MiB of a
	// neighbour's SetMany calls held a lone set ~30 ms (kvbench's noisy
	// workload). Throughput gains little beyond it: a batch this size
	// already shares one fsync among hundreds of small writes.
	maxBatchBytes = 2 << 20
	// turnBytes is what one project may add to a transaction in its turn of
	// the round robin (batch.Config.TurnBytes): a project of small writes
	// puts hundreds in each transaction while a neighbour's 256 KiB SetMany
	// calls put one each, instead of one write per project per turn.
	turnBytes = 64 << 10
	// queueCapacity bounds the write queue. It holds one full batch while
	// the previous one commits, so under load the committer always finds a
	// full batch ready. Beyond that, writers wait to enqueue — where their
	// context still applies — instead of piling up unbounded memory and
	// queueing delay behind a slow disk.
	queueCapacity = maxBatch
)

// request is one write call waiting for the committer.
type request struct {
	// project is the request's lane in the queue, which the committer
	// serves round-robin; "" for the calls of no project (SetDefaultQuota,
	// Sweep).
	project string
	// frees is set for the writes that only remove data (Delete,
	// DeleteMany, Clear, Sweep): on a full disk they may use the disk
	// reserve, and they are never refused for want of space.
	frees bool
	// apply performs the write in tx. A refusal (quota, not an integer) is
	// reported in the result, after apply has decided it without mutating
	// anything; an error means the transaction must be rolled back.
	apply func(w *writeTx) (result, error)
	// op, when set instead of apply, is a write of Do (async.go), applied
	// by writeTx.applyOp and answered through notifyOp; an OpSet's item is
	// held in item, in the queue's pooled call, rather than in a slice of
	// its own.
	op   *store.Op
	item [1]store.Item
	size int // bytes of keys and values, for maxBatchBytes
}

// run applies the request in w: see apply.
func (r *request) run(w *writeTx) (result, error) {
	if r.op != nil {
		return w.applyOp(r)
	}
	return r.apply(w)
}

// result is the answer to one request.
type result struct {
	n       int64
	flags   []bool
	version uint64 // the version a Set, SetMany, Incr or Expire wrote
	err     error
}

// writeCall is a request in the write queue.
type writeCall = batch.Call[request, result]

// writeTx is what a request's apply gets: the transaction and its clock.
type writeTx struct {
	tx  *bbolt.Tx
	now int64 // unix ms, one instant for the whole transaction
	s   *Store
	// purgeLeft is how many expired entries the quota checks of this
	// transaction may still delete (Config.SweepBatch in all): a request
	// that needs more is requeued, and its purge goes on in the next
	// transaction, between other projects' writes.
	purgeLeft int
	// projects holds the projects this transaction's writes opened
	// (project opens them): a batch of a project's writes looks its
	// buckets and usage up once, and every write sees the usage the one
	// before it left.
	projects map[string]*projectTx
}

// project returns the named project of the transaction, opened on first
// use. Every write of a transaction opens its projects through it, so no
// two projectTx of one project hold diverging usage.
func (w *writeTx) project(name string) *projectTx {
	if p, ok := w.projects[name]; ok {
		return p
	}
	p := openProject(w.tx, name)
	if w.projects == nil {
		w.projects = make(map[string]*projectTx)
	}
	w.projects[name] = p
	return p
}

// errPurgeMore is the refusal of a request whose quota check deleted a
// slice of its project's expired entries and needs the next slice before it
// can decide; the committer requeues it. It never reaches a caller.
var errPurgeMore = fmt.Errorf("%w: the purge of expired entries goes on in the next transaction", store.ErrUnavailable)

// newQueue returns the write queue, whose committer goroutine runs commit
// until Close.
func (s *Store) newQueue() *batch.Queue[request, result] {
	return batch.New(batch.Config[request, result]{
		Name:      "write",
		Capacity:  queueCapacity,
		Key:       func(r request) string { return r.project },
		MaxPerKey: max(int(s.cfg.ProjectQueueShare*queueCapacity), 1),
		MaxWeight: maxBatch,
		MaxBytes:  maxBatchBytes,
		Bytes:     func(r request) int { return r.size },
		TurnBytes: turnBytes,
		Apply:     s.commit,
		Notify:    notifyOp,
		Logger:    s.cfg.Logger,
	})
}

// submit queues a write and waits for its result. ctx applies while the
// request waits to enter the queue; once queued, the write will be applied
// and submit waits for its outcome regardless of ctx, so a write whose ctx
// expires after that point may still commit.
func (s *Store) submit(ctx context.Context, r request) result {
	res, err := s.queue.Submit(ctx, r)
	if err != nil {
		return result{err: err}
	}
	return res
}

// commit applies calls in one transaction and answers every one, or
// requeues it. It is the queue's Apply.
func (s *Store) commit(calls []*writeCall) {
	now := time.Now()
	if !s.reserve.Held && s.reserve.Size > 0 && !now.Before(s.reserve.Next) {
		switch err := s.reserve.Take(now); {
		case err == nil:
			s.cfg.Logger.Info("bolt: the disk reserve is back; writes that add data are accepted again",
				zap.String("reserve", s.reserve.Path))
		case s.reserve.Size == 0: // given up: not for want of space
			s.cfg.Logger.Warn("bolt: no disk reserve", zap.Error(err))
		}
	}
	s.commitBatch(s.admit(calls), map[string]bool{})
}

// commitBatch applies calls in one transaction. A call whose purge of
// expired entries needs another slice is requeued, with every later call of
// its project (waiting notes the projects), so they keep their order. If
// the transaction fails, each call is retried in a transaction of its own
// so that only the one that cannot commit fails.
func (s *Store) commitBatch(calls []*writeCall, waiting map[string]bool) {
	if len(calls) == 0 {
		return
	}
	results := make([]result, len(calls))
	requeue := make([]bool, len(calls))
	var purging []string // projects whose calls this transaction requeues
	err := s.db.Update(func(tx *bbolt.Tx) error {
		w := &writeTx{tx: tx, now: s.nowMs(), s: s, purgeLeft: s.cfg.SweepBatch}
		purging = purging[:0]
		clear(requeue)
		for i, c := range calls {
			p := c.Item.project
			if waiting[p] || slices.Contains(purging, p) {
				requeue[i] = true
				continue
			}
			res, err := c.Item.run(w)
			if err != nil {
				return err
			}
			if res.err == errPurgeMore {
				purging = append(purging, p)
				requeue[i] = true
				continue
			}
			results[i] = res
		}
		return nil
	})
	if err == nil {
		s.cfg.ObserveBatch(len(calls))
		for _, p := range purging {
			waiting[p] = true
		}
		for i, c := range calls {
			if requeue[i] {
				c.Requeue()
			} else {
				c.Answer(results[i])
			}
		}
		return
	}
	if len(calls) == 1 {
		s.commitFailed(calls[0], err, waiting)
		return
	}
	s.cfg.Logger.Warn("bolt: a batch failed to commit; retrying its writes one per transaction",
		zap.Int("writes", len(calls)), zap.Error(err))
	for i := range calls {
		s.commitBatch(calls[i:i+1], waiting)
	}
}

// commitFailed answers a call whose transaction of its own failed. A write
// that frees space and failed for want of it is run once more after the
// disk reserve is released.
func (s *Store) commitFailed(c *writeCall, err error, waiting map[string]bool) {
	if !noSpace(err) {
		c.Fail(fmt.Errorf("%w: commit: %w", store.ErrUnavailable, err))
		return
	}
	if c.Item.frees && s.reserve.Held {
		if rerr := s.reserve.Release(time.Now()); rerr != nil {
			s.cfg.Logger.Error("bolt: the disk is full and the disk reserve could not be released", zap.Error(rerr))
		} else {
			s.cfg.Logger.Warn("bolt: the disk is full; released the disk reserve so that deletes go on, writes that add data are refused until there is room",
				zap.String("reserve", s.reserve.Path), zap.Error(err))
			s.commitBatch([]*writeCall{c}, waiting)
			return
		}
	}
	c.Fail(diskFull(err))
}

// admit returns the calls the committer can try now. While the disk reserve
// is released (the disk was full), a write that adds data is refused at
// once unless the file's free pages hold the batch's new data twice over
// and the reserve's size besides, so that the pages deletes need stay free;
// writes that only free space always go through.
func (s *Store) admit(calls []*writeCall) []*writeCall {
	if s.reserve.Held || s.reserve.Size == 0 {
		return calls
	}
	adding := 0
	for _, c := range calls {
		if !c.Item.frees {
			adding += c.Item.size
		}
	}
	if adding == 0 {
		return calls
	}
	// Pages the last transactions freed are pending until the next one
	// starts with no older reader: count them, they will be free for this.
	st := s.db.Stats()
	free := int64(st.FreePageN+st.PendingPageN) * int64(s.db.Info().PageSize)
	if free >= s.reserve.Size+2*int64(adding) {
		return calls
	}
	kept := calls[:0:0]
	for _, c := range calls {
		if c.Item.frees {
			kept = append(kept, c)
		} else {
			c.Fail(diskFull(nil))
		}
	}
	return kept
}

// diskFull is the error of a write refused because the disk is full.
func diskFull(cause error) error {
	const msg = "the embedded store's disk is full: delete entries or free disk space"
	if cause == nil {
		return fmt.Errorf("%w: %s", store.ErrUnavailable, msg)
	}
	return fmt.Errorf("%w: %s: %w", store.ErrUnavailable, msg, cause)
}
