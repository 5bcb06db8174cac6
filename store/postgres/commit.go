package postgres

import (
	"context"
	"errors"

	"go.uber.org/zap"
)

// maxBatchAttempts bounds how often a batch is run again after a conflict
// with another transaction. Locks are taken in a fixed order, so conflicts
// should not happen at all; the retry is a safety net, not a strategy.
const maxBatchAttempts = 3

// commit applies the calls of one batch and answers every one. It is the
// apply function of each committer's queue.
func (s *Store) commit(calls []*writeCall) {
	// Batches of Sets far from their quota take one round trip.
	if reqs := requests(calls); onlySets(reqs) {
		applied, err := s.commitFast(reqs)
		if err != nil && classify(err) == classUnavailable {
			s.fail(calls, err)
			return
		}
		// On a conflict or a refused statement nothing was applied, and the
		// general path sorts it out.
		var done, rest []*writeCall
		for _, c := range calls {
			if applied[c.Item.project] {
				done = append(done, c)
			} else {
				rest = append(rest, c)
			}
		}
		if len(done) > 0 {
			s.cfg.ObserveBatch(len(done))
			for _, c := range done {
				c.Answer(writeResult{})
			}
		}
		calls = rest
		if len(calls) == 0 {
			return
		}
	}

	results, err := s.commitRetrying(requests(calls))
	if err == nil {
		s.cfg.ObserveBatch(len(calls))
		for i, c := range calls {
			c.Answer(results[i])
		}
		return
	}
	if len(calls) > 1 && classify(err) == classRetryAlone {
		s.log.Warn("write batch failed; retrying its calls one at a time",
			zap.Int("calls", len(calls)), zap.Error(err))
		for _, c := range calls {
			res, err := s.commitRetrying([]*writeReq{&c.Item})
			if err != nil {
				c.Fail(dbError(err))
				continue
			}
			s.cfg.ObserveBatch(1)
			c.Answer(res[0])
		}
		return
	}
	s.fail(calls, err)
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
func (s *Store) commitRetrying(reqs []*writeReq) ([]writeResult, error) {
	for attempt := 1; ; attempt++ {
		res, err := s.applyBatch(reqs)
		if err == nil || classify(err) != classRetryBatch || attempt == maxBatchAttempts {
			return res, err
		}
	}
}

// applyBatch applies reqs in one transaction and returns each call's result
// once it has committed. An error means nothing was committed — or, if it
// happened during the commit, that the outcome is unknown.
func (s *Store) applyBatch(reqs []*writeReq) ([]writeResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StatementTimeout)
	defer cancel()

	t := newTxn(reqs, s.nowArg())
	names := make([]string, len(t.order))
	for i, p := range t.order {
		names[i] = p.name
	}
	if err := s.ensureUsageRows(ctx, names); err != nil {
		return nil, err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
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
		return nil, err
	}
	return t.results, nil
}
