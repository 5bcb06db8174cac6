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
//
// The queue is fair across keys (for the stores, a key is a project). Each
// key has its own first-in-first-out lane, and the drain takes one item from
// each lane in turn, continuing next batch where it stopped. An item waits
// for at most one item of every other waiting key, not for all they queued:
// a key that floods the queue delays a lone item of another key by about
// one batch — it goes into the next batch drawn, or the one after when the
// batch limits cut that one short before its turn. A key
// may hold at most Config.MaxPerKey waiting items; beyond that only its own
// callers wait (and get store.ErrBusy when their context ends), the others
// still enter. Items of one key are applied in the order they were
// submitted; items of different keys may be reordered.
//
// An apply that cannot finish an item in this batch — a purge of expired
// entries that needs more than one bounded slice — puts it back with
// Call.Requeue at the head of its lane, to be drawn again in a later batch,
// so that long work proceeds in slices between other keys' items.
//
// What a batch means — a Pebble batch, a PostgreSQL transaction, one
// pipelined read — stays with the backend.
//
// Calls can also be submitted without a goroutine waiting on each:
// Queue.NewCall and Queue.SubmitAll queue a whole slice of calls under one
// lock with one wake of the drain, and Config.Notify is called once per call
// with its answer. Such a call never blocks its submitter: one that finds
// the queue full, or its key's share taken, fails at once with
// store.ErrBusy. It carries a deadline instead of a context: a call whose
// Deadline has passed when its batch is drawn is not applied and fails with
// store.ErrUnavailable. Its Call is the queue's, pooled and reused.
//
// Queue.SubmitOrApply is SubmitAll for a submitter that would rather apply
// its calls itself than wake the drain: when it finds the queue idle — no
// batch being applied, nothing queued — it draws its calls into one batch,
// within the batch limits, and applies it on its own goroutine, every other
// rule kept (one batch at a time, deadlines checked when the batch is
// drawn, a panic of Apply contained, Notify once per call). What does not
// fit, and what others submit meanwhile, is queued for the drain, which
// takes it once that batch is done. A lone caller of an idle store thus
// costs no hand-off to the drain and back.
//
// Config.Second lets a second goroutine apply a batch while one is applied,
// once enough items wait behind it, for items whose order does not matter;
// Config.ApplyHere gives the batches a submitter applies an Apply of their
// own.
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
	"time"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
)

// Errors of a batch whose apply went wrong. Neither matches a store error, so
// the daemon reports them to the client as internal errors and logs them.
var (
	// ErrPanicked is the answer of every call of a batch whose apply
	// panicked before answering it. What the batch had written may or may
	// not be committed (a Pebble batch not yet committed is dropped; a
	// PostgreSQL transaction that had committed stays committed).
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
	// pushes back on callers instead of piling up memory and delay;
	// SubmitAll refuses at once with store.ErrBusy.
	Capacity int
	// Key names the lane of an item: the project it belongs to. The drain
	// takes items round-robin across lanes. nil puts every item in one
	// lane, so the queue is first in, first out.
	Key func(T) string
	// MaxPerKey bounds the items of one key waiting to be drawn: the share
	// of Capacity one key may hold. While its key holds that many, Submit
	// waits within its context and then fails with store.ErrBusy, while
	// items of other keys still enter. 0 or more than Capacity means
	// Capacity.
	MaxPerKey int
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
	// TurnBytes is how many Bytes one lane may put into a batch in its
	// turn of the round robin before the next lane's turn: its items go in
	// while what it added this turn is below TurnBytes. A lane of small
	// writes then puts many of them into each batch while a lane of large
	// ones puts one, so a neighbour's large SetMany calls cannot ration a
	// project to one small write per batch. 0 means one item per turn.
	TurnBytes int
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
	// exactly once (Call.Answer or Call.Fail) or puts it back (Call.Requeue)
	// before it returns. It runs one batch at a time, on the queue's
	// goroutine or, for a batch SubmitOrApply drew, on that submitter's;
	// it must neither keep calls nor answer them after it returns.
	// An Apply that requeues a call must requeue every later call of the
	// batch with the same key as well, or that key's items would be applied
	// out of order.
	Apply func(calls []*Call[T, R])
	// Logger receives a panic of Apply, with its stack, and calls that Apply
	// left unanswered. nil means zap.NewNop().
	Logger *zap.Logger
	// Notify receives the answer of every call submitted with SubmitAll or
	// SubmitOrApply, exactly once: on the submitter's goroutine, before
	// SubmitAll returns, when the queue refused the call (closed or busy),
	// and otherwise on the goroutine that applies the call's batch, as
	// Apply answers it or when the queue fails it (its deadline passed,
	// Apply panicked or left it unanswered). That goroutine is the drain,
	// or, for a batch SubmitOrApply drew, the submitter itself, before
	// SubmitOrApply returns: Notify must take no lock that a caller of
	// SubmitOrApply may hold. item is the call's Item, valid only while
	// Notify runs. Notify must be quick, must not block and must not submit
	// to the queue. A panic of Notify is logged and ends that call's
	// notification alone. Required for SubmitAll and SubmitOrApply.
	Notify func(item *T, r R, err error)
	// Idle, if set, is called on the drain goroutine when it finds the
	// queue empty, before it waits for items: once at the start and once
	// after each batch that emptied it, and again, while the queue stays
	// empty, after the duration it returned if that is positive. Items
	// queued while it runs wait for it. A panic of Idle is logged, and
	// counts as a return of 0. A queue with Idle never lets a submitter
	// apply a batch (SubmitOrApply queues), so that every batch and every
	// Idle run on the drain, one after the other.
	Idle func() time.Duration
	// Second, if positive, lets a second batch be applied while one is:
	// once at least Second items wait while a batch is being applied, a
	// second goroutine draws the next batch and applies it at the same
	// time, so that two batches are in flight, never more. Apply must then
	// be safe for concurrent use and must not Requeue, and items of one key
	// may be applied out of order across the two batches: for items whose
	// order does not matter (reads). A queue with Idle ignores it.
	Second int
	// ApplyHere, if set, applies the batches that SubmitOrApply draws, on
	// its caller's goroutine, instead of Apply: a backend may wait for its
	// answer differently where its caller waits for the batch anyway.
	// Same rules as Apply.
	ApplyHere func(calls []*Call[T, R])
}

// Queue is a bounded queue of items drained in batches by one goroutine,
// which New starts and Close ends. Submit is safe for concurrent use.
type Queue[T, R any] struct {
	cfg Config[T, R]

	// mu guards everything below but done and the drain's own state.
	mu     sync.Mutex
	closed bool
	lanes  map[string]*lane[T, R] // lanes holding waiting items
	ring   ring[T, R]             // the lanes of lanes, in drain order
	n      int                    // items waiting, in all lanes
	spare  []*lane[T, R]          // emptied lanes, for reuse
	// space is closed, and replaced, when items leave the queue while
	// submitters wait for room (waiting > 0), and at Close.
	space   chan struct{}
	waiting int
	// applying is set while a batch is applied, by the drain or by a
	// submitter (SubmitOrApply): one batch at a time. Its holder owns the
	// batch, live and requeued buffers below. While it is set, submitters
	// do not wake the drain: the drain looks at the queue again after its
	// own batch, and a submitter wakes it after its batch if calls wait.
	applying bool

	// wake holds one token when the drain may have work: items queued or
	// the queue closed. One slot is enough, the drain re-checks the queue.
	wake chan struct{}
	done chan struct{} // closed when the drain goroutine has ended

	// The applier's state, touched only by whoever holds applying.
	own applier[T, R]
	// With Config.Second: extraBusy is set while the second goroutine
	// applies a batch (guarded by mu), with its own state; wakeExtra and
	// extraDone are that goroutine's wake and end.
	extraBusy bool
	extra     applier[T, R]
	wakeExtra chan struct{}
	extraDone chan struct{}

	// pool holds the calls of SubmitAll once answered, for NewCall.
	pool sync.Pool
}

// applier is the state of whoever applies a batch: the batch drawn, its
// calls still awaited, its calls put back.
type applier[T, R any] struct {
	batch, live, requeued []*Call[T, R]
	here                  bool // the batch is a submitter's (SubmitOrApply)
}

// lane is the waiting items of one key, oldest first: calls[head:]. The
// drain advances head rather than reslicing, so an emptied lane keeps its
// array for the next burst.
type lane[T, R any] struct {
	key   string
	calls []*Call[T, R]
	head  int
}

func (l *lane[T, R]) len() int { return len(l.calls) - l.head }

// ring is a first-in-first-out queue of lanes: lanes[head:]. It reuses its
// array, so the drain's turns allocate nothing.
type ring[T, R any] struct {
	lanes []*lane[T, R]
	head  int
}

func (r *ring[T, R]) len() int { return len(r.lanes) - r.head }

func (r *ring[T, R]) front() *lane[T, R] { return r.lanes[r.head] }

func (r *ring[T, R]) pop() {
	r.lanes[r.head] = nil
	r.head++
	if r.head == len(r.lanes) {
		r.lanes, r.head = r.lanes[:0], 0
	}
}

func (r *ring[T, R]) push(l *lane[T, R]) {
	if r.head > 0 && len(r.lanes) == cap(r.lanes) {
		// Slide the live part down instead of growing the array.
		n := copy(r.lanes, r.lanes[r.head:])
		clear(r.lanes[n:])
		r.lanes, r.head = r.lanes[:n], 0
	}
	r.lanes = append(r.lanes, l)
}

// Call is one submitted item waiting for its answer.
type Call[T, R any] struct {
	Item T
	// Deadline is, for a call of SubmitAll, when its submitter stops
	// waiting: a call whose Deadline has passed when its batch is drawn is
	// not applied and fails with store.ErrUnavailable. Zero means none.
	Deadline time.Time

	key string // Config.Key of Item

	// notify is Config.Notify for a call of SubmitAll, nil for Submit's.
	notify  func(item *T, r R, err error)
	next    *Call[T, R] // SubmitAll's list of the calls it refused
	refused refusal     // why SubmitAll refused the call

	abandoned <-chan struct{} // the caller's ctx.Done() when the queue is Abandonable
	// done is closed once r and err hold the answer: answering never
	// blocks on a caller, and the channel costs one allocation.
	done     chan struct{}
	r        R
	err      error
	answered bool // touched only by the applier (see Queue.applying)
	requeued bool // put back by Apply; touched only by the applier
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
	if cfg.MaxPerKey <= 0 || cfg.MaxPerKey > cfg.Capacity {
		cfg.MaxPerKey = cfg.Capacity
	}
	if cfg.Notify != nil {
		cfg.Notify = guardNotify(cfg.Notify, cfg.Name, cfg.Logger)
	}
	if cfg.Idle != nil {
		cfg.Second = 0
	}
	q := &Queue[T, R]{
		cfg:       cfg,
		lanes:     map[string]*lane[T, R]{},
		space:     make(chan struct{}),
		wake:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		wakeExtra: make(chan struct{}, 1),
		extraDone: make(chan struct{}),
	}
	go q.run()
	if cfg.Second > 0 {
		go q.runExtra()
	} else {
		close(q.extraDone)
	}
	return q
}

// guardNotify returns notify made safe against its own panic: a panic is
// logged, with its stack, and ends that call's notification only. Without
// it a panicking callback would fail the rest of its batch with
// ErrPanicked though their writes committed, end the drain goroutine (and
// the process) when the queue fails a call past its deadline, or leave the
// calls SubmitAll refused after it never notified.
func guardNotify[T, R any](notify func(item *T, r R, err error), name string, log *zap.Logger) func(item *T, r R, err error) {
	return func(item *T, r R, err error) {
		defer func() {
			if v := recover(); v != nil {
				log.Error("batch: Notify panicked", zap.String("queue", name),
					zap.Any("panic", v), zap.StackSkip("stack", 1))
			}
		}()
		notify(item, r, err)
	}
}

// Submit queues item and waits for its answer: the result Apply gave it, or
// the error Apply or the queue failed it with.
//
// It fails at once with ctx's error if ctx has ended, and with
// store.ErrClosed after Close. While the queue is full, or the item's key
// holds Config.MaxPerKey items, it waits; if ctx ends first it fails with
// store.ErrBusy, wrapping ctx's error, and the item is not applied. Once the
// item is queued, see Config.Abandonable.
func (q *Queue[T, R]) Submit(ctx context.Context, item T) (R, error) {
	var zero R
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	c := &Call[T, R]{Item: item, done: make(chan struct{})}
	if q.cfg.Key != nil {
		c.key = q.cfg.Key(item)
	}
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

// NewCall returns an empty call for SubmitAll, taken from the queue's pool.
// The caller fills its Item (and Deadline) and hands it to SubmitAll; it
// must not touch the call after that.
func (q *Queue[T, R]) NewCall() *Call[T, R] {
	if q.cfg.Notify == nil {
		panic(fmt.Sprintf("batch: queue %q has no Notify for SubmitAll", q.cfg.Name))
	}
	if c, ok := q.pool.Get().(*Call[T, R]); ok {
		return c
	}
	return &Call[T, R]{notify: q.cfg.Notify}
}

// SubmitAll queues calls, made by NewCall, without waiting for them: under
// one lock, with one wake of the drain. Config.Notify is called once per
// call with its answer. A call that finds the queue closed fails with
// store.ErrClosed; one that finds it full, or its key holding
// Config.MaxPerKey items, fails at once with store.ErrBusy and is not
// applied: SubmitAll never waits for room. Those refusals are notified
// before SubmitAll returns, on its goroutine. Calls of one key that are
// queued are applied in the order of calls.
func (q *Queue[T, R]) SubmitAll(calls []*Call[T, R]) { q.submitAll(calls, false) }

// SubmitOrApply is SubmitAll, except that when it finds the queue idle —
// no batch being applied, nothing queued — it does not wake the drain: it
// draws a batch from its calls, as the drain would (within MaxWeight and
// MaxBytes, round-robin across keys), and applies it on its own goroutine
// before it returns, so that its calls' Notify runs there too. Calls that
// do not fit in that batch, and calls others submit meanwhile, wait in the
// queue; the drain takes them once the batch is done. It costs its caller
// the time of the batch, bounded only by Apply: a backend whose Apply may
// block offers it where its Apply is bounded by the calls' deadlines. On a
// queue with Config.Idle it is SubmitAll.
func (q *Queue[T, R]) SubmitOrApply(calls []*Call[T, R]) { q.submitAll(calls, true) }

func (q *Queue[T, R]) submitAll(calls []*Call[T, R], mayApply bool) {
	var refused *Call[T, R] // in reverse order; linked through next
	queued := 0
	q.mu.Lock()
	mayApply = mayApply && q.cfg.Idle == nil && !q.applying && q.n == 0 && !q.closed
	for _, c := range calls {
		if q.cfg.Key != nil {
			c.key = q.cfg.Key(c.Item)
		}
		if c.refused = q.refuses(c.key); c.refused != 0 {
			c.next = refused
			refused = c
			continue
		}
		q.push(c)
		queued++
	}
	var batch []*Call[T, R]
	if mayApply && queued > 0 {
		q.applying = true
		batch = q.draw(&q.own)
	}
	wake := queued > 0 && !q.applying
	extra := q.wantsExtra()
	q.mu.Unlock()
	if wake {
		select {
		case q.wake <- struct{}{}:
		default: // the drain has a token already
		}
	}
	if extra {
		q.signalExtra()
	}
	// Notify in the order of calls: reverse the list first.
	var inOrder *Call[T, R]
	for refused != nil {
		next := refused.next
		refused.next = inOrder
		inOrder = refused
		refused = next
	}
	// Calls refused alike share one error, made outside the lock.
	var (
		err     error
		errWhy  refusal
		errKey  string
		errZero R
	)
	for c := inOrder; c != nil; {
		next := c.next
		if err == nil || c.refused != errWhy || (errWhy == refusedShare && c.key != errKey) {
			err, errWhy, errKey = q.refusalError(c.refused, c.key), c.refused, c.key
		}
		c.answered = true
		c.notify(&c.Item, errZero, err)
		q.release(c)
		c = next
	}
	if batch != nil {
		q.applyHere(batch)
	}
}

// applyHere applies batch, which its caller drew and for which it set
// q.applying, then lets go of q.applying and wakes the drain if calls wait
// or the queue was closed meanwhile (the drain ends only once no batch is
// being applied).
func (q *Queue[T, R]) applyHere(batch []*Call[T, R]) {
	defer func() {
		clear(batch) // drop references to answered calls
		q.mu.Lock()
		q.own.batch = batch[:0]
		q.own.here = false
		q.applying = false
		wake := q.n > 0 || q.closed
		q.mu.Unlock()
		if wake {
			select {
			case q.wake <- struct{}{}:
			default:
			}
		}
	}()
	q.own.here = true
	q.apply(batch, &q.own)
}

// refusal is why SubmitAll could not queue a call.
type refusal uint8

const (
	refusedClosed refusal = iota + 1 // the queue is closed
	refusedFull                      // the queue holds Capacity calls
	refusedShare                     // the call's key holds MaxPerKey calls
)

// refuses returns why a call of key cannot enter the queue now, or 0. q.mu
// must be held.
func (q *Queue[T, R]) refuses(key string) refusal {
	if q.closed {
		return refusedClosed
	}
	if q.n >= q.cfg.Capacity {
		return refusedFull
	}
	if l := q.lanes[key]; l != nil && l.len() >= q.cfg.MaxPerKey {
		return refusedShare
	}
	return 0
}

// refusalError is the error of a call of key refused for why.
func (q *Queue[T, R]) refusalError(why refusal, key string) error {
	switch why {
	case refusedClosed:
		return store.ErrClosed
	case refusedFull:
		return fmt.Errorf("%w: the %s queue is full (%d calls)", store.ErrBusy, q.cfg.Name, q.cfg.Capacity)
	}
	return fmt.Errorf("%w: %q holds its share of the %s queue (%d calls)", store.ErrBusy, key, q.cfg.Name, q.cfg.MaxPerKey)
}

// release returns an answered call of SubmitAll to the pool, holding
// nothing of its item or answer.
func (q *Queue[T, R]) release(c *Call[T, R]) {
	notify := c.notify
	*c = Call[T, R]{notify: notify}
	q.pool.Put(c)
}

// enqueue puts c at the tail of its lane, waiting within ctx while the
// queue is full or the lane holds its share.
func (q *Queue[T, R]) enqueue(ctx context.Context, c *Call[T, R]) error {
	q.mu.Lock()
	for {
		if q.closed {
			q.mu.Unlock()
			return store.ErrClosed
		}
		l := q.lanes[c.key]
		held := 0
		if l != nil {
			held = l.len()
		}
		if q.n < q.cfg.Capacity && held < q.cfg.MaxPerKey {
			q.push(c)
			wake := !q.applying // else the applier looks again when done
			extra := q.wantsExtra()
			q.mu.Unlock()
			if wake {
				select {
				case q.wake <- struct{}{}:
				default: // the drain has a token already
				}
			}
			if extra {
				q.signalExtra()
			}
			return nil
		}
		space := q.space
		q.waiting++
		q.mu.Unlock()
		select {
		case <-space:
			q.mu.Lock()
			q.waiting--
		case <-ctx.Done():
			q.mu.Lock()
			q.waiting--
			full := q.n >= q.cfg.Capacity
			q.mu.Unlock()
			if full || c.key == "" {
				return fmt.Errorf("%w: the %s queue stayed full: %w", store.ErrBusy, q.cfg.Name, ctx.Err())
			}
			return fmt.Errorf("%w: %q held its share of the %s queue (%d calls) until the deadline: %w",
				store.ErrBusy, c.key, q.cfg.Name, q.cfg.MaxPerKey, ctx.Err())
		}
	}
}

// push appends c to its lane, which joins the end of the ring if it was
// empty. q.mu must be held.
func (q *Queue[T, R]) push(c *Call[T, R]) {
	l := q.lanes[c.key]
	if l == nil {
		l = q.newLane(c.key)
		q.ring.push(l)
	}
	if l.head > 0 && len(l.calls) == cap(l.calls) {
		// Slide the waiting calls down instead of growing the array, which
		// a lane that never empties would otherwise do for ever.
		n := copy(l.calls, l.calls[l.head:])
		clear(l.calls[n:])
		l.calls, l.head = l.calls[:n], 0
	}
	l.calls = append(l.calls, c)
	q.n++
}

// newLane returns an empty lane for key, registered in q.lanes but not in
// the ring. q.mu must be held.
func (q *Queue[T, R]) newLane(key string) *lane[T, R] {
	var l *lane[T, R]
	if n := len(q.spare); n > 0 {
		l, q.spare = q.spare[n-1], q.spare[:n-1]
	} else {
		l = &lane[T, R]{}
	}
	l.key = key
	q.lanes[key] = l
	return l
}

// Len is the number of items waiting to be drawn into a batch.
func (q *Queue[T, R]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Close refuses new items (Submit fails with store.ErrClosed), applies and
// answers every item already queued, and returns when the drain goroutine
// has ended, which it does only after a batch that a submitter is applying
// (SubmitOrApply) is done. A second Close waits in the same way.
func (q *Queue[T, R]) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.space) // submitters waiting for room see closed
		q.space = make(chan struct{})
		select {
		case q.wake <- struct{}{}:
		default:
		}
		q.signalExtra()
	}
	q.mu.Unlock()
	<-q.done
	<-q.extraDone
}

// run is the drain goroutine: batch after batch until the queue is closed
// and empty.
func (q *Queue[T, R]) run() {
	defer close(q.done)
	held := false // the drain holds q.applying
	for {
		batch, ok := q.next(held)
		if !ok {
			return
		}
		held = true
		q.apply(batch, &q.own)
		clear(batch) // drop references to answered calls
	}
}

// wantsExtra reports whether the second goroutine should draw a batch now
// (Config.Second): one is being applied, the second goroutine is free, and
// at least Second items wait. q.mu must be held.
func (q *Queue[T, R]) wantsExtra() bool {
	return q.cfg.Second > 0 && q.applying && !q.extraBusy && q.n >= q.cfg.Second
}

// signalExtra wakes the second goroutine, if it sleeps.
func (q *Queue[T, R]) signalExtra() {
	select {
	case q.wakeExtra <- struct{}{}:
	default: // it has a token already
	}
}

// runExtra is the second goroutine of Config.Second: it applies a batch
// while another is applied, whenever wantsExtra, until Close.
func (q *Queue[T, R]) runExtra() {
	defer close(q.extraDone)
	for {
		q.mu.Lock()
		for !q.wantsExtra() {
			if q.closed {
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			<-q.wakeExtra
			q.mu.Lock()
		}
		q.extraBusy = true
		batch := q.draw(&q.extra)
		q.mu.Unlock()
		q.apply(batch, &q.extra)
		clear(batch) // drop references to answered calls
		q.mu.Lock()
		q.extraBusy = false
		q.mu.Unlock()
	}
}

// next draws the next batch, waiting for an item if none is queued: items
// from each lane in turn (one item, or while the lane's bytes this turn
// stay below TurnBytes), starting with the lane the last batch stopped at,
// while the batch stays within MaxWeight and MaxBytes. An item that would
// cross a limit stays at the head of its lane; if it was the first of the
// lane's turn, that lane's turn comes first in the next batch. The first
// item of a batch always goes in. ok is false once the queue is closed and
// empty and no submitter applies a batch. held says the drain holds
// q.applying, for the batch it applied last, and lets go of it; while a
// submitter holds it, the drain waits.
func (q *Queue[T, R]) next(held bool) (batch []*Call[T, R], ok bool) {
	q.mu.Lock()
	if held {
		q.applying = false
	}
	idled := q.cfg.Idle == nil
	var again time.Duration // when Idle wants to run again
	for q.n == 0 || q.applying {
		if q.closed && q.n == 0 && !q.applying {
			q.mu.Unlock()
			return nil, false
		}
		q.mu.Unlock()
		switch {
		case !idled:
			idled = true
			again = q.idle()
		case again > 0:
			t := time.NewTimer(again)
			select {
			case <-q.wake:
				again = 0
			case <-t.C:
				again = q.idle()
			}
			t.Stop()
		default:
			<-q.wake
		}
		q.mu.Lock()
	}
	q.applying = true
	batch = q.draw(&q.own)
	extra := q.wantsExtra()
	q.mu.Unlock()
	if extra {
		q.signalExtra()
	}
	return batch, true
}

// draw takes the next batch from the queue into a.batch and returns it;
// q.mu and q.applying (or, for the second goroutine, q.extraBusy) are
// held, and the queue is not empty. See next.
func (q *Queue[T, R]) draw(a *applier[T, R]) []*Call[T, R] {
	batch := a.batch[:0]
	weight, size := 0, 0
	full := false
	for !full && q.ring.len() > 0 {
		l := q.ring.front()
		took, turn := 0, 0
		for l.len() > 0 {
			c := l.calls[l.head]
			w, b := q.cfg.Weight(c.Item), q.cfg.Bytes(c.Item)
			if len(batch) > 0 && (weight+w > q.cfg.MaxWeight || (q.cfg.MaxBytes > 0 && size+b > q.cfg.MaxBytes)) {
				full = true // c heads the next batch
				break
			}
			batch = append(batch, c)
			weight += w
			size += b
			l.calls[l.head] = nil
			l.head++
			q.n--
			took++
			turn += b
			if weight >= q.cfg.MaxWeight || (q.cfg.MaxBytes > 0 && size >= q.cfg.MaxBytes) {
				full = true
				break
			}
			if turn >= q.cfg.TurnBytes {
				break // the lane's turn is over
			}
		}
		if took == 0 {
			break // l's turn comes first in the next batch
		}
		q.ring.pop()
		if l.len() > 0 {
			q.ring.push(l) // its next item waits for the others' turn
		} else {
			delete(q.lanes, l.key)
			l.calls, l.head = l.calls[:0], 0
			q.spare = append(q.spare, l)
		}
	}
	if q.waiting > 0 {
		close(q.space)
		q.space = make(chan struct{})
	}
	a.batch = batch
	return batch
}

// idle runs Config.Idle, logging its panic.
func (q *Queue[T, R]) idle() (again time.Duration) {
	defer func() {
		if v := recover(); v != nil {
			q.cfg.Logger.Error("batch: Idle panicked", zap.String("queue", q.cfg.Name),
				zap.Any("panic", v), zap.StackSkip("stack", 1))
			again = 0
		}
	}()
	return q.cfg.Idle()
}

// putBack returns the calls Apply requeued, in batch order, to the heads of
// their lanes, ahead of the items that arrived meanwhile. A lane that had
// emptied rejoins the ring at its end.
func (q *Queue[T, R]) putBack(calls []*Call[T, R]) {
	q.mu.Lock()
	defer q.mu.Unlock()
	byKey := map[string][]*Call[T, R]{}
	var keys []string
	for _, c := range calls {
		c.requeued = false
		if _, ok := byKey[c.key]; !ok {
			keys = append(keys, c.key)
		}
		byKey[c.key] = append(byKey[c.key], c)
	}
	for _, k := range keys {
		back := byKey[k]
		l := q.lanes[k]
		if l == nil {
			l = q.newLane(k)
			q.ring.push(l)
		}
		rest := l.calls[l.head:]
		l.calls = append(append(make([]*Call[T, R], 0, len(back)+len(rest)), back...), rest...)
		l.head = 0
		q.n += len(back)
	}
}

// apply answers the calls of batch whose callers have gone, hands the others
// to Config.Apply, and fails what a panic or a bug left unanswered.
func (q *Queue[T, R]) apply(batch []*Call[T, R], a *applier[T, R]) {
	live := a.live[:0]
	var now time.Time // read once, for the first call with a deadline
	for _, c := range batch {
		if !c.Deadline.IsZero() {
			if now.IsZero() {
				now = time.Now()
			}
			if !now.Before(c.Deadline) {
				c.Fail(fmt.Errorf("%w: the deadline passed before its batch started", store.ErrUnavailable))
				continue
			}
		}
		select {
		case <-c.abandoned:
			// Nobody waits for this answer; it only completes the call.
			c.Fail(fmt.Errorf("%w: the caller gave up before its batch started", store.ErrUnavailable))
		default:
			live = append(live, c)
		}
	}
	a.live = live
	if len(live) > 0 {
		q.safelyApply(live, a.here)
	}
	requeued := a.requeued[:0]
	for _, c := range batch {
		if c.requeued {
			requeued = append(requeued, c)
			continue
		}
		if !c.answered {
			q.cfg.Logger.Error("batch: apply returned without answering a call", zap.String("queue", q.cfg.Name))
			c.Fail(fmt.Errorf("%s queue: %w", q.cfg.Name, ErrUnanswered))
		}
	}
	if len(requeued) > 0 {
		q.putBack(requeued)
	}
	for _, c := range batch {
		if c.notify != nil && c.answered {
			q.release(c) // answered and notified: the call is done
		}
	}
	clear(live)
	clear(requeued)
	a.requeued = requeued
}

// safelyApply runs Config.Apply and turns a panic into the answer of every
// call it had not answered yet, as bbolt's safelyCall does for DB.Batch.
func (q *Queue[T, R]) safelyApply(calls []*Call[T, R], here bool) {
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
	if here && q.cfg.ApplyHere != nil {
		q.cfg.ApplyHere(calls)
		return
	}
	q.cfg.Apply(calls)
}

// Requeue puts the call back at the head of its lane, to be applied again
// in a later batch, instead of answering it now: for work done in slices
// across batches. See Config.Apply for the order it must keep.
func (c *Call[T, R]) Requeue() {
	if c.answered {
		panic("batch: an answered call was requeued")
	}
	c.requeued = true
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
	c.requeued = false
	c.answered = true
	if c.notify != nil {
		// The drain keeps the call until its batch is done, then pools it.
		c.notify(&c.Item, r, err)
		return
	}
	c.r, c.err = r, err
	close(c.done)
}

// Deadline is the latest Deadline of calls when every one has a deadline,
// or zero when one has none: past it, no caller of the batch waits for
// its answer any more, so an Apply that may block can stop there.
func Deadline[T, R any](calls []*Call[T, R]) time.Time {
	var latest time.Time
	for _, c := range calls {
		if c.Deadline.IsZero() {
			return time.Time{}
		}
		if c.Deadline.After(latest) {
			latest = c.Deadline
		}
	}
	return latest
}
