package pebble

import (
	"fmt"
	"sync"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

var _ store.Async = (*Store)(nil)

// doScratch is what one Do sorts its ops into, pooled so that a Do
// allocates nothing of its own.
type doScratch struct {
	reads  []*store.Op // OpGet and OpHas, and ops refused before any work
	writes []*writeCall
}

var doScratchPool = sync.Pool{New: func() any { return new(doScratch) }}

// Do takes single-key operations without a goroutine waiting on each. See
// store.Async.
//
// The writes go to the write queue in one submission and are answered
// from the committer once their batch has committed; a write that
// finds the queue full, or its project's share of it taken, fails at once
// with store.ErrBusy. The reads then run at once, on the caller's goroutine,
// on one snapshot for all of them, and each op's Done is called while its
// value is held: an OpGet's Value points into Pebble's memory and is valid
// only while Done runs.
func (s *Store) Do(ops []*store.Op) {
	sc := doScratchPool.Get().(*doScratch)
	// Sort every op before any Done is called: after its Done, an op is its
	// caller's again.
	for _, op := range ops {
		op.Found, op.Version, op.Err = false, 0, nil
		if err := s.checkOp(op); err != nil {
			op.Err = err
			sc.reads = append(sc.reads, op)
			continue
		}
		switch op.Kind {
		case store.OpGet, store.OpHas:
			sc.reads = append(sc.reads, op)
		default:
			c := s.queue.NewCall()
			c.Item = request{project: op.Project, frees: op.Kind == store.OpDelete, size: len(op.Key) + len(op.Value), op: op}
			c.Deadline = op.Deadline
			sc.writes = append(sc.writes, c)
		}
	}
	if len(sc.writes) > 0 {
		s.queue.SubmitAll(sc.writes)
	}
	s.readOps(sc.reads)
	clear(sc.reads)
	clear(sc.writes)
	sc.reads, sc.writes = sc.reads[:0], sc.writes[:0]
	doScratchPool.Put(sc)
}

// checkOp validates op as the Store method of its kind would.
func (s *Store) checkOp(op *store.Op) error {
	if op.Done == nil {
		panic("pebble: Do: an op without Done")
	}
	if err := store.CheckProject(op.Project); err != nil {
		return err
	}
	return s.limits.CheckOp(op)
}

// readOps answers ops (reads, and ops already failed) on one snapshot.
func (s *Store) readOps(ops []*store.Op) {
	if len(ops) == 0 {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		for _, op := range ops {
			if op.Err == nil {
				op.Err = store.ErrClosed
			}
			op.Done(op)
		}
		return
	}
	// An op is its caller's again once its Done has run (the daemon reuses
	// it at once), so the ops still to read are set aside first, and no op
	// is looked at after its Done.
	var now time.Time // read once, for the first op with a deadline
	live := ops[:0]
	for _, op := range ops {
		if op.Err == nil && !op.Deadline.IsZero() {
			if now.IsZero() {
				now = time.Now()
			}
			if !now.Before(op.Deadline) {
				op.Err = fmt.Errorf("%w: the deadline passed before the read started", store.ErrUnavailable)
			}
		}
		if op.Err != nil {
			op.Done(op)
			continue
		}
		live = append(live, op)
	}
	if len(live) == 0 {
		return
	}
	v := s.views.acquire()
	defer v.release()
	r := reader{v.snap}
	nowMs := s.nowMs()
	for _, op := range live {
		answered := false
		_, err := r.with(dataKey(op.Project, []byte(op.Key)), func(rec []byte) {
			if !validRecord(rec) || expired(recordExpiry(rec), nowMs) {
				return
			}
			op.Found = true
			if op.Kind == store.OpGet {
				op.Value = recordValue(rec)
				op.Version = recordVersion(rec)
			}
			answered = true
			op.Done(op)
		})
		if answered {
			continue // after its Done, the op is its caller's again
		}
		if err != nil {
			op.Err = err
		}
		if op.Kind == store.OpGet {
			op.Value = nil
		}
		op.Done(op)
	}
}

// applyOp applies the write op of Do that r carries in the committer's
// batch.
func (w *writeTx) applyOp(r *request) (result, error) {
	op := r.op
	switch op.Kind {
	case store.OpSet:
		r.item[0] = store.Item{Key: op.Key, Value: op.Value, TTL: op.TTL, Cond: op.Cond}
		return w.set(op.Project, r.item[:])
	case store.OpDelete:
		p := w.project(op.Project)
		if op.Cond.Check {
			if conflict, err := p.checkConds([]store.Item{{Key: op.Key, Cond: op.Cond}}); conflict != nil || err != nil {
				return result{err: conflict}, err
			}
		}
		live, err := p.remove([]byte(op.Key))
		if err != nil {
			return result{}, err
		}
		res := result{}
		if live {
			res.n = 1
		}
		return res, nil
	}
	return result{}, fmt.Errorf("pebble: applyOp: unexpected operation kind %d", op.Kind)
}

// notifyOp is the write queue's Notify. The answer of a write its batch
// applied waits in the batch for the log sync, and the completer gives it
// to the op (pipeline.go); a write that failed or was refused before its
// batch (closed, busy, past its deadline, a failed batch) gets its outcome
// and its Done at once, on the committer's goroutine or on Do's.
func notifyOp(r *request, res result, err error) {
	if err == nil {
		err = res.err
	}
	if f := res.synced; f != nil {
		f.ops = append(f.ops, opAnswer{op: r.op, err: err, version: res.version, existed: res.n == 1})
		return
	}
	r.op.FinishWrite(err, res.version, res.n == 1)
}
