package batch

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kvsidecar/kvsidecar/store"
)

// onDrain reports whether its caller runs on a queue's drain goroutine
// (Queue.run is on the stack) rather than on a submitter's.
func onDrain() bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		fr, more := frames.Next()
		if strings.HasPrefix(fr.Function, "github.com/kvsidecar/kvsidecar/store/internal/batch.(*Queue[") &&
			strings.HasSuffix(fr.Function, "]).run") {
			return true
		}
		if !more {
			return false
		}
	}
}

func (f *fake) drainedBatches() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.drained)
}

// holdSubmitOrApply makes the next batch stop inside the fake's apply and
// submits items with SubmitOrApply on a goroutine of its own; it returns
// once the batch is held, with a channel closed when SubmitOrApply has
// returned. Close f.release to let the batch go on.
func holdSubmitOrApply(t *testing.T, q *Queue[item, string], f *fake, n *notes, items ...item) <-chan struct{} {
	t.Helper()
	f.mu.Lock()
	f.hold = true
	f.mu.Unlock()
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		calls := make([]*Call[item, string], len(items))
		for i, it := range items {
			calls[i] = q.NewCall()
			calls[i].Item = it
		}
		q.SubmitOrApply(calls)
	}()
	<-f.held
	return returned
}

// TestSubmitOrApplyAtIdleQueue: at an idle queue the submitter applies its
// calls itself, as one batch, and every call is notified before
// SubmitOrApply returns; the drain applies nothing.
func TestSubmitOrApplyAtIdleQueue(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	q := open(t, asyncConfig(f, n))
	during := n.submitOrApply(q, time.Time{}, item{id: "a"}, item{id: "b"}, item{id: "c"})
	if want := []string{"a", "b", "c"}; !slices.Equal(during, want) {
		t.Fatalf("notified before SubmitOrApply returned: %v, want %v", during, want)
	}
	for _, id := range []string{"a", "b", "c"} {
		if a := n.answer(id); a.err != nil || a.r != strings.ToUpper(id) {
			t.Fatalf("%s notified with %q, %v; want %q", id, a.r, a.err, strings.ToUpper(id))
		}
	}
	if got, want := f.got(), [][]string{{"a", "b", "c"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
	if d := f.drainedBatches(); !slices.Equal(d, []bool{false}) {
		t.Fatalf("batch applied on the drain: %v; want on the submitter", d)
	}
}

// TestSubmitOrApplyBusyQueue: while the drain applies a batch, a call of
// SubmitOrApply is queued like one of SubmitAll, and the drain applies it
// next.
func TestSubmitOrApplyBusyQueue(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	q := open(t, asyncConfig(f, n))
	first := hold(t, q, f)
	if during := n.submitOrApply(q, time.Time{}, item{id: "a"}); len(during) != 0 {
		t.Fatalf("notified %v while the drain was busy; want them queued", during)
	}
	if q.Len() != 1 {
		t.Fatalf("queued: %d, want 1", q.Len())
	}
	close(f.release)
	<-first
	if a := n.answer("a"); a.err != nil || a.r != "A" {
		t.Fatalf("a = %q, %v", a.r, a.err)
	}
	if d := f.drainedBatches(); !slices.Equal(d, []bool{true, true}) {
		t.Fatalf("batches on the drain: %v; want both", d)
	}
}

// TestSubmitOrApplyLimits: the submitter's batch keeps MaxWeight; what does
// not fit is queued, and the drain, woken when the submitter's batch is
// done, applies it after — in order.
func TestSubmitOrApplyLimits(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	q := open(t, asyncConfig(f, n)) // 4 of weight 1 a batch
	during := n.submitOrApply(q, time.Time{},
		item{id: "a"}, item{id: "b"}, item{id: "c"}, item{id: "d"}, item{id: "e"}, item{id: "f"})
	if len(during) < 4 || !slices.Equal(during[:4], []string{"a", "b", "c", "d"}) {
		t.Fatalf("notified before SubmitOrApply returned: %v, want a to d first", during)
	}
	for _, id := range []string{"e", "f"} {
		if a := n.answer(id); a.err != nil || a.r != strings.ToUpper(id) {
			t.Fatalf("%s = %q, %v", id, a.r, a.err)
		}
	}
	if got, want := f.got(), [][]string{{"a", "b", "c", "d"}, {"e", "f"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
	if d := f.drainedBatches(); !slices.Equal(d, []bool{false, true}) {
		t.Fatalf("batches on the drain: %v; want the submitter's, then the drain's", d)
	}
}

// TestSubmitOrApplyMaxBytes: MaxBytes bounds the submitter's batch too.
func TestSubmitOrApplyMaxBytes(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	cfg := asyncConfig(f, n)
	cfg.MaxBytes = 10
	q := open(t, cfg)
	n.submitOrApply(q, time.Time{}, item{id: "a", bytes: 6}, item{id: "b", bytes: 6})
	n.answer("b")
	if got, want := f.got(), [][]string{{"a"}, {"b"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestSubmitOrApplyArrivalsWait: calls submitted while a submitter applies
// its batch — by Submit, SubmitAll or SubmitOrApply — are queued, not
// applied beside it, and the drain takes them once it is done.
func TestSubmitOrApplyArrivalsWait(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	q := open(t, asyncConfig(f, n))
	returned := holdSubmitOrApply(t, q, f, n, item{id: "mine"})
	waiting := submitQueued(t, t.Context(), q, item{id: "waiting"})
	n.submitAll(q, time.Time{}, item{id: "async"})
	if during := n.submitOrApply(q, time.Time{}, item{id: "other"}); len(during) != 0 {
		t.Fatalf("notified %v while another submitter applied; want them queued", during)
	}
	if got := f.got(); len(got) != 1 {
		t.Fatalf("batches while the submitter's is held: %v; want its own alone", got)
	}
	close(f.release)
	<-returned
	if a := <-waiting; a.err != nil || a.r != "WAITING" {
		t.Fatalf("waiting = %q, %v", a.r, a.err)
	}
	for _, id := range []string{"mine", "async", "other"} {
		if a := n.answer(id); a.err != nil {
			t.Fatalf("%s = %v", id, a.err)
		}
	}
	want := [][]string{{"mine"}, {"waiting", "async", "other"}}
	if got := f.got(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
	if d := f.drainedBatches(); !slices.Equal(d, []bool{false, true}) {
		t.Fatalf("batches on the drain: %v; want the submitter's, then the drain's", d)
	}
}

// TestSubmitOrApplyDeadline: a call whose deadline has passed is failed,
// not applied, on the submitter's goroutine too.
func TestSubmitOrApplyDeadline(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	q := open(t, asyncConfig(f, n))
	during := n.submitOrApply(q, time.Now().Add(-time.Millisecond), item{id: "late"})
	if !slices.Equal(during, []string{"late"}) {
		t.Fatalf("notified before SubmitOrApply returned: %v, want [late]", during)
	}
	if a := n.answer("late"); !errors.Is(a.err, store.ErrUnavailable) || !strings.Contains(a.err.Error(), "deadline") {
		t.Fatalf("late call = %q, %v; want ErrUnavailable about its deadline", a.r, a.err)
	}
	if got := f.got(); len(got) != 0 {
		t.Fatalf("batches = %v, want none (the late call applied?)", got)
	}
}

// TestSubmitOrApplyPanic: a panic of Apply on the submitter's goroutine is
// contained as on the drain's: the batch's unanswered calls fail with
// ErrPanicked, the submitter returns, and the queue goes on serving both
// ways.
func TestSubmitOrApplyPanic(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	cfg := asyncConfig(f, n)
	core, logs := observer.New(zapcore.ErrorLevel)
	cfg.Logger = zap.New(core)
	q := open(t, cfg)
	during := n.submitOrApply(q, time.Time{}, item{id: "ok"}, item{id: "bad", panic: true}, item{id: "after"})
	if len(during) != 3 {
		t.Fatalf("notified before SubmitOrApply returned: %v, want all three", during)
	}
	if a := n.answer("ok"); a.err != nil || a.r != "OK" {
		t.Fatalf("ok = %q, %v", a.r, a.err)
	}
	for _, id := range []string{"bad", "after"} {
		if a := n.answer(id); !errors.Is(a.err, ErrPanicked) {
			t.Fatalf("%s = %v, want ErrPanicked", id, a.err)
		}
	}
	if logs.FilterMessageSnippet("panicked").Len() != 1 {
		t.Fatalf("logged: %v; want the panic once", logs.All())
	}
	if during := n.submitOrApply(q, time.Time{}, item{id: "later"}); !slices.Equal(during, []string{"later"}) {
		t.Fatalf("after the panic, notified %v; want later applied by its submitter", during)
	}
	if r, err := q.Submit(t.Context(), item{id: "waited"}); err != nil || r != "WAITED" {
		t.Fatalf("Submit after the panic = %q, %v", r, err)
	}
}

// TestSubmitOrApplyOneBatchAtATime: submitters of every kind at once never
// make two batches run together, each call is answered once, and the calls
// of one key are applied in the order they were submitted.
func TestSubmitOrApplyOneBatchAtATime(t *testing.T) {
	n := newNotes(t)
	var (
		running, overlaps atomic.Int32
		mu                sync.Mutex
		seen              = map[string]int{} // key → last sequence number applied
		outOfOrder        []string
		onCaller, total   int
	)
	var answered sync.Map // id → chan struct{}, closed when notified
	notify := func(it *item, r string, err error) {
		n.notify(it, r, err)
		if ch, ok := answered.Load(it.id); ok {
			close(ch.(chan struct{}))
		}
	}
	q := open(t, Config[item, string]{
		Name: "test", Capacity: 64, MaxWeight: 8, Notify: notify,
		Key: func(it item) string { return it.id[:strings.IndexByte(it.id, '-')] },
		Apply: func(calls []*Call[item, string]) {
			if running.Add(1) > 1 {
				overlaps.Add(1)
			}
			drain := onDrain()
			runtime.Gosched() // give another applier the chance to overlap
			mu.Lock()
			total++
			if !drain {
				onCaller++
			}
			for _, c := range calls {
				var key string
				var seq int
				fmt.Sscanf(strings.Replace(c.Item.id, "-", " ", 1), "%s %d", &key, &seq)
				if last, ok := seen[key]; ok && seq <= last {
					outOfOrder = append(outOfOrder, c.Item.id)
				}
				seen[key] = seq
			}
			mu.Unlock()
			running.Add(-1)
			for _, c := range calls {
				c.Answer("ok")
			}
		},
	})
	const submitters, each = 8, 200
	var wg sync.WaitGroup
	for g := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("k%d-%d", g, i)
				switch {
				case g == 0: // one waiting submitter among them
					if _, err := q.Submit(context.Background(), item{id: id}); err != nil {
						t.Errorf("Submit(%s): %v", id, err)
					}
				case g%2 == 1: // a lone caller: one call at a time
					done := make(chan struct{})
					answered.Store(id, done)
					c := q.NewCall()
					c.Item = item{id: id}
					q.SubmitOrApply([]*Call[item, string]{c})
					<-done
				default:
					c := q.NewCall()
					c.Item = item{id: id}
					q.SubmitAll([]*Call[item, string]{c})
				}
			}
		}()
	}
	wg.Wait()
	for g := 1; g < submitters; g++ {
		for i := range each {
			id := fmt.Sprintf("k%d-%d", g, i)
			if a := n.answer(id); a.err != nil && !errors.Is(a.err, store.ErrBusy) {
				t.Fatalf("%s = %v", id, a.err)
			}
		}
	}
	if c := overlaps.Load(); c > 0 {
		t.Fatalf("%d batches ran while another was applied", c)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(outOfOrder) > 0 {
		t.Fatalf("applied out of their key's order: %v", outOfOrder)
	}
	t.Logf("%d batches, %d of them on a submitter", total, onCaller)
}

// TestSubmitOrApplyClose: Close waits for a batch a submitter is applying,
// its calls keep their answers, and calls submitted after Close are
// refused, never applied on the submitter's goroutine.
func TestSubmitOrApplyClose(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	q := New(asyncConfig(f, n))
	returned := holdSubmitOrApply(t, q, f, n, item{id: "mine"})
	queued := submitQueued(t, t.Context(), q, item{id: "queued"})
	closed := make(chan struct{})
	go func() { q.Close(); close(closed) }()
	waitFor(t, "Close to refuse new calls", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.closed
	})
	select {
	case <-closed:
		t.Fatal("Close returned while a submitter's batch was being applied")
	default:
	}
	if during := n.submitOrApply(q, time.Time{}, item{id: "late"}); !slices.Equal(during, []string{"late"}) {
		t.Fatalf("late call notified before SubmitOrApply returned: %v", during)
	}
	if a := n.answer("late"); !errors.Is(a.err, store.ErrClosed) {
		t.Fatalf("late = %v, want ErrClosed", a.err)
	}
	close(f.release)
	<-returned
	<-closed
	if a := n.answer("mine"); a.err != nil || a.r != "MINE" {
		t.Fatalf("mine = %q, %v", a.r, a.err)
	}
	if a := <-queued; a.err != nil || a.r != "QUEUED" {
		t.Fatalf("queued = %q, %v; want it applied before Close returned", a.r, a.err)
	}
	if got, want := f.got(), [][]string{{"mine"}, {"queued"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestSubmitOrApplyWithIdle: a queue with Idle keeps every batch on the
// drain, so that Idle never runs beside one: SubmitOrApply queues.
func TestSubmitOrApplyWithIdle(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	cfg := asyncConfig(f, n)
	cfg.Idle = func() time.Duration { return 0 }
	q := open(t, cfg)
	n.submitOrApply(q, time.Time{}, item{id: "a"})
	if a := n.answer("a"); a.err != nil || a.r != "A" {
		t.Fatalf("a = %q, %v", a.r, a.err)
	}
	if d := f.drainedBatches(); !slices.Equal(d, []bool{true}) {
		t.Fatalf("batches on the drain: %v; want the one batch there", d)
	}
}
