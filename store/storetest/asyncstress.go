package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// stressFor is how long testDoStress keeps its callers going.
const stressFor = 2 * time.Second

// stressEntry is what a caller of testDoStress knows of one of its keys.
type stressEntry struct {
	live    bool
	value   string
	version uint64
}

// testDoStress: many callers each run rounds of one Do of mixed ops on keys
// of their own, across three projects, reusing their Ops and the value
// buffers of their sets as soon as each round's Dones are in (scribbling
// over the buffers first). Every Done is called once, every read sees what
// the caller's earlier rounds wrote, conditional writes on the versions
// they were given hold, an op past its deadline changes nothing, and at the
// end each project's usage is the sum of what its keys hold.
func testDoStress(t *testing.T, h Harness) {
	f := open(t, h, Options{})
	a := f.s.(store.Async)
	projects := []string{"p", "q", "r"}
	const (
		callers = 8
		keys    = 6 // per caller and project
	)
	models := make([]map[string]*stressEntry, callers) // project/key → entry
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	stop := time.Now().Add(stressFor)
	var rounds atomic.Int64 // summed over the callers
	for w := range callers {
		model := map[string]*stressEntry{}
		models[w] = model
		wg.Go(func() {
			n, err := stressCaller(a, w, projects, keys, model, stop)
			rounds.Add(int64(n))
			if err != nil {
				errs <- fmt.Errorf("caller %d: %w", w, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if rounds.Load() < callers {
		t.Fatalf("%d rounds in %s; want every caller to finish one at least", rounds.Load(), stressFor)
	}
	// What the callers' models say is what the store holds.
	for _, p := range projects {
		var bytes, entries int64
		for w := range callers {
			for k := range keys {
				key := fmt.Sprintf("w%d-k%d", w, k)
				e := models[w][p+"/"+key]
				got, found, err := f.s.GetVersioned(f.ctx, p, key)
				if err != nil {
					t.Fatalf("GetVersioned(%s/%s) = %v", p, key, err)
				}
				live := e != nil && e.live
				if found != live || (live && (string(got.Value) != e.value || got.Version != e.version)) {
					t.Fatalf("%s/%s = (%q v%d, found %v), the caller's rounds left (%+v)", p, key, got.Value, got.Version, found, e)
				}
				if live {
					bytes += store.EntrySize(key, []byte(e.value))
					entries++
				}
			}
		}
		if u := f.usage(p); u.Bytes != bytes || u.Entries != entries {
			t.Fatalf("Usage(%s) = %d bytes, %d entries; its entries hold %d bytes, %d entries", p, u.Bytes, u.Entries, bytes, entries)
		}
	}
}

// stressOp is one op slot of a stress caller: the Op, reused every round,
// and the buffer its sets take their value from.
type stressOp struct {
	op    store.Op
	buf   []byte
	calls atomic.Int32
	want  *stressEntry // the entry before the round
	entry *stressEntry
	value string // the value a set writes
	late  bool   // its deadline has passed
}

// stressCaller runs rounds until stop; see testDoStress.
// It returns how many rounds it completed.
func stressCaller(a store.Async, w int, projects []string, keys int, model map[string]*stressEntry, stop time.Time) (int, error) {
	rng := rand.New(rand.NewPCG(uint64(w), 7))
	slots := make([]*stressOp, 0, len(projects)*keys)
	for _, p := range projects {
		for k := range keys {
			s := &stressOp{buf: make([]byte, 0, 64)}
			s.op.Project, s.op.Key = p, fmt.Sprintf("w%d-k%d", w, k)
			slots = append(slots, s)
			model[p+"/"+s.op.Key] = &stressEntry{}
		}
	}
	var pending sync.WaitGroup
	ops := make([]*store.Op, 0, len(slots))
	round := 0
	for ; time.Now().Before(stop); round++ {
		ops = ops[:0]
		var in []*stressOp
		for _, s := range slots {
			if rng.IntN(3) == 0 {
				continue // this key sits the round out
			}
			e := model[s.op.Project+"/"+s.op.Key]
			s.entry, s.want = e, &stressEntry{live: e.live, value: e.value, version: e.version}
			s.calls.Store(0)
			s.late = rng.IntN(16) == 0
			s.op.Deadline = time.Time{}
			if s.late {
				s.op.Deadline = time.Now().Add(-time.Millisecond)
			}
			s.op.Value, s.op.TTL, s.op.Cond = nil, 0, store.Cond{}
			switch rng.IntN(6) {
			case 0:
				s.op.Kind = store.OpGet
			case 1:
				s.op.Kind = store.OpHas
			case 2, 3:
				s.op.Kind = store.OpSet
				s.value = fmt.Sprintf("w%d r%d %s", w, round, s.op.Key)
				s.buf = append(s.buf[:0], s.value...)
				s.op.Value = s.buf
				if rng.IntN(2) == 0 {
					s.op.Cond = store.IfVersion(e.version) // holds: 0 when absent
					if !e.live {
						s.op.Cond = store.IfAbsent()
					}
				}
			case 4:
				s.op.Kind = store.OpDelete
				if rng.IntN(2) == 0 && e.live {
					s.op.Cond = store.IfVersion(e.version)
				}
			case 5:
				// A conditional set that cannot hold: it changes nothing.
				s.op.Kind = store.OpSet
				s.value = ""
				s.buf = append(s.buf[:0], "never"...)
				s.op.Value = s.buf
				s.op.Cond = store.IfVersion(e.version + 1000)
			}
			pending.Add(1)
			s.op.Done = func(o *store.Op) {
				if s.calls.Add(1) == 1 {
					if o.Kind == store.OpGet && o.Found {
						s.value = string(o.Value) // copied inside Done, as the contract asks
					}
					pending.Done()
				}
			}
			ops = append(ops, &s.op)
			in = append(in, s)
		}
		a.Do(ops)
		waited := make(chan struct{})
		go func() { pending.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(doTimeout):
			return round, fmt.Errorf("round %d: not every Done was called within %s", round, doTimeout)
		}
		for _, s := range in {
			if err := s.check(); err != nil {
				return round, fmt.Errorf("round %d: %s/%s: %w", round, s.op.Project, s.op.Key, err)
			}
			// The op and its buffer are the caller's again: scribble.
			for i := range s.buf {
				s.buf[i] = 'X'
			}
		}
	}
	return round, nil
}

// check compares the outcome of a stress op with what its caller knew, and
// updates the caller's entry.
func (s *stressOp) check() error {
	op, want, e := &s.op, s.want, s.entry
	if n := s.calls.Load(); n != 1 {
		return fmt.Errorf("Done called %d times, want once", n)
	}
	if errors.Is(op.Err, store.ErrBusy) {
		return nil // refused at once: nothing changed
	}
	if s.late {
		if !errors.Is(op.Err, store.ErrUnavailable) {
			return fmt.Errorf("op %d past its deadline = %v, want ErrUnavailable", op.Kind, op.Err)
		}
		return nil
	}
	switch op.Kind {
	case store.OpGet, store.OpHas:
		if op.Err != nil {
			return fmt.Errorf("read = %v", op.Err)
		}
		if op.Found != want.live {
			return fmt.Errorf("read found %v, want %v", op.Found, want.live)
		}
		if op.Kind == store.OpGet && want.live && (s.value != want.value || op.Version != want.version) {
			return fmt.Errorf("get = %q v%d, want %q v%d", s.value, op.Version, want.value, want.version)
		}
	case store.OpSet:
		if s.value == "" {
			if !errors.Is(op.Err, store.ErrConflict) {
				return fmt.Errorf("set on a wrong version = %v, want ErrConflict", op.Err)
			}
			return nil
		}
		if op.Err != nil {
			return fmt.Errorf("set = %v", op.Err)
		}
		if op.Version == 0 || (want.live && op.Version <= want.version) {
			return fmt.Errorf("set wrote version %d over %d", op.Version, want.version)
		}
		*e = stressEntry{live: true, value: s.value, version: op.Version}
	case store.OpDelete:
		if op.Err != nil {
			return fmt.Errorf("delete = %v", op.Err)
		}
		if op.Found != want.live {
			return fmt.Errorf("delete found %v, want %v", op.Found, want.live)
		}
		*e = stressEntry{}
	}
	return nil
}

// testDoCloseRacing: callers keep running Dos of writes and reads while the
// store is closed under them. Every Done is called once, each op either
// succeeds or fails with store.ErrClosed, and after Close every caller
// comes to a round whose ops all fail with it.
func testDoCloseRacing(t *testing.T, h Harness) {
	f := open(t, h, Options{})
	a := f.s.(store.Async)
	const callers = 6
	var (
		wg      sync.WaitGroup
		started sync.WaitGroup
		errs    = make(chan error, callers)
	)
	started.Add(callers)
	for w := range callers {
		wg.Go(func() {
			ops := []*store.Op{
				{Kind: store.OpSet, Project: "p", Key: fmt.Sprintf("w%d", w), Value: []byte("v")},
				{Kind: store.OpGet, Project: "p", Key: fmt.Sprintf("w%d", w)},
				{Kind: store.OpHas, Project: "q", Key: "k"},
				{Kind: store.OpDelete, Project: "q", Key: fmt.Sprintf("w%d", w)},
			}
			calls := make([]atomic.Int32, len(ops))
			for round := 0; ; round++ {
				var pending sync.WaitGroup
				for i, op := range ops {
					calls[i].Store(0)
					pending.Add(1)
					op.Done = func(*store.Op) {
						if calls[i].Add(1) == 1 {
							pending.Done()
						}
					}
				}
				a.Do(ops)
				pending.Wait()
				if round == 0 {
					started.Done()
				}
				allClosed := true
				for i, op := range ops {
					if c := calls[i].Load(); c != 1 {
						errs <- fmt.Errorf("caller %d round %d op %d: Done called %d times", w, round, i, c)
						return
					}
					switch {
					case op.Err == nil:
						allClosed = false
					case errors.Is(op.Err, store.ErrClosed):
					default:
						errs <- fmt.Errorf("caller %d round %d op %d = %v, want success or ErrClosed", w, round, i, op.Err)
						return
					}
				}
				if allClosed {
					return
				}
			}
		})
	}
	started.Wait()
	time.Sleep(20 * time.Millisecond)
	if err := f.s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
