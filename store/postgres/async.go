package postgres

import (
	"errors"
	"sync"

	"github.com/kvsidecar/kvsidecar/store"
)

var _ store.Async = (*Store)(nil)

// doScratch is what one Do sorts its ops into, pooled so that a Do
// allocates nothing of its own.
type doScratch struct {
	reads  []*readCall
	writes [][]*writeCall // per committer
	failed []*store.Op    // refused for their arguments
}

var doScratchPool = sync.Pool{New: func() any { return new(doScratch) }}

// Do takes single-key operations without a goroutine waiting on each. See
// store.Async.
//
// The reads go to the reader's queue and the writes to their projects'
// committers, in one submission per queue, and each op's Done is called
// from the reader or the committer once its round trip or its transaction
// is done — with the retry after a lost connection of the waiting methods.
// When the reader is idle, Do runs the reads' round trip itself, and their
// Done is called before Do returns: its caller waits that long, at most
// until the latest deadline of the reads or the statement timeout.
// An op that finds its queue full, or its project's share of it taken,
// fails at once with store.ErrBusy. An OpGet's Value is valid only while
// its Done runs.
func (s *Store) Do(ops []*store.Op) {
	sc := doScratchPool.Get().(*doScratch)
	if len(sc.writes) != len(s.writeQs) {
		sc.writes = make([][]*writeCall, len(s.writeQs))
	}
	// Sort every op before any Done is called: after its Done, an op is its
	// caller's again.
	for _, op := range ops {
		op.Found, op.Version, op.Err = false, 0, nil
		if err := s.checkOp(op); err != nil {
			op.Err = err
			sc.failed = append(sc.failed, op)
			continue
		}
		switch op.Kind {
		case store.OpGet, store.OpHas:
			c := s.readQ.NewCall()
			r := &c.Item
			r.project, r.values, r.async = op.Project, op.Kind == store.OpGet, op
			r.one[0] = op.Key
			r.keys = r.one[:]
			c.Deadline = op.Deadline
			sc.reads = append(sc.reads, c)
		default:
			i := s.committerFor(op.Project, op.Key, op.Kind == store.OpSet && !op.Cond.Check)
			c := s.writeQs[i].NewCall()
			r := &c.Item
			r.project, r.async = op.Project, op
			if op.Kind == store.OpSet {
				// No copy of the value: the op's caller keeps it until Done.
				// A nil value is stored as an empty one, not as NULL.
				value := op.Value
				if value == nil {
					value = []byte{}
				}
				r.op = opSet
				r.oneItem[0] = store.Item{Key: op.Key, Value: value, TTL: op.TTL, Cond: op.Cond}
				r.items = r.oneItem[:]
			} else {
				r.op = opDelete
				r.oneKey[0] = op.Key
				r.keys = r.oneKey[:]
				r.cond = op.Cond
			}
			c.Deadline = op.Deadline
			sc.writes[i] = append(sc.writes[i], c)
		}
	}
	// The writes go first, handed to their committers, so that they run
	// while the reads do. The reads go last: at an idle reader, Do runs
	// their round itself (batch.Queue.SubmitOrApply), with no hand-off to
	// the reader and back, bounded by the ops' deadlines (roundContext).
	// While the database fails ops as unavailable, it does not: a frozen
	// database must not hold the caller's goroutine (a connection's read
	// loop) for its ops' whole timeout, again and again.
	for i, calls := range sc.writes {
		if len(calls) > 0 {
			s.writeQs[i].SubmitAll(calls)
		}
		clear(calls)
		sc.writes[i] = calls[:0]
	}
	stalled := s.stalled.Load()
	switch {
	case len(sc.reads) == 0:
	case stalled:
		s.readQ.SubmitAll(sc.reads)
	default:
		s.readQ.SubmitOrApply(sc.reads)
	}
	for _, op := range sc.failed {
		op.Done(op)
	}
	clear(sc.reads)
	clear(sc.failed)
	sc.reads, sc.failed = sc.reads[:0], sc.failed[:0]
	doScratchPool.Put(sc)
}

// checkOp validates op as the Store method of its kind would.
func (s *Store) checkOp(op *store.Op) error {
	if op.Done == nil {
		panic("postgres: Do: an op without Done")
	}
	if err := checkProject(op.Project); err != nil {
		return err
	}
	return s.cfg.Limits.CheckOp(op)
}

// answerOp answers the read of Do c from what its read round found for its
// key (c.Item.entry): the op gets the outcome, and its Done runs within
// c.Answer. Its value is the round's own memory, not copied: Done only
// reads it, and the round keeps it until every call is answered.
func answerOp(c *readCall) {
	op := c.Item.async
	e := c.Item.entry
	op.Found = e.found
	if c.Item.values {
		op.Value, op.Version = nil, 0
		if e.found {
			op.Value, op.Version = e.value, e.version
		}
	}
	c.Answer(readResult{})
}

// notifyRead is the reader's Notify: it calls the Done of a read of Do,
// whose outcome answerOp filled in, or fails it with err.
func (s *Store) notifyRead(r *readReq, _ readResult, err error) {
	s.noteOutcome(err)
	op := r.async
	if err != nil {
		op.Found, op.Value, op.Version, op.Err = false, nil, 0, err
	}
	op.Done(op)
}

// notifyWrite is a committer's Notify: it gives a write of Do its outcome
// and calls its Done.
func (s *Store) notifyWrite(r *writeReq, res writeResult, err error) {
	if err == nil {
		err = res.err
	}
	s.noteOutcome(err)
	r.async.FinishWrite(err, res.version, len(res.existed) > 0 && res.existed[0])
}

// noteOutcome keeps Store.stalled: set when an op of Do failed as
// unavailable, cleared when one succeeded. Other errors (refusals, bad
// arguments, conflicts, quota) say nothing of the database's health.
func (s *Store) noteOutcome(err error) {
	switch {
	case err == nil:
		if s.stalled.Load() {
			s.stalled.Store(false)
		}
	case errors.Is(err, store.ErrUnavailable):
		if !s.stalled.Load() {
			s.stalled.Store(true)
		}
	}
}
