// Package batch is the queue behind every group commit of the stores: many
// callers each submit an item and wait; one goroutine takes what is queued at
// that moment as one batch, hands it to the backend's apply function, and
// each caller gets its own answer.
//
// It is the cut of Pebble's commitPipeline: the rules of queueing live here
// and are tested once, with a fake apply — a closed queue refuses, a full one
// pushes back until the caller's context ends, a caller who gives up is not
// applied if its batch has not started, the drain takes what is queued up to
// the batch limits and carries the item that did not fit to the next batch,
// and a panic in apply fails that batch's callers instead of the process.
// What a batch means — a bbolt transaction, a PostgreSQL transaction, one
// pipelined read — stays with the backend.
//
// There is no linger timer: the drain never waits for company. An item that
// arrives at an idle queue is applied at once, alone; under load, items queue
// while a batch is applied and form the next one.
package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
)

// Errors of a batch whose apply went wrong. Neither matches a store error, so
// the daemon reports them to the client as internal errors and logs them.
var (
	// ErrPanicked is the answer of every call of a batch whose apply
	// panicked before answering it. What the batch had written may or may
	// not be committed (a bbolt transaction rolls back; a PostgreSQL one
	// that had committed stays committed).
	ErrPanicked = errors.New("batch apply panicked")
	// ErrUnanswered is the answer of a call that apply returned without
	// answering: a bug of the backend, reported instead of leaving the
	// caller waiting for ever.
	ErrUnanswered = errors.New("batch apply returned without answering the call")
)

// Config configures a Queue. Capacity, MaxWeight and Apply are required.
type Config[T, R any] struct {
	// Name names the queue in its errors: "the write queue stayed full".
	Name string
	// Capacity bounds the items waiting to be drawn into a batch. While the
	// queue is full, Submit waits within its context, so a slow backend
	// pushes back on callers instead of piling up memory and delay.
	Capacity int
	// MaxWeight bounds the summed Weight of the items of one batch. The
	// first item of a batch always goes in, however heavy.
	MaxWeight int
	// Weight is what an item counts against MaxWeight. nil counts 1 an item.
	Weight func(T) int
	// MaxBytes bounds the summed Bytes of the items of one batch, the first
	// always going in. 0 means no bound.
	MaxBytes int
	// Bytes is what an item counts against MaxBytes. nil counts 0.
	Bytes func(T) int
	// Abandonable lets callers stop waiting. When it is set, a caller whose
	// context ends after its item was queued returns at once with
	// store.ErrUnavailable (the text says AbandonedMessage), and an item
	// whose caller has gone when its batch is drawn is not applied. When it
	// is not set, a queued item is always applied and its caller waits for
	// the real outcome, whatever its context does.
	Abandonable bool
	// AbandonedMessage is what the error of a caller who gave up says after
	// "store unavailable: ", e.g. "gave up waiting for the commit, the write
	// may or may not be applied". Empty means "gave up waiting for the
	// answer".
	AbandonedMessage string
	// Apply applies one batch, in queue order, and answers each of its calls
	// exactly once (Call.Answer or Call.Fail) before it returns. It runs on
	// the queue's goroutine, one batch at a time; it must neither keep calls
	// nor answer them after it returns.
	Apply func(calls []*Call[T, R])
	// Logger receives a panic of Apply, with its stack, and calls that Apply
	// left unanswered. nil means zap.NewNop().
	Logger *zap.Logger
}

// Queue is a bounded queue of items drained in batches by one goroutine,
// which New starts and Close ends. Submit is safe for concurrent use.
type Queue[T, R any] struct {
	cfg Config[T, R]

	// mu guards closed and, held for reading by every Submit while it
	// sends, keeps Close from closing ch under a sender.
	mu     sync.RWMutex
	closed bool
	ch     chan *Call[T, R]
	done   chan struct{} // closed when the drain goroutine has ended

	// The drain's state, touched only by its goroutine.
	carry       *Call[T, R]   // drawn, but left for the next batch
	batch, live []*Call[T, R] // the batch drawn; its calls still awaited
}

// Call is one submitted item waiting for its answer.
type Call[T, R any] struct {
	Item T

	abandoned <-chan struct{} // the caller's ctx.Done() when the queue is Abandonable
	// done is closed once r and err hold the answer: answering never
	// blocks on a caller, and the channel costs one allocation.
	done     chan struct{}
	r        R
	err      error
	answered bool // touched only by the drain goroutine
}

// New returns a queue and starts its drain goroutine, which runs until
// Close. It panics if Capacity, MaxWeight or Apply is missing: those are
// mistakes in the code, not in a setting.
func New[T, R any](cfg Config[T, R]) *Queue[T, R] {
	if cfg.Capacity <= 0 || cfg.MaxWeight <= 0 || cfg.Apply == nil {
		panic(fmt.Sprintf("batch: queue %q needs Capacity > 0, MaxWeight > 0 and Apply", cfg.Name))
	}
	if cfg.Weight == nil {
		cfg.Weight = func(T) int { return 1 }
	}
	if cfg.Bytes == nil {
		cfg.Bytes = func(T) int { return 0 }
	}
	if cfg.AbandonedMessage == "" {
		cfg.AbandonedMessage = "gave up waiting for the answer"
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	q := &Queue[T, R]{
		cfg:  cfg,
		ch:   make(chan *Call[T, R], cfg.Capacity),
		done: make(chan struct{}),
	}
	go q.run()
	return q
}

// Submit queues item and waits for its answer: the result Apply gave it, or
// the error Apply or the queue failed it with.
//
// It fails at once with ctx's error if ctx has ended, and with
// store.ErrClosed after Close. While the queue is full it waits; if ctx ends
// first it fails with store.ErrBusy, wrapping ctx's error, and the item is
// not applied. Once the item is queued, see Config.Abandonable.
func (q *Queue[T, R]) Submit(ctx context.Context, item T) (R, error) {
	var zero R
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	c := &Call[T, R]{Item: item, done: make(chan struct{})}
	if q.cfg.Abandonable {
		c.abandoned = ctx.Done()
	}
	if err := q.enqueue(ctx, c); err != nil {
		return zero, err
	}
	if !q.cfg.Abandonable {
		<-c.done
		return c.r, c.err
	}
	select {
	case <-c.done:
		return c.r, c.err
	case <-ctx.Done():
		select {
		case <-c.done: // answered meanwhile: the real outcome wins
			return c.r, c.err
		default:
		}
		return zero, fmt.Errorf("%w: %s: %w", store.ErrUnavailable, q.cfg.AbandonedMessage, ctx.Err())
	}
}

// enqueue puts c on the queue, waiting within ctx while it is full.
func (q *Queue[T, R]) enqueue(ctx context.Context, c *Call[T, R]) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return store.ErrClosed
	}
	select {
	case q.ch <- c:
		return nil
	default:
	}
	select {
	case q.ch <- c:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: the %s queue stayed full: %w", store.ErrBusy, q.cfg.Name, ctx.Err())
	}
}

// Len is the number of items waiting to be drawn into a batch.
func (q *Queue[T, R]) Len() int {
	return len(q.ch)
}

// Close refuses new items (Submit fails with store.ErrClosed), applies and
// answers every item already queued, and returns when the drain goroutine
// has ended. A second Close waits in the same way.
func (q *Queue[T, R]) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		// No Submit is sending (each holds mu for reading while it
		// does), so closing ch is safe; the drain empties it and ends.
		close(q.ch)
	}
	q.mu.Unlock()
	<-q.done
}

// run is the drain goroutine: batch after batch until the queue is closed
// and empty.
func (q *Queue[T, R]) run() {
	defer close(q.done)
	for {
		batch, ok := q.next()
		if !ok {
			return
		}
		q.apply(batch)
		clear(batch) // drop references to answered calls
	}
}

// next draws the next batch: the call carried from the last draw or else the
// next to arrive (waiting for it), then whatever else is queued right now,
// while the batch stays within MaxWeight and MaxBytes. The call that would
// cross a limit is carried to the next batch. ok is false once the queue is
// closed and empty.
//
// This is the whole drain policy. A fairer one — round-robin across
// projects — replaces this method (and adds a Config field naming an
// item's project); Submit, the limits, the abandoned rule and apply stay.
func (q *Queue[T, R]) next() (batch []*Call[T, R], ok bool) {
	first := q.carry
	q.carry = nil
	if first == nil {
		if first, ok = <-q.ch; !ok {
			return nil, false
		}
	}
	batch = append(q.batch[:0], first)
	weight, size := q.cfg.Weight(first.Item), q.cfg.Bytes(first.Item)
	for weight < q.cfg.MaxWeight && (q.cfg.MaxBytes == 0 || size < q.cfg.MaxBytes) {
		var c *Call[T, R]
		select {
		case c, ok = <-q.ch:
		default: // nothing more queued right now: apply, don't wait
		}
		if c == nil {
			break
		}
		w, b := q.cfg.Weight(c.Item), q.cfg.Bytes(c.Item)
		if weight+w > q.cfg.MaxWeight || (q.cfg.MaxBytes > 0 && size+b > q.cfg.MaxBytes) {
			q.carry = c
			break
		}
		batch = append(batch, c)
		weight += w
		size += b
	}
	q.batch = batch
	return batch, true
}

// apply answers the calls of batch whose callers have gone, hands the others
// to Config.Apply, and fails what a panic or a bug left unanswered.
func (q *Queue[T, R]) apply(batch []*Call[T, R]) {
	live := q.live[:0]
	for _, c := range batch {
		select {
		case <-c.abandoned:
			// Nobody waits for this answer; it only completes the call.
			c.Fail(fmt.Errorf("%w: the caller gave up before its batch started", store.ErrUnavailable))
		default:
			live = append(live, c)
		}
	}
	q.live = live
	if len(live) > 0 {
		q.safelyApply(live)
	}
	for _, c := range batch {
		if !c.answered {
			q.cfg.Logger.Error("batch: apply returned without answering a call", zap.String("queue", q.cfg.Name))
			c.Fail(fmt.Errorf("%s queue: %w", q.cfg.Name, ErrUnanswered))
		}
	}
	clear(live)
}

// safelyApply runs Config.Apply and turns a panic into the answer of every
// call it had not answered yet, as bbolt's safelyCall does for DB.Batch.
func (q *Queue[T, R]) safelyApply(calls []*Call[T, R]) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		q.cfg.Logger.Error("batch: apply panicked; its unanswered calls fail",
			zap.String("queue", q.cfg.Name), zap.Int("calls", len(calls)),
			zap.Any("panic", v), zap.StackSkip("stack", 1))
		err := fmt.Errorf("%s queue: %w: %v", q.cfg.Name, ErrPanicked, v)
		for _, c := range calls {
			if !c.answered {
				c.Fail(err)
			}
		}
	}()
	q.cfg.Apply(calls)
}

// Answer gives the call's caller its result.
func (c *Call[T, R]) Answer(r R) { c.finish(r, nil) }

// Fail gives the call's caller err.
func (c *Call[T, R]) Fail(err error) {
	var zero R
	c.finish(zero, err)
}

func (c *Call[T, R]) finish(r R, err error) {
	if c.answered {
		panic("batch: a call was answered twice")
	}
	c.answered = true
	c.r, c.err = r, err
	close(c.done)
}
