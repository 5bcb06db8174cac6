package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// RunAsync runs the conformance suite with every single-key operation —
// Get, GetVersioned, Has, Set, SetIf, Delete and DeleteIf — going through
// the store's store.Async.Do instead of its own method, so that both paths
// keep the same semantics; then the tests of what only Do has (deadlines,
// refusals without waiting, ops of several projects and kinds in one call).
// The stores h opens must implement store.Async.
func RunAsync(t *testing.T, h Harness) {
	wrapped := Harness{
		RealClock: h.RealClock,
		Open: func(t *testing.T, opts Options) store.Store {
			return viaDo(t, h.Open(t, opts))
		},
	}
	if h.Reopen != nil {
		wrapped.Reopen = func(t *testing.T, s store.Store) store.Store {
			return viaDo(t, h.Reopen(t, s.(*doStore).Store))
		}
	}
	Run(t, wrapped)
	t.Run("Do", func(t *testing.T) { testDo(t, h) })
}

// doStore is a Store whose single-key operations call Do and wait for the
// op's Done; every other method is the store's own.
type doStore struct {
	store.Store
	async store.Async
}

func viaDo(t *testing.T, s store.Store) *doStore {
	t.Helper()
	a, ok := s.(store.Async)
	if !ok {
		t.Fatalf("%T does not implement store.Async", s)
	}
	return &doStore{Store: s, async: a}
}

// doTimeout bounds the wait for a Done: a Done never called fails the test
// instead of hanging it.
const doTimeout = time.Minute

// do runs op through Do as a caller with ctx would: an ended ctx fails at
// once, as the Store methods do, and ctx's deadline becomes the op's. It
// returns the op's error, and for OpGet a copy of the value taken inside
// Done, as the contract asks.
func (s *doStore) do(ctx context.Context, op *store.Op) (value []byte, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		op.Deadline = d
	}
	done := make(chan struct{})
	var calls atomic.Int32
	op.Done = func(o *store.Op) {
		if o.Kind == store.OpGet && o.Found {
			value = bytes.Clone(o.Value)
			if value == nil {
				value = []byte{}
			}
		}
		if calls.Add(1) == 1 {
			close(done)
		}
	}
	s.async.Do([]*store.Op{op})
	select {
	case <-done:
	case <-time.After(doTimeout):
		return nil, fmt.Errorf("the op's Done was not called within %s", doTimeout)
	}
	if n := calls.Load(); n != 1 {
		return nil, fmt.Errorf("the op's Done was called %d times, want once", n)
	}
	return value, op.Err
}

func (s *doStore) Get(ctx context.Context, project, key string) ([]byte, bool, error) {
	v, found, err := s.GetVersioned(ctx, project, key)
	return v.Value, found, err
}

func (s *doStore) GetVersioned(ctx context.Context, project, key string) (store.Versioned, bool, error) {
	op := &store.Op{Kind: store.OpGet, Project: project, Key: key}
	value, err := s.do(ctx, op)
	if err != nil {
		return store.Versioned{}, false, err
	}
	if !op.Found {
		return store.Versioned{}, false, nil
	}
	return store.Versioned{Value: value, Version: op.Version}, true, nil
}

func (s *doStore) Has(ctx context.Context, project, key string) (bool, error) {
	op := &store.Op{Kind: store.OpHas, Project: project, Key: key}
	if _, err := s.do(ctx, op); err != nil {
		return false, err
	}
	return op.Found, nil
}

func (s *doStore) Set(ctx context.Context, project, key string, value []byte, ttl time.Duration) error {
	_, err := s.SetIf(ctx, project, key, value, ttl, store.Cond{})
	return err
}

func (s *doStore) SetIf(ctx context.Context, project, key string, value []byte, ttl time.Duration, cond store.Cond) (uint64, error) {
	op := &store.Op{Kind: store.OpSet, Project: project, Key: key, Value: value, TTL: ttl, Cond: cond}
	if _, err := s.do(ctx, op); err != nil {
		return 0, err
	}
	return op.Version, nil
}

func (s *doStore) Delete(ctx context.Context, project, key string) (bool, error) {
	return s.DeleteIf(ctx, project, key, store.Cond{})
}

func (s *doStore) DeleteIf(ctx context.Context, project, key string, cond store.Cond) (bool, error) {
	op := &store.Op{Kind: store.OpDelete, Project: project, Key: key, Cond: cond}
	if _, err := s.do(ctx, op); err != nil {
		return false, err
	}
	return op.Found, nil
}

// outcome is what one op's Done saw.
type outcome struct {
	calls   int
	found   bool
	value   string
	version uint64
	err     error
	inDo    bool // Done was called before Do returned
}

// doAll runs ops through one Do and waits for every Done, failing the test
// unless each is called exactly once. The outcomes are in the order of ops.
// Each Done empties its op as it returns, as a daemon that reuses the op at
// once does: a store that looks at an op after its Done (and, finding it
// empty, answers it again) fails here.
func doAll(t *testing.T, a store.Async, ops []*store.Op) []outcome {
	t.Helper()
	out := make([]outcome, len(ops))
	var mu sync.Mutex
	var wg sync.WaitGroup
	returned := false
	for i, op := range ops {
		wg.Add(1)
		op.Done = func(o *store.Op) {
			mu.Lock()
			defer mu.Unlock()
			r := &out[i]
			r.calls++
			r.found, r.version, r.err, r.inDo = o.Found, o.Version, o.Err, !returned
			if o.Kind == store.OpGet {
				r.value = string(o.Value)
			}
			if r.calls == 1 {
				wg.Done()
			}
			*o = store.Op{Done: o.Done} // the op is the caller's again
		}
	}
	a.Do(ops)
	mu.Lock()
	returned = true
	mu.Unlock()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(doTimeout):
		t.Fatalf("not every Done of %d ops was called within %s", len(ops), doTimeout)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, r := range out {
		if r.calls != 1 {
			t.Fatalf("op %d: Done called %d times, want once", i, r.calls)
		}
	}
	return out
}

func testDo(t *testing.T, h Harness) {
	t.Run("Mixed", func(t *testing.T) { testDoMixed(t, h) })
	t.Run("Deadline", func(t *testing.T) { testDoDeadline(t, h) })
	t.Run("Busy", func(t *testing.T) { testDoBusy(t, h) })
	t.Run("Closed", func(t *testing.T) { testDoClosed(t, h) })
	t.Run("Stress", func(t *testing.T) { testDoStress(t, h) })
	t.Run("CloseRacing", func(t *testing.T) { testDoCloseRacing(t, h) })
}

// testDoMixed: one Do holding reads and writes of several projects, a
// conditional write that conflicts and an invalid op answers each op as its
// Store method would, and an op refused for its arguments does not hold up
// the others.
func testDoMixed(t *testing.T, h Harness) {
	f := open(t, h, Options{})
	a := f.s.(store.Async)
	f.set("p", "old", "v1", 0)
	f.set("q", "old", "w1", 0)
	f.set("p", "gone", "x", 0)
	vOld, _, err := f.s.GetVersioned(f.ctx, "p", "old")
	if err != nil {
		t.Fatal(err)
	}
	ops := []*store.Op{
		{Kind: store.OpGet, Project: "p", Key: "old"},
		{Kind: store.OpGet, Project: "q", Key: "old"},
		{Kind: store.OpGet, Project: "q", Key: "missing"},
		{Kind: store.OpHas, Project: "p", Key: "old"},
		{Kind: store.OpHas, Project: "q", Key: "gone"}, // p's key, not q's
		{Kind: store.OpSet, Project: "p", Key: "new", Value: []byte("n")},
		{Kind: store.OpSet, Project: "q", Key: "new", Value: []byte("m")},
		{Kind: store.OpSet, Project: "q", Key: "old", Value: []byte("w2"), Cond: store.IfAbsent()},
		{Kind: store.OpDelete, Project: "p", Key: "gone"},
		{Kind: store.OpDelete, Project: "q", Key: "never"},
		{Kind: store.OpGet, Project: "p", Key: ""},
		{Kind: store.OpSet, Project: "p", Key: "neg", Value: []byte("x"), TTL: -time.Second},
		{Kind: store.OpSet, Project: "", Key: "k", Value: []byte("x")},
	}
	whats := make([]string, len(ops))
	for i, op := range ops {
		whats[i] = fmt.Sprintf("op %d (%d %q/%q)", i, op.Kind, op.Project, op.Key)
	}
	out := doAll(t, a, ops)
	want := []struct {
		found bool
		value string
		err   error
	}{
		{true, "v1", nil}, {true, "w1", nil}, {false, "", nil},
		{true, "", nil}, {false, "", nil},
		{false, "", nil}, {false, "", nil}, {false, "", store.ErrConflict},
		{true, "", nil}, {false, "", nil},
		{false, "", store.ErrEmptyKey}, {false, "", store.ErrNegativeTTL}, {false, "", store.ErrBadArgument},
	}
	for i, w := range want {
		o, what := out[i], whats[i]
		if w.err != nil {
			wantErr(t, what, o.err, w.err)
			continue
		}
		if o.err != nil {
			t.Fatalf("%s = %v, want success", what, o.err)
		}
		if o.found != w.found || o.value != w.value {
			t.Fatalf("%s = (found %v, %q), want (found %v, %q)", what, o.found, o.value, w.found, w.value)
		}
	}
	if out[0].version != vOld.Version {
		t.Fatalf("Get version through Do = %d, GetVersioned = %d", out[0].version, vOld.Version)
	}
	if out[5].version == 0 || out[6].version == 0 {
		t.Fatalf("Set versions through Do = %d, %d; want the versions written", out[5].version, out[6].version)
	}
	// The reads of the Store methods see what the Do wrote.
	f.wantValue("p", "new", "n")
	f.wantValue("q", "new", "m")
	f.wantValue("q", "old", "w1")
	f.wantMissing("p", "gone")
	f.wantMissing("p", "neg")
	if v, _, _ := f.s.GetVersioned(f.ctx, "p", "new"); v.Version != out[5].version {
		t.Fatalf("GetVersioned(p/new) = version %d, Do's Set answered %d", v.Version, out[5].version)
	}
}

// testDoDeadline: an op whose deadline has passed is not applied and fails
// with store.ErrUnavailable; an op of the same Do with time left is.
func testDoDeadline(t *testing.T, h Harness) {
	f := open(t, h, Options{})
	a := f.s.(store.Async)
	f.set("p", "k", "v", 0)
	past := time.Now().Add(-time.Second)
	future := time.Now().Add(time.Minute)
	ops := []*store.Op{
		{Kind: store.OpSet, Project: "p", Key: "late", Value: []byte("x"), Deadline: past},
		{Kind: store.OpDelete, Project: "p", Key: "k", Deadline: past},
		{Kind: store.OpGet, Project: "p", Key: "k", Deadline: past},
		{Kind: store.OpHas, Project: "p", Key: "k", Deadline: past},
		{Kind: store.OpSet, Project: "p", Key: "timely", Value: []byte("y"), Deadline: future},
		{Kind: store.OpGet, Project: "p", Key: "k", Deadline: future},
	}
	out := doAll(t, a, ops)
	for i := range 4 {
		wantErr(t, fmt.Sprintf("op %d with a passed deadline", i), out[i].err, store.ErrUnavailable)
	}
	if out[4].err != nil || out[5].err != nil || out[5].value != "v" {
		t.Fatalf("ops with time left = %v, (%q, %v); want applied", out[4].err, out[5].value, out[5].err)
	}
	f.wantMissing("p", "late")
	f.wantValue("p", "k", "v")
	f.wantValue("p", "timely", "y")
}

// testDoBusy: a Do of more writes of one project than the store queues for
// it refuses the rest at once with store.ErrBusy — before Do returns, so the
// caller never waits for room — and writes none of them, while the writes
// it took are all applied.
func testDoBusy(t *testing.T, h Harness) {
	f := open(t, h, Options{})
	a := f.s.(store.Async)
	const n = 3000 // more than either backend queues
	ops := make([]*store.Op, n)
	for i := range ops {
		ops[i] = &store.Op{Kind: store.OpSet, Project: "p", Key: "k" + strconv.Itoa(i), Value: []byte("v")}
	}
	out := doAll(t, a, ops)
	busy := 0
	for i, o := range out {
		switch {
		case o.err == nil:
		case errors.Is(o.err, store.ErrBusy):
			busy++
			if !o.inDo {
				t.Fatalf("op %d failed with ErrBusy after Do returned; a refusal must not wait", i)
			}
		default:
			t.Fatalf("op %d = %v, want success or ErrBusy", i, o.err)
		}
	}
	if busy == 0 {
		t.Fatalf("all %d writes of one Do were taken; want the queue's bound to refuse some", n)
	}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	found, err := f.s.HasMany(f.ctx, "p", keys[:store.MaxBatchItems])
	if err != nil {
		t.Fatal(err)
	}
	for i, ok := range found {
		if ok != (out[i].err == nil) {
			t.Fatalf("op %d answered %v, and the key exists: %v", i, out[i].err, ok)
		}
	}
	if u := f.usage("p"); u.Entries != int64(n-busy) {
		t.Fatalf("Usage = %+v after %d writes taken, %d refused; want %d entries", u, n-busy, busy, n-busy)
	}
}

// testDoClosed: after Close, every op of a Do fails with store.ErrClosed.
func testDoClosed(t *testing.T, h Harness) {
	f := open(t, h, Options{})
	f.set("p", "k", "v", 0)
	if err := f.s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	ops := []*store.Op{
		{Kind: store.OpGet, Project: "p", Key: "k"},
		{Kind: store.OpHas, Project: "p", Key: "k"},
		{Kind: store.OpSet, Project: "p", Key: "k", Value: []byte("x")},
		{Kind: store.OpDelete, Project: "p", Key: "k"},
	}
	for i, o := range doAll(t, f.s.(store.Async), ops) {
		wantErr(t, fmt.Sprintf("op %d after Close", i), o.err, store.ErrClosed)
	}
}
