package pebble

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
)

// A batch's way from its apply to its answers. The committer applies each
// batch to Pebble without waiting for its log sync (DB.ApplyNoSyncWait) and
// takes the snapshot through it; then the batch is settled — its sync
// waited for (Batch.SyncWait), its snapshot made the read view — and only
// then are its calls answered.
//
// By default (Config.PipelineDepth 1) the committer settles each batch
// itself before it answers and draws the next: a cycle is build, apply and
// log sync. With a depth of 2 or more, the committer hands each applied
// batch to the completer goroutine, which settles and answers it, and
// meanwhile builds and applies the next one, whose log record Pebble's log
// writer syncs with its next fsync: a cycle can be the fsync alone. On the
// 2-core machine of docs/PERFORMANCE.md that measured no better (more,
// smaller batches cost more CPU per write, and the CPU was the limit), so it
// stays off by default.
//
// The rules either way:
//   - No answer precedes its batch's sync, refusals included (a refusal may
//     rest on a write of the batch before, still unsynced): the completer
//     finishes a Do's writes, and a Submit's caller waits for its batch's
//     done.
//   - Reads see a batch only once it is synced: its snapshot is taken on the
//     committer right after its apply and before the next one (the
//     committer is the only writer, so it holds exactly the batches up to
//     this one), and made the read view once the batch is synced.
//   - Batches are settled and answered in the order they were applied, so a
//     project's writes are answered in the order they were applied.
//   - At most PipelineDepth applied batches wait for their sync: the
//     committer waits for a slot before the queue draws its next batch, so
//     requests that arrive meanwhile join that batch.
//   - A failed log sync fails its batch and every batch after it (they were
//     built on its writes, and Pebble's log writer keeps the error), and the
//     store stops taking writes: ErrUnavailable until it is reopened. Reads
//     go on, on the last synced snapshot; Ping reports the failure.
//   - Close waits for the completer: every write answered is synced.

// maxPipelineDepth bounds Config.PipelineDepth. Pebble's log writer runs
// one fsync at a time, so more batches in flight only split the requests
// that arrive during one fsync into more batches.
const maxPipelineDepth = 4

// inflight is one batch between its apply and its answers.
type inflight struct {
	b    *pebble.Batch // nil when the batch wrote nothing (refusals only)
	view *snapView     // the snapshot through b, the read view once b is synced
	// With a pipeline: ops are the writes of Do that the completer
	// finishes, and done is closed once the batch is settled and err set
	// (a Submit's caller waits for it).
	ops  []opAnswer
	done chan struct{}
	err  error
}

// opAnswer is the outcome of a write of Do, kept until its batch is synced.
type opAnswer struct {
	op      *store.Op
	err     error
	version uint64
	existed bool
}

// settle waits for f's log sync and makes its snapshot the read view; if the
// sync fails, or failed for a batch before, it returns the error that stops
// the store's writes and leaves the read view as it was.
func (s *Store) settle(f *inflight) error {
	err := s.writesStopped()
	if f.b != nil {
		if serr := f.b.SyncWait(); serr != nil && err == nil {
			err = fmt.Errorf("%w: the embedded store's log write failed, so it takes no more writes (restart the daemon): %w", store.ErrUnavailable, serr)
			s.stopWrites(err)
			s.cfg.Logger.Error("pebble: a log sync failed; writes stop, reads go on on what was synced", zap.Error(serr))
		}
		if cerr := f.b.Close(); cerr != nil && err == nil {
			s.cfg.Logger.Warn("pebble: closing a synced batch", zap.Error(cerr))
		}
		f.b = nil
	}
	if f.view != nil {
		if err == nil {
			s.views.swap(f.view)
		} else {
			f.view.release()
		}
		f.view = nil
	}
	return err
}

// writesStopped is the failure that stopped the store's writes, or nil.
func (s *Store) writesStopped() error {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	return s.stopped
}

func (s *Store) stopWrites(err error) {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	if s.stopped == nil {
		s.stopped = err
	}
}

// pipeline is the committer's side of the commit pipeline, and the
// completer's channel.
type pipeline struct {
	handoff chan *inflight // committer → completer, in apply order
	// slots holds one token per batch handed off and not yet answered, and
	// the committer's spare (held).
	slots chan struct{}
	held  bool // the committer holds a slot for its next batch; committer only
	done  chan struct{}
	// spare holds answered batches' ops slices for the next batches.
	spare chan []opAnswer
}

func newPipeline(depth int) *pipeline {
	return &pipeline{
		handoff: make(chan *inflight, depth),
		slots:   make(chan struct{}, depth),
		done:    make(chan struct{}),
		spare:   make(chan []opAnswer, depth+1),
	}
}

// reserve makes the committer hold a slot for its next batch, waiting while
// the pipeline is full. The committer calls it at the end of each batch,
// before the queue draws the next.
func (p *pipeline) reserve() {
	if !p.held {
		p.slots <- struct{}{}
		p.held = true
	}
}

// handOff passes f to the completer, on the committer's slot (or one it
// waits for).
func (p *pipeline) handOff(f *inflight) {
	p.reserve()
	p.held = false
	p.handoff <- f
}

// opsBuf returns an empty slice for a batch's ops, reused when one is spare.
func (p *pipeline) opsBuf() []opAnswer {
	select {
	case b := <-p.spare:
		return b
	default:
		return nil
	}
}

// close ends the completer once it has answered every batch handed off,
// and waits for it. The committer must have stopped.
func (p *pipeline) close() {
	close(p.handoff)
	<-p.done
}

// complete is the completer goroutine: batch after batch, in apply order, it
// settles the batch and answers its calls.
func (s *Store) complete() {
	p := s.pipe
	defer close(p.done)
	for f := range p.handoff {
		err := s.settle(f)
		for i := range f.ops {
			a := &f.ops[i]
			if err != nil {
				a.err, a.version, a.existed = err, 0, false
			}
			s.finishOp(a)
		}
		clear(f.ops)
		select {
		case p.spare <- f.ops[:0]:
		default:
		}
		f.ops = nil
		f.err = err
		close(f.done)
		<-p.slots
	}
}

// finishOp calls a Do write's Done, logging its panic: a Done that panics
// costs no other op its answer.
func (s *Store) finishOp(a *opAnswer) {
	defer func() {
		if v := recover(); v != nil {
			s.cfg.Logger.Error("pebble: an op's Done panicked", zap.Any("panic", v), zap.StackSkip("stack", 1))
		}
	}()
	a.op.FinishWrite(a.err, a.version, a.existed)
}
