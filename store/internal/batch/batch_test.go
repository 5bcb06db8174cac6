package batch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/kvsidecar/kvsidecar/store"
)

// item is what the tests queue: an id, what it counts against the limits,
// and how the fake apply treats it.
type item struct {
	id     string
	weight int
	bytes  int
	panic  bool // the fake apply panics when it reaches this item
	ignore bool // the fake apply leaves this item unanswered
}

// fake is the apply function of the tests: it records each batch's ids and
// answers every item with its id in upper case. It can hold the drain inside
// the next batch, so that a test lines items up in the queue meanwhile.
type fake struct {
	mu      sync.Mutex
	batches [][]string
	drained []bool // per batch: applied by the drain goroutine, not a submitter
	hold    bool
	held    chan struct{} // closed when a batch is held
	release chan struct{} // close to let it go on
}

func newFake() *fake {
	return &fake{held: make(chan struct{}), release: make(chan struct{})}
}

func (f *fake) apply(calls []*Call[item, string]) {
	ids := make([]string, len(calls))
	for i, c := range calls {
		ids[i] = c.Item.id
	}
	onDrain := onDrain()
	f.mu.Lock()
	f.batches = append(f.batches, ids)
	f.drained = append(f.drained, onDrain)
	hold := f.hold
	f.hold = false
	f.mu.Unlock()
	if hold {
		close(f.held)
		<-f.release
	}
	for _, c := range calls {
		switch {
		case c.Item.panic:
			panic("boom at " + c.Item.id)
		case c.Item.ignore:
		default:
			c.Answer(strings.ToUpper(c.Item.id))
		}
	}
}

func (f *fake) got() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

// config is a queue of the fake with room for 16 items, 4 of weight 1 a
// batch, and no byte bound.
func config(f *fake) Config[item, string] {
	return Config[item, string]{
		Name:      "test",
		Capacity:  16,
		MaxWeight: 4,
		Weight:    func(it item) int { return max(it.weight, 1) },
		Bytes:     func(it item) int { return it.bytes },
		Apply:     f.apply,
	}
}

func open(t *testing.T, cfg Config[item, string]) *Queue[item, string] {
	t.Helper()
	q := New(cfg)
	t.Cleanup(q.Close)
	return q
}

// answer is what one Submit returned.
type answer struct {
	id  string
	r   string
	err error
}

// hold makes the drain stop inside a batch of its own ("hold") and returns
// once it is there. Close f.release to let it go; the answer of "hold"
// arrives on the channel returned.
func hold(t *testing.T, q *Queue[item, string], f *fake) <-chan answer {
	t.Helper()
	f.mu.Lock()
	f.hold = true
	f.mu.Unlock()
	out := make(chan answer, 1)
	go func() {
		r, err := q.Submit(context.Background(), item{id: "hold"})
		out <- answer{"hold", r, err}
	}()
	<-f.held
	return out
}

// submitQueued submits it in a goroutine and returns once it is queued,
// with the channel its answer will arrive on.
func submitQueued(t *testing.T, ctx context.Context, q *Queue[item, string], it item) <-chan answer {
	t.Helper()
	n := q.Len()
	out := make(chan answer, 1)
	go func() {
		r, err := q.Submit(ctx, it)
		out <- answer{it.id, r, err}
	}()
	waitFor(t, "the item to be queued", func() bool { return q.Len() == n+1 })
	return out
}

// waitFor polls cond until it holds, failing the test after 10 seconds. The
// tests assert on what is applied and answered, never on how long it took.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestIdleItemAppliedAlone: with nothing else queued, an item is applied at
// once in a batch of its own: the drain never waits for company (a drain
// that did would hang here, since nothing else ever comes).
func TestIdleItemAppliedAlone(t *testing.T) {
	f := newFake()
	q := open(t, config(f))
	for _, id := range []string{"a", "b"} {
		r, err := q.Submit(context.Background(), item{id: id})
		if err != nil || r != strings.ToUpper(id) {
			t.Fatalf("Submit(%s) = %q, %v; want %q", id, r, err, strings.ToUpper(id))
		}
	}
	if got, want := f.got(), [][]string{{"a"}, {"b"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestBatchLimits lines items up behind a held batch and checks how the
// drain cuts them into batches: in queue order, within MaxWeight and
// MaxBytes, the item that does not fit carried to the next batch, and the
// first item of a batch always taken however large.
func TestBatchLimits(t *testing.T) {
	cases := []struct {
		name     string
		maxBytes int
		items    []item
		want     [][]string
	}{
		{
			name:  "count",
			items: []item{{id: "1"}, {id: "2"}, {id: "3"}, {id: "4"}, {id: "5"}, {id: "6"}, {id: "7"}, {id: "8"}, {id: "9"}, {id: "10"}},
			want:  [][]string{{"1", "2", "3", "4"}, {"5", "6", "7", "8"}, {"9", "10"}},
		},
		{
			name:  "carry by weight",
			items: []item{{id: "a", weight: 3}, {id: "b", weight: 3}, {id: "c"}, {id: "d", weight: 2}},
			// b would make 6: carried, it heads the next batch with c; d
			// would make 6 again.
			want: [][]string{{"a"}, {"b", "c"}, {"d"}},
		},
		{
			name:  "heavy first item goes alone",
			items: []item{{id: "huge", weight: 9}, {id: "a"}, {id: "heavy", weight: 5}, {id: "b"}},
			want:  [][]string{{"huge"}, {"a"}, {"heavy"}, {"b"}},
		},
		{
			name:     "carry by bytes",
			maxBytes: 100,
			items:    []item{{id: "a", bytes: 60}, {id: "b", bytes: 50}, {id: "c", bytes: 40}, {id: "big", bytes: 500}, {id: "d"}},
			want:     [][]string{{"a"}, {"b", "c"}, {"big"}, {"d"}},
		},
		{
			name:     "full by bytes",
			maxBytes: 100,
			// a reaches the bound: nothing more is taken, though b is empty.
			items: []item{{id: "a", bytes: 100}, {id: "b"}},
			want:  [][]string{{"a"}, {"b"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			cfg := config(f)
			cfg.MaxBytes = tc.maxBytes
			q := open(t, cfg)
			first := hold(t, q, f)
			var answers []<-chan answer
			for _, it := range tc.items {
				answers = append(answers, submitQueued(t, context.Background(), q, it))
			}
			close(f.release)
			if a := <-first; a.err != nil {
				t.Fatalf("hold: %v", a.err)
			}
			for i, ch := range answers {
				if a := <-ch; a.err != nil || a.r != strings.ToUpper(tc.items[i].id) {
					t.Errorf("Submit(%s) = %q, %v", tc.items[i].id, a.r, a.err)
				}
			}
			want := append([][]string{{"hold"}}, tc.want...)
			if got := f.got(); !slices.EqualFunc(got, want, slices.Equal) {
				t.Fatalf("batches = %v, want %v", got, want)
			}
		})
	}
}

// TestClosed: Close applies what was queued before it, then Submit fails
// with store.ErrClosed and nothing more is applied.
func TestClosed(t *testing.T) {
	f := newFake()
	q := open(t, config(f))
	first := hold(t, q, f)
	queued := submitQueued(t, context.Background(), q, item{id: "queued"})
	closed := make(chan struct{})
	go func() {
		q.Close()
		close(closed)
	}()
	waitFor(t, "Close to close the queue", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.closed
	})
	// Closing, still applying what was queued: a new item is refused.
	if _, err := q.Submit(context.Background(), item{id: "late"}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Submit while closing = %v, want ErrClosed", err)
	}
	close(f.release)
	<-closed
	if a := <-first; a.err != nil {
		t.Fatalf("hold: %v", a.err)
	}
	if a := <-queued; a.err != nil || a.r != "QUEUED" {
		t.Fatalf("an item queued before Close = %q, %v; want it applied", a.r, a.err)
	}
	if _, err := q.Submit(context.Background(), item{id: "after"}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Submit after Close = %v, want ErrClosed", err)
	}
	q.Close() // a second Close returns too
	if got, want := f.got(), [][]string{{"hold"}, {"queued"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestFullQueueIsBusy: an item that cannot enter a full queue before its
// context ends fails with store.ErrBusy, wrapping the context's error, and
// is never applied.
func TestFullQueueIsBusy(t *testing.T) {
	f := newFake()
	cfg := config(f)
	cfg.Capacity = 2
	q := open(t, cfg)
	first := hold(t, q, f)
	a := submitQueued(t, context.Background(), q, item{id: "a"})
	b := submitQueued(t, context.Background(), q, item{id: "b"})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := q.Submit(ctx, item{id: "refused"})
	if !errors.Is(err, store.ErrBusy) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "the test queue stayed full") {
		t.Fatalf("Submit into a full queue = %v, want ErrBusy naming the queue and wrapping the deadline", err)
	}
	close(f.release)
	for _, ch := range []<-chan answer{first, a, b} {
		if a := <-ch; a.err != nil {
			t.Fatalf("Submit(%s) = %v", a.id, a.err)
		}
	}
	if got, want := f.got(), [][]string{{"hold"}, {"a", "b"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v (the refused item applied?)", got, want)
	}
}

// TestEndedContext: a Submit whose context has already ended fails with the
// context's error and queues nothing.
func TestEndedContext(t *testing.T) {
	f := newFake()
	q := open(t, config(f))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.Submit(ctx, item{id: "a"}); !errors.Is(err, context.Canceled) || errors.Is(err, store.ErrBusy) {
		t.Fatalf("Submit with an ended context = %v, want context.Canceled alone", err)
	}
	if _, err := q.Submit(context.Background(), item{id: "b"}); err != nil {
		t.Fatal(err)
	}
	if got, want := f.got(), [][]string{{"b"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestAbandoned: on an Abandonable queue, a caller whose context ends while
// its item waits returns at once with store.ErrUnavailable, and the item is
// not applied; its neighbours are.
func TestAbandoned(t *testing.T) {
	f := newFake()
	cfg := config(f)
	cfg.Abandonable = true
	cfg.AbandonedMessage = "no answer in time"
	q := open(t, cfg)
	first := hold(t, q, f)
	before := submitQueued(t, context.Background(), q, item{id: "before"})
	ctx, cancel := context.WithCancel(context.Background())
	gone := submitQueued(t, ctx, q, item{id: "gone"})
	after := submitQueued(t, context.Background(), q, item{id: "after"})
	cancel()
	a := <-gone // while the drain is still held
	if !errors.Is(a.err, store.ErrUnavailable) || !errors.Is(a.err, context.Canceled) || !strings.Contains(a.err.Error(), "no answer in time") {
		t.Fatalf("abandoned Submit = %q, %v; want ErrUnavailable saying AbandonedMessage and wrapping the cancel", a.r, a.err)
	}
	close(f.release)
	for _, ch := range []<-chan answer{first, before, after} {
		if a := <-ch; a.err != nil || a.r != strings.ToUpper(a.id) {
			t.Fatalf("Submit(%s) = %q, %v", a.id, a.r, a.err)
		}
	}
	if got, want := f.got(), [][]string{{"hold"}, {"before", "after"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v: the abandoned item must not be applied", got, want)
	}
}

// TestNotAbandonable: on a queue that is not Abandonable, a caller whose
// context ends after its item was queued still gets the item's real
// outcome, and the item is applied.
func TestNotAbandonable(t *testing.T) {
	f := newFake()
	q := open(t, config(f))
	first := hold(t, q, f)
	ctx, cancel := context.WithCancel(context.Background())
	queued := submitQueued(t, ctx, q, item{id: "queued"})
	cancel()
	close(f.release)
	<-first
	if a := <-queued; a.err != nil || a.r != "QUEUED" {
		t.Fatalf("Submit cancelled after it was queued = %q, %v; want its real outcome", a.r, a.err)
	}
	if got, want := f.got(), [][]string{{"hold"}, {"queued"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestPanicFailsItsBatchOnly: a panic inside apply fails the calls of that
// batch it had not answered with ErrPanicked (the daemon answers internal),
// keeps the answers given before it, is logged with its stack, and the queue
// goes on serving.
func TestPanicFailsItsBatchOnly(t *testing.T) {
	f := newFake()
	cfg := config(f)
	core, logs := observer.New(zapcore.ErrorLevel)
	cfg.Logger = zap.New(core)
	q := open(t, cfg)
	first := hold(t, q, f)
	ok := submitQueued(t, context.Background(), q, item{id: "ok"})
	bad := submitQueued(t, context.Background(), q, item{id: "bad", panic: true})
	next := submitQueued(t, context.Background(), q, item{id: "next"})
	close(f.release)
	<-first

	if a := <-ok; a.err != nil || a.r != "OK" {
		t.Errorf("a call answered before the panic = %q, %v; want its answer", a.r, a.err)
	}
	for _, ch := range []<-chan answer{bad, next} {
		a := <-ch
		if !errors.Is(a.err, ErrPanicked) || !strings.Contains(a.err.Error(), "boom at bad") {
			t.Errorf("Submit(%s) in the panicking batch = %q, %v; want ErrPanicked with the panic's value", a.id, a.r, a.err)
		}
		for _, sentinel := range []error{store.ErrUnavailable, store.ErrBusy, store.ErrClosed, store.ErrBadArgument} {
			if errors.Is(a.err, sentinel) {
				t.Errorf("Submit(%s) = %v matches %v; a panic is an internal error", a.id, a.err, sentinel)
			}
		}
	}
	if r, err := q.Submit(context.Background(), item{id: "later"}); err != nil || r != "LATER" {
		t.Fatalf("Submit after the panic = %q, %v; want the queue still serving", r, err)
	}
	entries := logs.FilterMessageSnippet("panicked").All()
	if len(entries) != 1 || !strings.Contains(entries[0].ContextMap()["stack"].(string), "batch.(*fake).apply") {
		t.Fatalf("logged %v; want one error with the stack of the panic", entries)
	}
}

// TestUnansweredCallFails: a call that apply returns without answering gets
// ErrUnanswered instead of waiting for ever.
func TestUnansweredCallFails(t *testing.T) {
	f := newFake()
	q := open(t, config(f))
	if _, err := q.Submit(context.Background(), item{id: "lost", ignore: true}); !errors.Is(err, ErrUnanswered) {
		t.Fatalf("Submit of an item apply ignores = %v, want ErrUnanswered", err)
	}
	if r, err := q.Submit(context.Background(), item{id: "a"}); err != nil || r != "A" {
		t.Fatalf("next Submit = %q, %v", r, err)
	}
}

// TestAnsweredTwice: answering a call twice is a bug of apply; it is caught
// as a panic, and the rest of the batch fails instead of the drain blocking.
func TestAnsweredTwice(t *testing.T) {
	cfg := Config[item, string]{
		Name: "test", Capacity: 4, MaxWeight: 4,
		Apply: func(calls []*Call[item, string]) {
			calls[0].Answer("once")
			calls[0].Answer("twice")
		},
	}
	q := open(t, cfg)
	if r, err := q.Submit(context.Background(), item{id: "a"}); err != nil || r != "once" {
		t.Fatalf("Submit = %q, %v; want the first answer", r, err)
	}
	if r, err := q.Submit(context.Background(), item{id: "b"}); err != nil || r != "once" {
		t.Fatalf("Submit after the bug = %q, %v; want the queue still serving", r, err)
	}
}

// TestConcurrentSubmitters: many callers at once each get their own answer,
// every item is applied exactly once, and they share batches.
func TestConcurrentSubmitters(t *testing.T) {
	f := newFake()
	cfg := config(f)
	cfg.MaxWeight = 64
	q := open(t, cfg)
	const callers, each = 16, 50
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := range each {
				id := string(rune('a'+c)) + string(rune('a'+i%26)) + string(rune('a'+i/26))
				if r, err := q.Submit(context.Background(), item{id: id}); err != nil || r != strings.ToUpper(id) {
					t.Errorf("Submit(%s) = %q, %v", id, r, err)
					return
				}
			}
		})
	}
	wg.Wait()
	seen := map[string]int{}
	for _, b := range f.got() {
		for _, id := range b {
			seen[id]++
		}
	}
	if len(seen) != callers*each {
		t.Fatalf("%d distinct items applied, want %d", len(seen), callers*each)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("item %s applied %d times", id, n)
		}
	}
}

// TestNewRefusesIncompleteConfig: a queue without Apply, Capacity or
// MaxWeight is a mistake caught at New, with a message naming the queue.
func TestNewRefusesIncompleteConfig(t *testing.T) {
	for _, cfg := range []Config[item, string]{
		{Name: "q", Capacity: 1, MaxWeight: 1},
		{Name: "q", MaxWeight: 1, Apply: func([]*Call[item, string]) {}},
		{Name: "q", Capacity: 1, Apply: func([]*Call[item, string]) {}},
	} {
		func() {
			defer func() {
				if v := recover(); v == nil || !strings.Contains(v.(string), `queue "q"`) {
					t.Errorf("New(%+v) panicked with %v, want a message naming the queue", cfg, v)
				}
			}()
			New(cfg).Close()
		}()
	}
}

// keyed is the fake's queue with one lane per item id's first letter: the
// project of the stores.
func keyed(f *fake) Config[item, string] {
	cfg := config(f)
	cfg.Capacity = 32
	cfg.Key = func(it item) string { return it.id[:1] }
	return cfg
}

// TestRoundRobinAcrossKeys: while key "a" floods the queue, a lone item of
// key "b" goes into the very next batch instead of waiting behind every
// item "a" queued before it, and each key's items keep their order.
func TestRoundRobinAcrossKeys(t *testing.T) {
	f := newFake()
	q := open(t, keyed(f))
	first := hold(t, q, f)
	var answers []<-chan answer
	for i := range 12 {
		answers = append(answers, submitQueued(t, context.Background(), q, item{id: "a" + string(rune('0'+i/10)) + string(rune('0'+i%10))}))
	}
	answers = append(answers, submitQueued(t, context.Background(), q, item{id: "b"}))
	close(f.release)
	<-first
	for _, ch := range answers {
		if a := <-ch; a.err != nil || a.r != strings.ToUpper(a.id) {
			t.Fatalf("Submit(%s) = %q, %v", a.id, a.r, a.err)
		}
	}
	// MaxWeight 4: "a" and "b" take turns while both wait, then "a" alone.
	want := [][]string{{"hold"}, {"a00", "b", "a01", "a02"}, {"a03", "a04", "a05", "a06"}, {"a07", "a08", "a09", "a10"}, {"a11"}}
	if got := f.got(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestRoundRobinHeavyItems: a flood of heavy items (each a batch of its
// own) delays another key's item by one batch, not by the flood: the drain
// goes on with the lane whose turn it is when a limit stops a batch.
func TestRoundRobinHeavyItems(t *testing.T) {
	f := newFake()
	q := open(t, keyed(f))
	first := hold(t, q, f)
	var answers []<-chan answer
	for _, id := range []string{"a1", "a2", "a3", "a4"} {
		answers = append(answers, submitQueued(t, context.Background(), q, item{id: id, weight: 4}))
	}
	answers = append(answers, submitQueued(t, context.Background(), q, item{id: "b1"}))
	answers = append(answers, submitQueued(t, context.Background(), q, item{id: "b2"}))
	close(f.release)
	<-first
	for _, ch := range answers {
		if a := <-ch; a.err != nil {
			t.Fatalf("Submit(%s) = %v", a.id, a.err)
		}
	}
	want := [][]string{{"hold"}, {"a1"}, {"b1"}, {"a2"}, {"b2"}, {"a3"}, {"a4"}}
	if got := f.got(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestShareOfTheQueue: a key that holds MaxPerKey waiting items gets
// store.ErrBusy for its next item when its context ends, naming the key and
// its share, while another key's item still enters and is applied.
func TestShareOfTheQueue(t *testing.T) {
	f := newFake()
	cfg := keyed(f)
	cfg.MaxPerKey = 3
	q := open(t, cfg)
	first := hold(t, q, f)
	var answers []<-chan answer
	for _, id := range []string{"a1", "a2", "a3"} {
		answers = append(answers, submitQueued(t, context.Background(), q, item{id: id}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := q.Submit(ctx, item{id: "a4"})
	if !errors.Is(err, store.ErrBusy) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"a" held its share of the test queue (3 calls)`) {
		t.Fatalf("Submit beyond the key's share = %v, want ErrBusy naming the key and its share", err)
	}
	answers = append(answers, submitQueued(t, context.Background(), q, item{id: "b1"}))
	close(f.release)
	<-first
	for _, ch := range answers {
		if a := <-ch; a.err != nil {
			t.Fatalf("Submit(%s) = %v", a.id, a.err)
		}
	}
	want := [][]string{{"hold"}, {"a1", "b1", "a2", "a3"}}
	if got := f.got(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v (a4 applied?)", got, want)
	}
}

// TestShareWaitsForRoom: an item beyond its key's share waits, and enters
// once the drain takes the key's earlier items.
func TestShareWaitsForRoom(t *testing.T) {
	f := newFake()
	cfg := keyed(f)
	cfg.MaxPerKey = 1
	q := open(t, cfg)
	first := hold(t, q, f)
	a1 := submitQueued(t, context.Background(), q, item{id: "a1"})
	a2 := make(chan answer, 1)
	go func() {
		r, err := q.Submit(context.Background(), item{id: "a2"})
		a2 <- answer{"a2", r, err}
	}()
	close(f.release)
	<-first
	for _, ch := range []<-chan answer{a1, a2} {
		if a := <-ch; a.err != nil || a.r != strings.ToUpper(a.id) {
			t.Fatalf("Submit(%s) = %q, %v", a.id, a.r, a.err)
		}
	}
}

// TestRequeue: calls Apply puts back are applied again in a later batch,
// ahead of their key's items that arrived meanwhile and in their own order,
// while other keys' items go on being applied in between.
func TestRequeue(t *testing.T) {
	var mu sync.Mutex
	var batches [][]string
	rounds := map[string]int{}
	release := make(chan struct{})
	cfg := Config[item, string]{
		Name: "test", Capacity: 16, MaxWeight: 4,
		Key: func(it item) string { return it.id[:1] },
		Apply: func(calls []*Call[item, string]) {
			mu.Lock()
			ids := make([]string, len(calls))
			for i, c := range calls {
				ids[i] = c.Item.id
			}
			batches = append(batches, ids)
			mu.Unlock()
			if ids[0] == "hold" {
				<-release
			}
			requeueing := false
			for _, c := range calls {
				// "a1" needs three slices; the "a" calls after it wait with it.
				if c.Item.id == "a1" && rounds["a1"] < 2 {
					rounds["a1"]++
					requeueing = true
				}
				if requeueing && c.Item.id[0] == 'a' {
					c.Requeue()
					continue
				}
				c.Answer(strings.ToUpper(c.Item.id))
			}
		},
	}
	q := open(t, cfg)
	h := make(chan answer, 1)
	go func() {
		r, err := q.Submit(context.Background(), item{id: "hold"})
		h <- answer{"hold", r, err}
	}()
	waitFor(t, "the held batch", func() bool { mu.Lock(); defer mu.Unlock(); return len(batches) == 1 })
	var answers []<-chan answer
	for _, id := range []string{"a1", "a2", "b1", "b2", "b3"} {
		answers = append(answers, submitQueued(t, context.Background(), q, item{id: id}))
	}
	close(release)
	<-h
	for _, ch := range answers {
		if a := <-ch; a.err != nil || a.r != strings.ToUpper(a.id) {
			t.Fatalf("Submit(%s) = %q, %v", a.id, a.r, a.err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := [][]string{{"hold"}, {"a1", "b1", "a2", "b2"}, {"b3", "a1", "a2"}, {"a1", "a2"}}
	if !slices.EqualFunc(batches, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", batches, want)
	}
}

// TestTurnBytes: with TurnBytes, a key of small items puts all of them into
// one batch in its turn, while a key of large items puts one per turn; a
// large item still heads the next batch when it would cross MaxBytes.
func TestTurnBytes(t *testing.T) {
	f := newFake()
	cfg := keyed(f)
	cfg.MaxWeight = 10
	cfg.MaxBytes = 300
	cfg.TurnBytes = 100
	q := open(t, cfg)
	first := hold(t, q, f)
	var answers []<-chan answer
	for _, id := range []string{"a1", "a2", "a3"} {
		answers = append(answers, submitQueued(t, context.Background(), q, item{id: id, bytes: 150}))
	}
	for _, id := range []string{"b1", "b2", "b3", "b4"} {
		answers = append(answers, submitQueued(t, context.Background(), q, item{id: id, bytes: 10}))
	}
	close(f.release)
	<-first
	for _, ch := range answers {
		if a := <-ch; a.err != nil {
			t.Fatalf("Submit(%s) = %v", a.id, a.err)
		}
	}
	// a1 (150) ends a's turn; b1..b4 (40) fit in b's; a2 would cross 300
	// and heads the next batch, where a, alone, has turn after turn.
	want := [][]string{{"hold"}, {"a1", "b1", "b2", "b3", "b4"}, {"a2", "a3"}}
	if got := f.got(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("batches = %v, want %v", got, want)
	}
}

// TestIdle checks when the drain calls Idle: at the start and after a batch
// that emptied the queue, never while items wait, and again after the
// duration it asked for while the queue stays empty — until it asks for 0.
func TestIdle(t *testing.T) {
	f := newFake()
	cfg := config(f)
	var mu sync.Mutex
	var seen []int // the queue's length at each call
	var q *Queue[item, string]
	again := 3 // calls that ask to run again
	cfg.Idle = func() time.Duration {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, q.Len())
		if again > 0 {
			again--
			return time.Millisecond
		}
		return 0
	}
	calls := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	mu.Lock()
	q = open(t, cfg)
	mu.Unlock()
	// At the start, and three times more as it asked; then it waits.
	waitFor(t, "Idle at the start and three times again", func() bool { return calls() == 4 })
	if _, err := q.Submit(context.Background(), item{id: "a"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Idle after the batch", func() bool { return calls() == 5 })
	// Items lined up behind a held batch are drawn without an Idle
	// between the batches.
	released := hold(t, q, f)
	queued := []<-chan answer{
		submitQueued(t, context.Background(), q, item{id: "b"}),
		submitQueued(t, context.Background(), q, item{id: "c", weight: 4}),
	}
	close(f.release)
	<-released
	for _, a := range queued {
		<-a
	}
	waitFor(t, "Idle once the queue emptied", func() bool { return calls() == 6 })
	mu.Lock()
	defer mu.Unlock()
	for i, n := range seen {
		if n != 0 {
			t.Errorf("Idle call %d saw %d items queued, want none", i, n)
		}
	}
}
