package postgres

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
)

// maxBatchAttempts bounds how often a batch is run again after a conflict
// with another transaction. Locks are taken in a fixed order, so conflicts
// should not happen at all; the retry is a safety net, not a strategy.
const maxBatchAttempts = 3

// commitLoop is one committer: it takes what is queued on q right now, up to
// Config.MaxBatch items, commits it as one transaction, and repeats until q
// is closed and drained.
func (s *Store) commitLoop(q <-chan *writeReq) {
	defer s.workers.Done()
	var next *writeReq // taken from q but left for the next batch
	for {
		first := next
		next = nil
		if first == nil {
			r, ok := <-q
			if !ok {
				return
			}
			first = r
		}
		batch := []*writeReq{first}
		weight, size := first.weight(), first.bytes()
	fill:
		for weight < s.cfg.MaxBatch && size < maxBatchBytes {
			select {
			case r, ok := <-q:
				if !ok {
					break fill
				}
				if weight+r.weight() > s.cfg.MaxBatch || size+r.bytes() > maxBatchBytes {
					next = r
					break fill
				}
				batch = append(batch, r)
				weight += r.weight()
				size += r.bytes()
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

// commit applies a batch and answers every call in it.
func (s *Store) commit(batch []*writeReq) {
	live := batch[:0]
	for _, r := range batch {
		select {
		case <-r.abandoned:
			// Nobody waits for this answer; it only completes the protocol.
			r.done <- writeResult{err: fmt.Errorf("%w: the caller gave up before the write was applied", store.ErrUnavailable)}
		default:
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}

	// Batches of Sets far from their quota take one round trip.
	if onlySets(live) {
		applied, err := s.commitFast(live)
		if err != nil && classify(err) == classUnavailable {
			s.fail(live, err)
			return
		}
		// On a conflict or a refused statement nothing was applied, and the
		// general path sorts it out.
		var done []*writeReq
		rest := live[:0]
		for _, r := range live {
			if applied[r.project] {
				done = append(done, r)
			} else {
				rest = append(rest, r)
			}
		}
		if len(done) > 0 {
			s.cfg.ObserveBatch(len(done))
			for _, r := range done {
				r.done <- writeResult{}
			}
		}
		live = rest
		if len(live) == 0 {
			return
		}
	}

	results, err := s.commitRetrying(live)
	if err == nil {
		s.cfg.ObserveBatch(len(live))
		for i, r := range live {
			r.done <- results[i]
		}
		return
	}
	if len(live) > 1 && classify(err) == classRetryAlone {
		s.log.Warn("write batch failed; retrying its calls one at a time",
			zap.Int("calls", len(live)), zap.Error(err))
		for _, r := range live {
			res, err := s.commitRetrying([]*writeReq{r})
			if err != nil {
				r.done <- writeResult{err: dbError(err)}
				continue
			}
			s.cfg.ObserveBatch(1)
			r.done <- res[0]
		}
		return
	}
	s.fail(live, err)
}

// fail answers every call of reqs with err, from the database.
func (s *Store) fail(reqs []*writeReq, err error) {
	err = dbError(err)
	for _, r := range reqs {
		r.done <- writeResult{err: err}
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
