package bolt

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
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
	// request always goes in, however large), so that a run of large SetMany
	// calls does not build a transaction of gigabytes.
	maxBatchBytes = 16 << 20
	// queueCapacity bounds the write queue. It holds one full batch while
	// the previous one commits, so under load the committer always finds a
	// full batch ready. Beyond that, writers wait to enqueue — where their
	// context still applies — instead of piling up unbounded memory and
	// queueing delay behind a slow disk.
	queueCapacity = maxBatch
)

// request is one write call waiting for the committer.
type request struct {
	// apply performs the write in tx. A refusal (quota, not an integer) is
	// reported in the result, after apply has decided it without mutating
	// anything; an error means the transaction must be rolled back.
	apply func(w *writeTx) (result, error)
	size  int         // bytes of keys and values, for maxBatchBytes
	done  chan result // buffered: the committer never blocks on a caller
}

// result is the answer to one request.
type result struct {
	n     int64
	flags []bool
	err   error
}

// writeTx is what a request's apply gets: the transaction and its clock.
type writeTx struct {
	tx  *bbolt.Tx
	now int64 // unix ms, one instant for the whole transaction
	s   *Store
}

// submit queues a write and waits for its result. ctx applies while the
// request waits to enter the queue; once queued, the write will be applied
// and submit waits for its outcome regardless of ctx, so a write whose ctx
// expires after that point may still commit.
func (s *Store) submit(ctx context.Context, size int, apply func(w *writeTx) (result, error)) result {
	if err := ctx.Err(); err != nil {
		return result{err: err}
	}
	req := &request{apply: apply, size: size, done: make(chan result, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return result{err: store.ErrClosed}
	}
	select {
	case s.queue <- req:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return result{err: fmt.Errorf("%w: the write queue stayed full: %w", store.ErrBusy, ctx.Err())}
	}
	return <-req.done
}

// commitLoop is the committer goroutine. It ends when Close closes the
// queue, after committing everything that was in it.
func (s *Store) commitLoop() {
	defer close(s.committerDone)
	batch := make([]*request, 0, maxBatch)
	for first := range s.queue {
		batch = append(batch[:0], first)
		size := first.size
	drain:
		for len(batch) < maxBatch && size < maxBatchBytes {
			select {
			case req, ok := <-s.queue:
				if !ok {
					break drain
				}
				batch = append(batch, req)
				size += req.size
			default:
				break drain // nothing more queued right now: commit, don't wait
			}
		}
		s.commit(batch)
		clear(batch) // drop references to answered requests
	}
}

// commit applies batch in one transaction and answers every request. If the
// transaction fails, each request is retried in a transaction of its own so
// that only the one that cannot commit fails.
func (s *Store) commit(batch []*request) {
	results := make([]result, len(batch))
	err := s.db.Update(func(tx *bbolt.Tx) error {
		w := &writeTx{tx: tx, now: s.nowMs(), s: s}
		for i, req := range batch {
			res, err := req.apply(w)
			if err != nil {
				return err
			}
			results[i] = res
		}
		return nil
	})
	if err == nil {
		s.cfg.ObserveBatch(len(batch))
		for i, req := range batch {
			req.done <- results[i]
		}
		return
	}
	if len(batch) == 1 {
		batch[0].done <- result{err: fmt.Errorf("%w: commit: %w", store.ErrUnavailable, err)}
		return
	}
	s.cfg.Logger.Warn("bolt: a batch failed to commit; retrying its writes one per transaction",
		zap.Int("writes", len(batch)), zap.Error(err))
	for i := range batch {
		s.commit(batch[i : i+1])
	}
}
