package pebble

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// batches records ObserveBatch calls and can hold the committer inside one,
// so a test can line up requests in the queue before they are committed.
type batches struct {
	mu      sync.Mutex
	sizes   []int
	held    chan struct{} // closed when the committer is held
	release chan struct{} // close to let it go on
	holding bool
}

func newBatches() *batches {
	return &batches{held: make(chan struct{}), release: make(chan struct{})}
}

// observe is the ObserveBatch hook.
func (b *batches) observe(n int) {
	b.mu.Lock()
	b.sizes = append(b.sizes, n)
	hold := b.holding
	b.holding = false
	b.mu.Unlock()
	if hold {
		close(b.held)
		<-b.release
	}
}

// holdNext makes the committer stop in the hook of the next commit.
func (b *batches) holdNext() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holding = true
}

func (b *batches) get() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.sizes)
}

// openHeld opens a store, makes one write (first, or a Set in project
// "setup") and holds the committer in that write's ObserveBatch, so the
// test can line requests up in the queue. Close b.release to let it go.
func openHeld(t *testing.T, cfg Config, first func(s *Store) error) (*Store, *batches) {
	t.Helper()
	b := newBatches()
	cfg.ObserveBatch = b.observe
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "kv")
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = -1
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if first == nil {
		first = func(s *Store) error { return s.Set(context.Background(), "setup", "k", []byte("v"), 0) }
	}
	// The first write is answered only after its ObserveBatch returns, so it
	// runs aside; the cleanup lets the committer go and checks it.
	firstErr := make(chan error, 1)
	b.holdNext()
	go func() { firstErr <- first(s) }()
	t.Cleanup(func() {
		select {
		case <-b.release:
		default:
			close(b.release)
		}
		if err := <-firstErr; err != nil {
			t.Errorf("first write: %v", err)
		}
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Error(err)
		}
	})
	<-b.held
	return s, b
}

// waitQueued waits until n requests wait in the queue. It polls: the test
// asserts on what gets committed, never on how long anything took.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.queue.Len() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", s.queue.Len(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGroupCommit(t *testing.T) {
	s, b := openHeld(t, Config{}, nil)
	ctx := context.Background()

	// While the committer is busy, 10 writers queue up...
	const writers = 10
	errs := make(chan error, writers)
	for i := range writers {
		go func() { errs <- s.Set(ctx, "p", "k"+strconv.Itoa(i), []byte("v"), 0) }()
	}
	waitQueued(t, s, writers)
	// ...and are committed together, in one batch, once it is free.
	close(b.release)
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// An idle write commits alone, without waiting for company.
	if err := s.Set(ctx, "p", "idle", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if got, want := b.get(), []int{1, writers, 1}; !slices.Equal(got, want) {
		t.Fatalf("writes per commit = %v, want %v", got, want)
	}
	if u, _ := s.Usage(ctx, "p"); u.Entries != writers+1 {
		t.Fatalf("Usage = %+v, want %d entries", u, writers+1)
	}
}

func TestGroupCommitUnderLoad(t *testing.T) {
	// Without holding the committer: concurrent writers share commits.
	b := newBatches()
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "kv"), ObserveBatch: b.observe})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const writers, each = 32, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.Set(context.Background(), "p", strconv.Itoa(w)+"/"+strconv.Itoa(i), []byte("v"), 0); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	sizes := b.get()
	total := 0
	for _, n := range sizes {
		total += n
	}
	if total != writers*each || len(sizes) >= total {
		t.Fatalf("%d writes in %d commits (%v): want every write committed and fewer commits than writes", total, len(sizes), sizes)
	}
}

func TestRefusedItemDoesNotFailNeighbours(t *testing.T) {
	ctx := context.Background()
	s, b := openHeld(t, Config{DefaultQuota: 100}, func(s *Store) error {
		return s.Set(ctx, "p", "text", []byte("not a number"), 0) // 16 bytes
	})

	// Six writes share one batch. The good ones fit in any order
	// (16 + 30 + 30 + 2 bytes); the refused ones never fit.
	type outcome struct {
		name string
		err  error
	}
	writes := []struct {
		name string
		call func() error
		want error
	}{
		{"set a", func() error { return s.Set(ctx, "p", "a", []byte(strings.Repeat("v", 29)), 0) }, nil},
		{"set over quota", func() error { return s.Set(ctx, "p", "b", make([]byte, 200), 0) }, store.ErrQuotaExceeded},
		{"incr of text", func() error { _, err := s.Incr(ctx, "p", "text", 1, 0); return err }, store.ErrNotInteger},
		{"set d", func() error { return s.Set(ctx, "p", "d", []byte(strings.Repeat("v", 29)), 0) }, nil},
		{"setMany over quota", func() error {
			return s.SetMany(ctx, "p", []store.Item{{Key: "e1", Value: []byte("v")}, {Key: "e2", Value: make([]byte, 200)}})
		}, store.ErrQuotaExceeded},
		{"incr n", func() error { _, err := s.Incr(ctx, "p", "n", 1, 0); return err }, nil},
	}
	outcomes := make(chan outcome, len(writes))
	for _, w := range writes {
		go func() { outcomes <- outcome{w.name, w.call()} }()
	}
	waitQueued(t, s, len(writes))
	close(b.release)
	got := map[string]error{}
	for range writes {
		o := <-outcomes
		got[o.name] = o.err
	}
	for _, w := range writes {
		if err := got[w.name]; (w.want == nil && err != nil) || !errors.Is(err, w.want) {
			t.Errorf("%s = %v, want %v", w.name, err, w.want)
		}
	}
	if sizes := b.get(); !slices.Equal(sizes, []int{1, len(writes)}) {
		t.Fatalf("writes per commit = %v, want all %d in one", sizes, len(writes))
	}
	if found, _ := s.Has(ctx, "p", "e1"); found {
		t.Error("the refused SetMany wrote part of its items")
	}
	if u, _ := s.Usage(ctx, "p"); u.Bytes != 16+30+30+2 || u.Entries != 4 {
		t.Errorf("Usage = %+v, want the 4 good entries, 78 bytes", u)
	}
}

func TestWriteSurvivesCancelAfterEnqueue(t *testing.T) {
	s, b := openHeld(t, Config{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Set(ctx, "p", "k", []byte("v"), 0) }()
	waitQueued(t, s, 1)
	cancel()
	close(b.release)
	// Documented: once queued, the write is applied and its outcome reported.
	if err := <-errc; err != nil {
		t.Fatalf("Set cancelled after it was queued = %v, want its real outcome (success)", err)
	}
	if v, found, _ := s.Get(context.Background(), "p", "k"); !found || string(v) != "v" {
		t.Fatal("the write is missing")
	}
}

func TestFailedBatchRetriedPerItem(t *testing.T) {
	s, b := openHeld(t, Config{}, nil)
	ctx := context.Background()
	errs := make(chan error, 2)
	go func() { errs <- s.Set(ctx, "p", "before", []byte("v"), 0) }()
	waitQueued(t, s, 1)
	// A request whose batch fails after it wrote something.
	boom := errors.New("disk on fire")
	bad := make(chan result, 1)
	go func() {
		bad <- s.submit(ctx, request{project: "p", apply: func(w *writeTx) (result, error) {
			if err := w.b.Set(metaKey("junk"), []byte("x"), nil); err != nil {
				return result{}, err
			}
			return result{}, boom
		}})
	}()
	waitQueued(t, s, 2)
	go func() { errs <- s.Set(ctx, "p", "after", []byte("v"), 0) }()
	waitQueued(t, s, 3)
	close(b.release)

	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("a write next to a failing one = %v, want success", err)
		}
	}
	res := <-bad
	if !errors.Is(res.err, boom) || !errors.Is(res.err, store.ErrUnavailable) {
		t.Fatalf("failing request = %v, want its error wrapped in ErrUnavailable", res.err)
	}
	for _, k := range []string{"before", "after"} {
		if found, _ := s.Has(ctx, "p", k); !found {
			t.Fatalf("%q is missing", k)
		}
	}
	if _, closer, err := s.db.Get(metaKey("junk")); err == nil {
		closer.Close()
		t.Error("the failed request's partial write was committed")
	}
	// The failed batch of 3 is not observed; its retries are, one by one.
	if got, want := b.get(), []int{1, 1, 1}; !slices.Equal(got, want) {
		t.Fatalf("writes per commit = %v, want %v", got, want)
	}
}

func TestCloseCommitsQueuedWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv")
	s, b := openHeld(t, Config{Path: path}, nil)
	ctx := context.Background()
	const writers = 5
	errs := make(chan error, writers)
	for i := range writers {
		go func() { errs <- s.Set(ctx, "p", "k"+strconv.Itoa(i), []byte("v"), 0) }()
	}
	waitQueued(t, s, writers)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	close(b.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatalf("a write queued before Close = %v, want success", err)
		}
	}
	s2, err := Open(ctx, Config{Path: path, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if u, _ := s2.Usage(ctx, "p"); u.Entries != writers {
		t.Fatalf("after reopen, %d entries, want the %d writes acknowledged before Close", u.Entries, writers)
	}
}

// storedEntries is the project's entry count as stored, expired entries
// included: what only sweeping lowers.
func storedEntries(t *testing.T, s *Store, project string) int64 {
	t.Helper()
	var n int64
	if err := s.read(context.Background(), func(r reader, _ int64) error {
		st, _, err := r.state(project)
		n = st.entries
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSweeperRemovesExpired(t *testing.T) {
	clock := storetest.NewClock()
	ctx := context.Background()
	s, err := Open(ctx, Config{
		Path:          filepath.Join(t.TempDir(), "kv"),
		Now:           clock.Now,
		SweepInterval: time.Millisecond,
		SweepBatch:    7, // several batches per round
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 30 {
		if err := s.Set(ctx, "p", "tmp"+strconv.Itoa(i), []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Set(ctx, "p", "live", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for storedEntries(t, s, "p") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d entries stored after the sweeper had 10s, want only the live one", storedEntries(t, s, "p"))
		}
		time.Sleep(time.Millisecond)
	}
	if found, _ := s.Has(ctx, "p", "live"); !found {
		t.Fatal("the sweeper removed a live entry")
	}
}

// TestFullQueueIsBusy: a write that cannot enter a full queue before its
// deadline fails with ErrBusy (the daemon answers busy: nothing written,
// retry later), not with a bare deadline error.
func TestFullQueueIsBusy(t *testing.T) {
	s, b := openHeld(t, Config{}, nil)
	var wg sync.WaitGroup
	for i := range queueCapacity {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Sixteen projects, each within its share of the queue.
			s.Set(context.Background(), "p"+strconv.Itoa(i%16), "k"+strconv.Itoa(i), []byte("v"), 0)
		}()
	}
	waitQueued(t, s, queueCapacity)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := s.Set(ctx, "p", "late", []byte("v"), 0)
	if !errors.Is(err, store.ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Set into a full queue = %v, want ErrBusy wrapping the deadline", err)
	}
	close(b.release)
	wg.Wait()
	if _, found, _ := s.Get(context.Background(), "p", "late"); found {
		t.Fatal("the refused write was stored")
	}
}

// TestOneBatchOfOneProject lines up writes of one project that depend
// on each other (an overwrite that drops a TTL, a Clear, writes after it) so
// that they share one batch, and checks what a user sees afterwards:
// the values, the usage, which entries expire, and the same after a
// restart.
func TestOneBatchOfOneProject(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	path := filepath.Join(t.TempDir(), "kv")
	s, b := openHeld(t, Config{Path: path, Now: clock}, func(s *Store) error {
		return s.Set(ctx, "q", "old", []byte("v"), time.Minute)
	})

	writes := []func() error{
		func() error { return s.Set(ctx, "p", "a", []byte("1"), time.Minute) },
		func() error { return s.Set(ctx, "p", "a", []byte("22"), 0) }, // no longer expires
		func() error { return s.Set(ctx, "p", "b", []byte("3"), time.Minute) },
		func() error { _, err := s.Clear(ctx, "q"); return err },
		func() error { return s.Set(ctx, "q", "new", []byte("4"), 0) },
		func() error { _, err := s.Incr(ctx, "q", "n", 5, 0); return err },
	}
	errs := make(chan error, len(writes))
	for i, w := range writes {
		go func() { errs <- w() }()
		waitQueued(t, s, i+1) // one at a time: a project's writes keep their order
	}
	close(b.release)
	for range writes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if sizes := b.get(); !slices.Equal(sizes, []int{1, len(writes)}) {
		t.Fatalf("writes per commit = %v, want all %d in one", sizes, len(writes))
	}

	check := func(s *Store, when string) {
		t.Helper()
		for _, c := range []struct {
			project, key, want string
		}{{"p", "a", "22"}, {"q", "new", "4"}, {"q", "n", "5"}, {"q", "old", ""}} {
			v, found, err := s.Get(ctx, c.project, c.key)
			if err != nil || string(v) != c.want || found != (c.want != "") {
				t.Errorf("%s: Get(%s, %s) = %q, %v, %v; want %q", when, c.project, c.key, v, found, err, c.want)
			}
		}
		if u, _ := s.Usage(ctx, "q"); u.Entries != 2 || u.Bytes != store.EntrySize("new", []byte("4"))+store.EntrySize("n", []byte("5")) {
			t.Errorf("%s: Usage(q) = %+v, want the 2 entries written after the Clear", when, u)
		}
	}
	check(s, "after the commit")

	// Past the TTLs, only b expires: a's overwrite took its index row away,
	// and the Clear took q's "old".
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want b alone", n, err)
	}
	if u, _ := s.Usage(ctx, "p"); u.Entries != 1 || u.Bytes != store.EntrySize("a", []byte("22")) {
		t.Errorf("Usage(p) = %+v, want a alone", u)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, Config{Path: path, Now: clock, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2, "after a restart")
	if u, _ := s2.Usage(ctx, "p"); u.Entries != 1 || u.Bytes != store.EntrySize("a", []byte("22")) {
		t.Errorf("after a restart: Usage(p) = %+v, want a alone", u)
	}
}

// TestOneBatchOfDo is TestOneTransactionOfOneProject for the writes
// of Do: a set, a delete of the same key and two more sets of one project
// share one batch, and the project's usage counts what is left.
func TestOneBatchOfDo(t *testing.T) {
	ctx := context.Background()
	s, b := openHeld(t, Config{}, nil)
	done := make(chan *store.Op, 4)
	ops := []*store.Op{
		{Kind: store.OpSet, Project: "p", Key: "a", Value: []byte("1111111111")},
		{Kind: store.OpDelete, Project: "p", Key: "a"},
		{Kind: store.OpSet, Project: "p", Key: "b", Value: []byte("2")},
		{Kind: store.OpSet, Project: "p", Key: "c", Value: []byte("3")},
	}
	for _, op := range ops {
		op.Done = func(op *store.Op) { done <- op }
	}
	s.Do(ops)
	waitQueued(t, s, len(ops))
	close(b.release)
	for range ops {
		if op := <-done; op.Err != nil {
			t.Fatalf("%v %s: %v", op.Kind, op.Key, op.Err)
		}
	}
	if !ops[1].Found {
		t.Error("the delete did not find the key the set before it wrote")
	}
	if sizes := b.get(); !slices.Equal(sizes, []int{1, len(ops)}) {
		t.Fatalf("writes per commit = %v, want all %d in one", sizes, len(ops))
	}
	want := store.EntrySize("b", []byte("2")) + store.EntrySize("c", []byte("3"))
	if u, _ := s.Usage(ctx, "p"); u.Entries != 2 || u.Bytes != want {
		t.Errorf("Usage(p) = %+v, want b and c: 2 entries, %d bytes", u, want)
	}
}
