package bolt

import (
	"context"
	"fmt"

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
	size  int // bytes of keys and values, for maxBatchBytes
}

// result is the answer to one request.
type result struct {
	n     int64
	flags []bool
	err   error
}

// writeCall is a request in the write queue.
type writeCall = batch.Call[request, result]

// writeTx is what a request's apply gets: the transaction and its clock.
type writeTx struct {
	tx  *bbolt.Tx
	now int64 // unix ms, one instant for the whole transaction
	s   *Store
}

// newQueue returns the write queue, whose committer goroutine runs commit
// until Close.
func (s *Store) newQueue() *batch.Queue[request, result] {
	return batch.New(batch.Config[request, result]{
		Name:      "write",
		Capacity:  queueCapacity,
		MaxWeight: maxBatch,
		MaxBytes:  maxBatchBytes,
		Bytes:     func(r request) int { return r.size },
		Apply:     s.commit,
		Logger:    s.cfg.Logger,
	})
}

// submit queues a write and waits for its result. ctx applies while the
// request waits to enter the queue; once queued, the write will be applied
// and submit waits for its outcome regardless of ctx, so a write whose ctx
// expires after that point may still commit.
func (s *Store) submit(ctx context.Context, size int, apply func(w *writeTx) (result, error)) result {
	res, err := s.queue.Submit(ctx, request{apply: apply, size: size})
	if err != nil {
		return result{err: err}
	}
	return res
}

// commit applies calls in one transaction and answers every one. If the
// transaction fails, each call is retried in a transaction of its own so
// that only the one that cannot commit fails.
func (s *Store) commit(calls []*writeCall) {
	results := make([]result, len(calls))
	err := s.db.Update(func(tx *bbolt.Tx) error {
		w := &writeTx{tx: tx, now: s.nowMs(), s: s}
		for i, c := range calls {
			res, err := c.Item.apply(w)
			if err != nil {
				return err
			}
			results[i] = res
		}
		return nil
	})
	if err == nil {
		s.cfg.ObserveBatch(len(calls))
		for i, c := range calls {
			c.Answer(results[i])
		}
		return
	}
	if len(calls) == 1 {
		calls[0].Fail(fmt.Errorf("%w: commit: %w", store.ErrUnavailable, err))
		return
	}
	s.cfg.Logger.Warn("bolt: a batch failed to commit; retrying its writes one per transaction",
		zap.Int("writes", len(calls)), zap.Error(err))
	for i := range calls {
		s.commit(calls[i : i+1])
	}
}
