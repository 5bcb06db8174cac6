package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
)

// maxBatchAttempts bounds how often a batch is run again after a conflict
// with another transaction. Locks are taken in a fixed order, so conflicts
// should not happen at all; the retry is a safety net, not a strategy.
const maxBatchAttempts = 3

// errPurgeMore is the result of a write whose quota check purged one
// slice of its project's expired entries and needs the next before it can
// be decided; the committer requeues it, with its project's later calls.
// It never reaches a caller.
var errPurgeMore = fmt.Errorf("%w: the purge of expired entries goes on in the next transaction", store.ErrUnavailable)

// commit applies the calls of one batch and answers or requeues every one.
// It is the apply function of each committer's queue. A batch that failed
// on a lost connection before anything of it was committed runs once more,
// without its Incrs (see retry.go).
func (s *Store) commit(h *holder, calls []*writeCall) {
	h.busySince.Store(time.Now().UnixNano())
	defer h.busySince.Store(0)
	waiting := map[string]bool{} // projects with a requeued call
	failed, err := s.commitCalls(h, calls, waiting, false)
	if len(failed) == 0 {
		return
	}
	var again []*writeCall
	for _, c := range failed {
		if c.Item.op == opIncr {
			c.Fail(dbError(err))
		} else {
			again = append(again, c)
		}
	}
	if len(again) == 0 {
		return
	}
	s.log.Info("write batch lost its connection before committing; running it again once",
		zap.Int("calls", len(again)), zap.Error(err))
	if failed, err := s.commitCalls(h, again, waiting, true); len(failed) > 0 {
		s.fail(failed, err)
	}
}

// commitCalls applies calls and answers or requeues each, except, when the
// batch failed on a lost connection before committing anything, the calls
// it returns with that error, unanswered, for the caller to retry. retry
// says this is that second attempt.
func (s *Store) commitCalls(h *holder, calls []*writeCall, waiting map[string]bool, retry bool) (failed []*writeCall, err error) {
	// Batches of Sets far from their quota, or under a lease, take one
	// round trip; those of a project another writer committed to while the
	// statement waited, or whose lease had ended, one more.
	if onlySets(requests(calls)) {
		contended, rest, err := s.commitSets(h, calls, retry, false)
		if err == nil && len(contended) > 0 {
			// With the rows locked first nobody can come first again, but
			// whatever is not applied still goes on.
			again, more, moreErr := s.commitSets(h, contended, retry, true)
			rest = append(append(again, more...), rest...)
			err = moreErr
		}
		if err != nil {
			if retryableWrite(err) && !retry {
				return rest, err
			}
			s.fail(rest, err)
			return nil, nil
		}
		calls = rest
		if len(calls) == 0 {
			return nil, nil
		}
	}

	// The exact path folds the leases of its projects (lease.go).
	for _, c := range calls {
		h.forget(s, c.Item.project)
	}
	results, err := s.commitRetrying(requests(calls), retry)
	if err == nil {
		s.answer(calls, results, waiting)
		return nil, nil
	}
	if retryableWrite(err) && !retry {
		return calls, err
	}
	if len(calls) > 1 && classify(err) == classRetryAlone {
		s.log.Warn("write batch failed; retrying its calls one at a time",
			zap.Int("calls", len(calls)), zap.Error(err))
		for _, c := range calls {
			if waiting[c.Item.project] {
				c.Requeue()
				continue
			}
			res, err := s.commitRetrying([]*writeReq{&c.Item}, retry)
			if err != nil {
				c.Fail(dbError(err))
				continue
			}
			s.answer([]*writeCall{c}, res, waiting)
		}
		return nil, nil
	}
	s.fail(calls, err)
	return nil, nil
}

// commitSets runs calls, all Sets and SetManys, through commitFast and
// answers those it applied. It returns the calls of the projects another
// writer came first to, or whose lease had ended (contended: to run again
// with lockFirst, or under a new lease), and the
// others it did not apply (rest: for the general path). On an error of the
// connection nothing is answered: every call is in rest, and err says
// whether any may have been committed.
func (s *Store) commitSets(h *holder, calls []*writeCall, retry, lockFirst bool) (contended, rest []*writeCall, err error) {
	applied, busy, versions, err := s.commitFast(h, requests(calls), retry, lockFirst)
	if err != nil && classify(err) == classUnavailable {
		return nil, calls, err
	}
	// On a conflict or a refused statement nothing was applied, and the
	// general path sorts it out.
	var done []*writeCall
	var doneVersions []uint64
	for i, c := range calls {
		switch {
		case applied[c.Item.project]:
			done = append(done, c)
			doneVersions = append(doneVersions, versions[i])
		case busy[c.Item.project]:
			contended = append(contended, c)
		default:
			rest = append(rest, c)
		}
	}
	if len(done) > 0 {
		s.cfg.ObserveBatch(len(done))
		for i, c := range done {
			c.Answer(writeResult{version: doneVersions[i]})
		}
	}
	return contended, rest, nil
}

// answer answers the calls of a committed transaction with their results,
// and requeues those waiting for the next slice of a purge.
func (s *Store) answer(calls []*writeCall, results []writeResult, waiting map[string]bool) {
	s.cfg.ObserveBatch(len(calls))
	for i, c := range calls {
		if results[i].err == errPurgeMore {
			waiting[c.Item.project] = true
			c.Requeue()
			continue
		}
		c.Answer(results[i])
	}
}

// requests returns the requests of calls, in order.
func requests(calls []*writeCall) []*writeReq {
	reqs := make([]*writeReq, len(calls))
	for i, c := range calls {
		reqs[i] = &c.Item
	}
	return reqs
}

// fail answers every one of calls with err, from the database.
func (s *Store) fail(calls []*writeCall, err error) {
	err = dbError(err)
	for _, c := range calls {
		c.Fail(err)
	}
}

// commitRetrying applies reqs in one transaction, running it again after a
// conflict with another transaction.
func (s *Store) commitRetrying(reqs []*writeReq, retry bool) ([]writeResult, error) {
	for attempt := 1; ; attempt++ {
		res, err := s.applyBatch(reqs, retry)
		if err == nil || classify(err) != classRetryBatch || attempt == maxBatchAttempts {
			return res, err
		}
	}
}

// applyBatch applies reqs in one transaction and returns each call's result
// once it has committed. An error means nothing was committed — or, if it
// happened during the commit, that the outcome is unknown; it is wrapped by
// notCommitted when nothing was. retry takes a checked connection.
func (s *Store) applyBatch(reqs []*writeReq, retry bool) ([]writeResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StatementTimeout)
	defer cancel()

	t := newTxn(reqs, s.nowArg())
	t.sweepBatch = int64(s.cfg.SweepBatch)
	names := make([]string, len(t.order))
	for i, p := range t.order {
		names[i] = p.name
	}
	// The usage rows are created by an idempotent statement of its own:
	// whether it committed or not, running it again is harmless.
	if err := s.ensureUsageRows(ctx, names); err != nil {
		return nil, notCommitted(err)
	}
	conn, err := s.acquire(ctx, retry)
	if err != nil {
		return nil, notCommitted(err)
	}
	defer conn.Release()
	t.conn = conn.Conn()
	if err := t.run(ctx); err != nil {
		rollback(t.conn)
		if errors.Is(err, errUsageRowMissing) {
			for _, n := range names {
				s.known.Delete(n)
			}
		}
		if t.uncommitted(err) {
			err = notCommitted(err)
		}
		return nil, err
	}
	return t.results, nil
}
