package batch

import (
	"errors"
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

// notes collects what Config.Notify receives, per id, and fails the test
// when an id is notified twice.
type notes struct {
	t      *testing.T
	mu     sync.Mutex
	got    map[string]answer
	order  []string
	caller bool // set while SubmitAll runs on the test's goroutine
	during []string
}

func newNotes(t *testing.T) *notes { return &notes{t: t, got: map[string]answer{}} }

func (n *notes) notify(it *item, r string, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, dup := n.got[it.id]; dup {
		n.t.Errorf("%s notified twice", it.id)
	}
	n.got[it.id] = answer{it.id, r, err}
	n.order = append(n.order, it.id)
	if n.caller {
		n.during = append(n.during, it.id)
	}
}

// answer returns the answer of id, waiting for it.
func (n *notes) answer(id string) answer {
	n.t.Helper()
	var a answer
	waitFor(n.t, id+" to be notified", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		var ok bool
		a, ok = n.got[id]
		return ok
	})
	return a
}

// submitAll submits items in one SubmitAll, each with deadline, and
// returns the ids notified before it returned.
func (n *notes) submitAll(q *Queue[item, string], deadline time.Time, items ...item) []string {
	return n.submit(q, q.SubmitAll, deadline, items...)
}

// submitOrApply is submitAll through SubmitOrApply.
func (n *notes) submitOrApply(q *Queue[item, string], deadline time.Time, items ...item) []string {
	return n.submit(q, q.SubmitOrApply, deadline, items...)
}

func (n *notes) submit(q *Queue[item, string], submit func([]*Call[item, string]), deadline time.Time, items ...item) []string {
	calls := make([]*Call[item, string], len(items))
	for i, it := range items {
		calls[i] = q.NewCall()
		calls[i].Item = it
		calls[i].Deadline = deadline
	}
	n.mu.Lock()
	n.caller, n.during = true, nil
	n.mu.Unlock()
	submit(calls)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.caller = false
	return n.during
}

func asyncConfig(f *fake, n *notes) Config[item, string] {
	cfg := config(f)
	cfg.Notify = n.notify
	return cfg
}

// TestSubmitAllOneBatch: calls submitted together at an idle queue are
// applied together, in one batch, and each is notified once with its own
// answer.
func TestSubmitAllOneBatch(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	q := open(t, asyncConfig(f, n))
	n.submitAll(q, time.Time{}, item{id: "a"}, item{id: "b"}, item{id: "c"})
	for _, id := range []string{"a", "b", "c"} {
		if a := n.answer(id); a.err != nil || a.r != strings.ToUpper(id) {
			t.Fatalf("%s notified with %q, %v; want %q", id, a.r, a.err, strings.ToUpper(id))
		}
	}
	if got, want := f.got(), [][]string{{"a", "b", "c"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestSubmitAllMixesWithSubmit: asynchronous and waiting calls share the
// queue and its batches.
func TestSubmitAllMixesWithSubmit(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	q := open(t, asyncConfig(f, n))
	first := hold(t, q, f)
	n.submitAll(q, time.Time{}, item{id: "a"})
	b := submitQueued(t, t.Context(), q, item{id: "b"})
	n.submitAll(q, time.Time{}, item{id: "c"})
	close(f.release)
	<-first
	if a := <-b; a.err != nil || a.r != "B" {
		t.Fatalf("Submit(b) = %q, %v", a.r, a.err)
	}
	for _, id := range []string{"a", "c"} {
		if a := n.answer(id); a.err != nil {
			t.Fatalf("%s: %v", id, a.err)
		}
	}
	if got, want := f.got(), [][]string{{"hold"}, {"a", "b", "c"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestSubmitAllDeadline: a call whose deadline has passed when its batch is
// drawn is not applied and fails with store.ErrUnavailable; its neighbours
// without one are applied.
func TestSubmitAllDeadline(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	q := open(t, asyncConfig(f, n))
	first := hold(t, q, f)
	n.submitAll(q, time.Now().Add(time.Millisecond), item{id: "late"})
	n.submitAll(q, time.Now().Add(time.Hour), item{id: "timely"})
	n.submitAll(q, time.Time{}, item{id: "none"})
	time.Sleep(5 * time.Millisecond) // "late"'s deadline passes while it is queued
	close(f.release)
	<-first
	if a := n.answer("late"); !errors.Is(a.err, store.ErrUnavailable) || !strings.Contains(a.err.Error(), "deadline") {
		t.Fatalf("late call = %q, %v; want ErrUnavailable about its deadline", a.r, a.err)
	}
	for _, id := range []string{"timely", "none"} {
		if a := n.answer(id); a.err != nil {
			t.Fatalf("%s = %v", id, a.err)
		}
	}
	if got, want := f.got(), [][]string{{"hold"}, {"timely", "none"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v (the late call applied?)", got, want)
	}
}

// TestSubmitAllBusy: calls that find the queue full, or their key's share
// taken, fail at once with store.ErrBusy — notified before SubmitAll
// returns, with the drain still held, so the submitter never waited — and
// are never applied; the calls that fit are.
func TestSubmitAllBusy(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	cfg := asyncConfig(f, n)
	cfg.Capacity = 3
	cfg.MaxPerKey = 2
	cfg.Key = func(it item) string { return it.id[:1] }
	q := open(t, cfg)
	first := hold(t, q, f)
	during := n.submitAll(q, time.Time{}, item{id: "a1"}, item{id: "a2"}, item{id: "a3"}, item{id: "b1"}, item{id: "c1"})
	if want := []string{"a3", "c1"}; !slices.Equal(during, want) {
		t.Fatalf("notified during SubmitAll: %v, want %v", during, want)
	}
	if a := n.answer("a3"); !errors.Is(a.err, store.ErrBusy) || !strings.Contains(a.err.Error(), `"a" holds its share`) {
		t.Fatalf("a3 = %v, want ErrBusy about its key's share", a.err)
	}
	if a := n.answer("c1"); !errors.Is(a.err, store.ErrBusy) || !strings.Contains(a.err.Error(), "queue is full") {
		t.Fatalf("c1 = %v, want ErrBusy about the full queue", a.err)
	}
	close(f.release)
	<-first
	for _, id := range []string{"a1", "a2", "b1"} {
		if a := n.answer(id); a.err != nil {
			t.Fatalf("%s = %v", id, a.err)
		}
	}
	if got, want := f.got(), [][]string{{"hold"}, {"a1", "b1", "a2"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestSubmitAllClosed: after Close, every call fails with store.ErrClosed
// before SubmitAll returns; calls queued before Close are applied.
func TestSubmitAllClosed(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	q := New(asyncConfig(f, n))
	n.submitAll(q, time.Time{}, item{id: "before"})
	q.Close()
	if a := n.answer("before"); a.err != nil || a.r != "BEFORE" {
		t.Fatalf("call queued before Close = %q, %v; want applied", a.r, a.err)
	}
	during := n.submitAll(q, time.Time{}, item{id: "x"}, item{id: "y"})
	if !slices.Equal(during, []string{"x", "y"}) {
		t.Fatalf("notified during SubmitAll after Close: %v, want [x y]", during)
	}
	for _, id := range during {
		if a := n.answer(id); !errors.Is(a.err, store.ErrClosed) {
			t.Fatalf("%s after Close = %v, want ErrClosed", id, a.err)
		}
	}
}

// TestSubmitAllPanicAndUnanswered: a panic of apply fails the calls it had
// not answered, and a call apply leaves unanswered fails with
// ErrUnanswered — each notified once, and the queue goes on.
func TestSubmitAllPanicAndUnanswered(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	cfg := asyncConfig(f, n)
	core, _ := observer.New(zapcore.ErrorLevel)
	cfg.Logger = zap.New(core)
	q := open(t, cfg)
	first := hold(t, q, f)
	n.submitAll(q, time.Time{}, item{id: "ok"}, item{id: "lost", ignore: true}, item{id: "bad", panic: true}, item{id: "after"})
	close(f.release)
	<-first
	if a := n.answer("ok"); a.err != nil || a.r != "OK" {
		t.Fatalf("ok = %q, %v", a.r, a.err)
	}
	if a := n.answer("lost"); !errors.Is(a.err, ErrPanicked) {
		// The panic came before apply returned: it fails "lost" too.
		t.Fatalf("lost = %v, want ErrPanicked", a.err)
	}
	for _, id := range []string{"bad", "after"} {
		if a := n.answer(id); !errors.Is(a.err, ErrPanicked) {
			t.Fatalf("%s = %v, want ErrPanicked", id, a.err)
		}
	}
	n.submitAll(q, time.Time{}, item{id: "ignored", ignore: true}, item{id: "later"})
	if a := n.answer("ignored"); !errors.Is(a.err, ErrUnanswered) {
		t.Fatalf("ignored = %v, want ErrUnanswered", a.err)
	}
	if a := n.answer("later"); a.err != nil || a.r != "LATER" {
		t.Fatalf("later = %q, %v; want the queue still serving", a.r, a.err)
	}
}

// TestSubmitAllRequeue: a call put back by apply is notified once, when it
// is finally answered.
func TestSubmitAllRequeue(t *testing.T) {
	n := newNotes(t)
	var mu sync.Mutex
	tries := 0
	q := open(t, Config[item, string]{
		Name: "test", Capacity: 4, MaxWeight: 4, Notify: n.notify,
		Apply: func(calls []*Call[item, string]) {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range calls {
				if tries++; tries < 3 {
					c.Requeue()
					continue
				}
				c.Answer("done")
			}
		},
	})
	n.submitAll(q, time.Time{}, item{id: "slices"})
	if a := n.answer("slices"); a.err != nil || a.r != "done" {
		t.Fatalf("requeued call = %q, %v", a.r, a.err)
	}
	mu.Lock()
	defer mu.Unlock()
	if tries != 3 {
		t.Fatalf("applied %d times, want 3", tries)
	}
}

// TestNewCallNeedsNotify: SubmitAll on a queue without Notify is a mistake
// in the code, caught at once.
func TestNewCallNeedsNotify(t *testing.T) {
	q := open(t, config(newFake()))
	defer func() {
		if recover() == nil {
			t.Fatal("NewCall without Notify did not panic")
		}
	}()
	q.NewCall()
}

// TestSubmitAllNotifyPanics: a Notify that panics — a caller's callback
// gone wrong — costs that call only. The other calls of its batch get
// their real answers, not ErrPanicked; a panic while the queue fails a call
// past its deadline, or refuses one, does not end the drain or leave the
// refused calls after it unanswered; and the queue goes on serving.
func TestSubmitAllNotifyPanics(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	cfg := asyncConfig(f, n)
	cfg.Capacity = 8
	cfg.Notify = func(it *item, r string, err error) {
		n.notify(it, r, err)
		if strings.HasPrefix(it.id, "boom") {
			panic("a Done gone wrong: " + it.id)
		}
	}
	core, logs := observer.New(zapcore.ErrorLevel)
	cfg.Logger = zap.New(core)
	q := open(t, cfg)
	first := hold(t, q, f)
	n.submitAll(q, time.Now().Add(time.Millisecond), item{id: "boom-late"})
	n.submitAll(q, time.Time{}, item{id: "a"}, item{id: "boom-applied"}, item{id: "b"})
	// The queue holds 4 of 8 now: fill it, and the refusals, one of which
	// panics, follow.
	n.submitAll(q, time.Time{}, item{id: "c"}, item{id: "d"}, item{id: "e"}, item{id: "f"},
		item{id: "boom-refused"}, item{id: "refused"})
	time.Sleep(5 * time.Millisecond) // "boom-late"'s deadline passes while it is queued
	close(f.release)
	<-first
	if a := n.answer("boom-late"); !errors.Is(a.err, store.ErrUnavailable) {
		t.Fatalf("boom-late = %v, want ErrUnavailable", a.err)
	}
	for _, id := range []string{"a", "b", "c", "d", "e", "f"} {
		if a := n.answer(id); a.err != nil || a.r != strings.ToUpper(id) {
			t.Fatalf("%s = %q, %v; want its own answer despite a neighbour's panicking Notify", id, a.r, a.err)
		}
	}
	for _, id := range []string{"boom-refused", "refused"} {
		if a := n.answer(id); !errors.Is(a.err, store.ErrBusy) {
			t.Fatalf("%s = %v, want ErrBusy", id, a.err)
		}
	}
	n.submitAll(q, time.Time{}, item{id: "later"})
	if a := n.answer("later"); a.err != nil || a.r != "LATER" {
		t.Fatalf("later = %q, %v; want the queue still serving", a.r, a.err)
	}
	if logs.FilterMessage("batch: Notify panicked").Len() != 3 {
		t.Fatalf("logged %v; want each of the 3 panics of Notify logged", logs.All())
	}
}

// TestSecondBatchInFlight: with Config.Second, while a batch is held in
// Apply, a second batch is drawn and applied once Second items wait, and
// answered though the first is still held; fewer waiting items wait for
// the first batch; and never are three batches applied at once.
func TestSecondBatchInFlight(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	var inFlight, most atomic.Int32
	cfg := asyncConfig(f, n)
	cfg.Second = 2
	apply := cfg.Apply
	cfg.Apply = func(calls []*Call[item, string]) {
		now := inFlight.Add(1)
		for {
			m := most.Load()
			if now <= m || most.CompareAndSwap(m, now) {
				break
			}
		}
		apply(calls)
		inFlight.Add(-1)
	}
	q := open(t, cfg)
	first := hold(t, q, f)

	// One item waiting is below Second: it stays queued behind the held batch.
	n.submitAll(q, time.Time{}, item{id: "a"})
	if got := q.Len(); got != 1 {
		t.Fatalf("%d items queued; want 1", got)
	}
	// A second one reaches Second: both go out while "hold" is held.
	n.submitAll(q, time.Time{}, item{id: "b"})
	for _, id := range []string{"a", "b"} {
		if a := n.answer(id); a.err != nil || a.r != strings.ToUpper(id) {
			t.Fatalf("%s notified with %q, %v while the first batch was held", id, a.r, a.err)
		}
	}
	// Again, while the first is still held.
	n.submitAll(q, time.Time{}, item{id: "c"}, item{id: "d"}, item{id: "e"})
	for _, id := range []string{"c", "d", "e"} {
		if a := n.answer(id); a.err != nil {
			t.Fatalf("%s: %v", id, a.err)
		}
	}
	close(f.release)
	if a := <-first; a.err != nil {
		t.Fatalf("hold: %v", a.err)
	}
	if got, want := f.got(), [][]string{{"hold"}, {"a", "b"}, {"c", "d", "e"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
	if m := most.Load(); m != 2 {
		t.Fatalf("at most %d batches applied at once; want 2", m)
	}
}

// TestSecondBatchOff: without Config.Second, items wait for the batch in
// flight, however many.
func TestSecondBatchOff(t *testing.T) {
	f := newFake()
	n := newNotes(t)
	q := open(t, asyncConfig(f, n))
	first := hold(t, q, f)
	n.submitAll(q, time.Time{}, item{id: "a"}, item{id: "b"}, item{id: "c"})
	if got := q.Len(); got != 3 {
		t.Fatalf("%d items queued behind the held batch; want 3", got)
	}
	close(f.release)
	<-first
	for _, id := range []string{"a", "b", "c"} {
		n.answer(id)
	}
	if got, want := f.got(), [][]string{{"hold"}, {"a", "b", "c"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}
