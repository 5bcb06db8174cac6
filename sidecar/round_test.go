package sidecar_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/sidecar/identity"
	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/pebble"
)

// asyncStore gives a store the store.Async interface the way the daemon's
// stores take it: reads answered inside Do, on the caller's goroutine;
// writes on a goroutine each (so the embedded store still groups their
// commits), after a random delay of up to maxDelay. While gate is set,
// every op waits for it to be closed. Every op's deadline is checked when
// it is taken up, as the contract says.
type asyncStore struct {
	store.Store
	maxDelay time.Duration

	mu   sync.Mutex
	gate chan struct{}
	wg   sync.WaitGroup
	done int // ops done
}

func (a *asyncStore) Do(ops []*store.Op) {
	a.mu.Lock()
	gate := a.gate
	a.mu.Unlock()
	for _, op := range ops {
		if gate == nil && (op.Kind == store.OpGet || op.Kind == store.OpHas) {
			a.run(op)
			continue
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			if gate != nil {
				<-gate
			}
			if a.maxDelay > 0 {
				time.Sleep(rand.N(a.maxDelay))
			}
			a.run(op)
		}()
	}
}

func (a *asyncStore) run(op *store.Op) {
	if !op.Deadline.IsZero() && !time.Now().Before(op.Deadline) {
		op.Err = store.ErrUnavailable
	} else {
		ctx := context.Background()
		switch op.Kind {
		case store.OpGet:
			var v store.Versioned
			v, op.Found, op.Err = a.GetVersioned(ctx, op.Project, op.Key)
			op.Value, op.Version = v.Value, v.Version
		case store.OpHas:
			op.Found, op.Err = a.Has(ctx, op.Project, op.Key)
		case store.OpSet:
			op.Version, op.Err = a.SetIf(ctx, op.Project, op.Key, op.Value, op.TTL, op.Cond)
		case store.OpDelete:
			op.Found, op.Err = a.DeleteIf(ctx, op.Project, op.Key, op.Cond)
		}
	}
	a.mu.Lock()
	a.done++
	a.mu.Unlock()
	op.Done(op)
}

// freeze makes every op given from now on wait until thaw.
func (a *asyncStore) freeze() {
	a.mu.Lock()
	a.gate = make(chan struct{})
	a.mu.Unlock()
}

func (a *asyncStore) thaw() {
	a.mu.Lock()
	close(a.gate)
	a.gate = nil
	a.mu.Unlock()
}

func (a *asyncStore) opsDone() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.done
}

// roundServer is a server on a real socket and a real embedded (Pebble) store, through
// asyncStore when st is given (the round path), else on that store
// itself.
type roundServer struct {
	socket  string
	metrics *sidecar.Metrics
	async   *asyncStore
}

func startRoundServer(tb testing.TB, async *asyncStore, cfg sidecar.Config) *roundServer {
	tb.Helper()
	wrap := func(st store.Store) store.Store { return st }
	if async != nil {
		wrap = func(st store.Store) store.Store {
			async.Store = st
			return async
		}
	}
	return startWrappedServer(tb, wrap, async, cfg)
}

// startWrappedServer starts a server on a real socket and a real Pebble
// store, serving it through wrap(the store); async, when given, is
// what wrap returns, waited for at cleanup.
func startWrappedServer(tb testing.TB, wrap func(store.Store) store.Store, async *asyncStore, cfg sidecar.Config) *roundServer {
	tb.Helper()
	dir, err := os.MkdirTemp("", "kvsr")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	b, err := pebble.Open(context.Background(), pebble.Config{Path: filepath.Join(dir, "kv")})
	if err != nil {
		tb.Fatal(err)
	}
	st := wrap(b)
	cfg.Socket = filepath.Join(dir, "kv.sock")
	cfg = cfg.WithDefaults()
	m := sidecar.NewMetrics()
	srv := sidecar.NewServer(cfg, st, identity.Static{Project: "round"}, m, zap.NewNop())
	if err := srv.Listen(); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			tb.Error(err)
		}
		if async != nil {
			async.wg.Wait()
		}
		srv.RemoveSocket()
		b.Close()
	})
	return &roundServer{socket: cfg.Socket, metrics: m, async: async}
}

// sendAll writes reqs to the socket in one write.
func (c *rawConn) sendAll(reqs []*protocol.Request) {
	c.t.Helper()
	var all []byte
	for _, req := range reqs {
		frame, err := c.enc.Request(req)
		if err != nil {
			c.t.Fatalf("encode: %v", err)
		}
		c.ops[req.ID] = req.Op
		all = append(all, frame...)
	}
	c.write(all)
}

// readN reads n responses, by id.
func (c *rawConn) readN(n int) map[uint64]*protocol.Response {
	c.t.Helper()
	got := make(map[uint64]*protocol.Response, n)
	for range n {
		resp, ok := c.read()
		if !ok {
			c.t.Fatalf("connection closed after %d of %d responses", len(got), n)
		}
		got[resp.ID] = resp
	}
	return got
}

// TestRoundKeepsOneKeysOrder pipelines sets, gets and deletes of one key,
// with requests on other keys among them, to a store that applies writes
// after random delays: within one read round (one write by the client) and
// across rounds, every get must see what the requests read before it left.
func TestRoundKeepsOneKeysOrder(t *testing.T) {
	srv := startRoundServer(t, &asyncStore{maxDelay: 2 * time.Millisecond}, sidecar.Config{})
	c := dialRaw(t, srv.socket)
	c.hello()
	id := uint64(0)
	next := func() uint64 { id++; return id }
	for round := range 20 {
		var reqs []*protocol.Request
		type check struct {
			id    uint64
			found bool
			value string
		}
		var checks []check
		for i := range 8 {
			v := fmt.Sprintf("r%d-%d", round, i)
			reqs = append(reqs, &protocol.Request{ID: next(), Op: protocol.OpSet, Key: "k", Value: []byte(v)})
			reqs = append(reqs, &protocol.Request{ID: next(), Op: protocol.OpSet, Key: "other" + strconv.Itoa(i), Value: []byte(v)})
			reqs = append(reqs, &protocol.Request{ID: next(), Op: protocol.OpGet, Key: "k"})
			checks = append(checks, check{id, true, v})
			if i%3 == 2 {
				reqs = append(reqs, &protocol.Request{ID: next(), Op: protocol.OpDelete, Key: "k"})
				reqs = append(reqs, &protocol.Request{ID: next(), Op: protocol.OpGet, Key: "k"})
				checks = append(checks, check{id, false, ""})
			}
		}
		if round%2 == 0 {
			c.sendAll(reqs) // one round
		} else {
			for _, r := range reqs { // a round each, mostly
				c.send(r)
			}
		}
		got := c.readN(len(reqs))
		for _, ch := range checks {
			r := got[ch.id]
			if r.Err != nil || r.Found != ch.found || string(r.Value) != ch.value {
				t.Fatalf("round %d, get %d: found=%v value=%q err=%v; want found=%v value=%q (the requests before it on the key, in read order)",
					round, ch.id, r.Found, r.Value, r.Err, ch.found, ch.value)
			}
		}
	}
}

// TestRoundAnswersInOneWrite sends 20 gets of different keys in one write
// (fewer than the ~28 that a connection's default byte budget lets in
// flight, each reserving room for the largest value). The store answers
// reads inside Do, so the daemon writes all 20 answers in one write(2),
// counted in the process's write system calls (/proc/self/io): the
// client's one write plus the daemon's.
func TestRoundAnswersInOneWrite(t *testing.T) {
	srv := startRoundServer(t, &asyncStore{}, sidecar.Config{})
	c := dialRaw(t, srv.socket)
	c.hello()
	var sets, reqs []*protocol.Request
	for i := range 20 {
		key := "k" + strconv.Itoa(i)
		sets = append(sets, &protocol.Request{ID: uint64(100 + i), Op: protocol.OpSet, Key: key, Value: []byte("v")})
		reqs = append(reqs, &protocol.Request{ID: uint64(2 + i), Op: protocol.OpGet, Key: key})
	}
	c.sendAll(sets)
	c.readN(len(sets))
	var frame []byte
	for _, r := range reqs {
		f, _ := c.enc.Request(r)
		c.ops[r.ID] = r.Op
		frame = append(frame, f...)
	}
	before := writeCalls(t)
	c.write(frame)
	got := c.readN(len(reqs))
	writes := writeCalls(t) - before
	for _, r := range reqs {
		if g := got[r.ID]; g.Err != nil || string(g.Value) != "v" {
			t.Fatalf("get %d: %+v", r.ID, g)
		}
	}
	if writes > 2 {
		t.Errorf("%d write system calls for one write of 20 gets and their answers; want 2 (one the client's, one the daemon's)", writes)
	}
}

// writeCalls is the number of write system calls the process has made.
func writeCalls(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatal("no syscw in /proc/self/io")
	return 0
}

// TestRoundDeadlineWhileStoreHangs freezes the store: a set and a get
// given to it must be answered unavailable by their deadline, a ping
// still answered, and once the store lets go of them (its late Done)
// every byte they held is given back once: the budgets return to zero,
// and the connection serves as before.
func TestRoundDeadlineWhileStoreHangs(t *testing.T) {
	async := &asyncStore{}
	srv := startRoundServer(t, async, sidecar.Config{MaxInflight: 4})
	c := dialRaw(t, srv.socket)
	c.hello()
	c.call(&protocol.Request{ID: 1, Op: protocol.OpSet, Key: "k", Value: []byte("v")})
	async.freeze()
	start := time.Now()
	c.sendAll([]*protocol.Request{
		{ID: 2, Op: protocol.OpSet, Key: "k", Value: bytes.Repeat([]byte("x"), 1000), Timeout: 200},
		{ID: 3, Op: protocol.OpGet, Key: "j", Timeout: 300},
	})
	got := c.readN(2)
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("answered after %v; want by the requests' deadlines (200 and 300 ms)", elapsed)
	}
	for _, id := range []uint64{2, 3} {
		if r := got[id]; r.Err == nil || r.Err.Code != protocol.CodeUnavailable {
			t.Fatalf("request %d on a hung store: %+v; want unavailable", id, r)
		}
	}
	// The answered requests gave back their slots: more than MaxInflight
	// of them in a row are still answered.
	for i := range 6 {
		id := uint64(10 + i)
		if r := c.call(&protocol.Request{ID: id, Op: protocol.OpGet, Key: "m" + strconv.Itoa(i), Timeout: 50}); r.Err == nil || r.Err.Code != protocol.CodeUnavailable {
			t.Fatalf("get %d on a hung store: %+v; want unavailable", id, r)
		}
	}
	if r := c.call(&protocol.Request{ID: 20, Op: protocol.OpPing}); r.Err != nil {
		t.Fatalf("ping while the store hangs: %v", r.Err)
	}
	held := srv.inflightBytes(t)
	if held <= 0 {
		t.Errorf("in-flight bytes while the store holds the requests: %v; want their reserves still held", held)
	}
	async.thaw()
	waitUntil(t, "the store lets go of the requests", func() bool { return async.opsDone() >= 1+2+6 })
	waitUntil(t, "every byte is given back", func() bool { return srv.inflightBytes(t) == 0 })
	if r := c.call(&protocol.Request{ID: 21, Op: protocol.OpGet, Key: "k"}); r.Err != nil || string(r.Value) != "v" {
		t.Fatalf("get after the store recovered: %+v; want v (the timed-out set was not applied)", r)
	}
	time.Sleep(50 * time.Millisecond)
	if held := srv.inflightBytes(t); held != 0 {
		t.Errorf("in-flight bytes after every answer was written: %v; want 0", held)
	}
}

// inflightBytes is the server's kvsidecar_inflight_bytes.
func (s *roundServer) inflightBytes(t *testing.T) float64 {
	t.Helper()
	families, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "kvsidecar_inflight_bytes" {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no kvsidecar_inflight_bytes")
	return 0
}

// BenchmarkRound runs gets and sets of ~100-byte values through a real
// socket against a server on a Pebble store in a temporary directory, at 1
// and 64 callers on one connection: on the round path (the embedded
// store's own store.Async) and on the goroutine path (the same store with
// its Do hidden). Two clients drive it: the real Go client (client=go),
// and a hand-written one (client=raw) that keeps as many requests in
// flight as there are callers, written from frames encoded once and read
// into one buffer, so that it allocates nothing: with it, allocs/op are the
// daemon's and the store's alone. Beside ns/op and allocs/op it reports
// cpu-µs/op, the process's user and system CPU time over the timed loop
// divided by b.N: client and daemon together, so the difference between
// the two paths, or two builds, with one client is the daemon's.
func BenchmarkRound(b *testing.B) {
	value := []byte(`{"name":"John Smith","email":"john.smith@example.com","roles":["admin","editor"],"seen":1712345678}`)
	for _, path := range []string{"round", "goroutine"} {
		b.Run("path="+path, func(b *testing.B) {
			// The goroutine path: the same store without its Do.
			wrap := func(st store.Store) store.Store { return struct{ store.Store }{st} }
			if path == "round" {
				wrap = func(st store.Store) store.Store { return st }
			}
			srv := startWrappedServer(b, wrap, nil, sidecar.Config{})
			c, err := client.Dial(context.Background(), srv.socket)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close() })
			keys := make([]string, 1000)
			items := make([]client.Item, len(keys))
			for i := range keys {
				keys[i] = fmt.Sprint("user:", i)
				items[i] = client.Item{Key: keys[i], Value: json.RawMessage(value)}
			}
			if err := c.SetMany(context.Background(), items); err != nil {
				b.Fatal(err)
			}
			ops := []struct {
				name string
				op   func(ctx context.Context, i int) error
				req  func(i int) *protocol.Request
			}{
				{"get", func(ctx context.Context, i int) error {
					_, found, err := c.GetBytes(ctx, keys[i%len(keys)])
					if err == nil && !found {
						err = fmt.Errorf("key %s not found", keys[i%len(keys)])
					}
					return err
				}, func(i int) *protocol.Request {
					return &protocol.Request{Op: protocol.OpGet, Key: keys[i]}
				}},
				{"set", func(ctx context.Context, i int) error { return c.SetBytes(ctx, keys[i%len(keys)], value, 0) },
					func(i int) *protocol.Request {
						return &protocol.Request{Op: protocol.OpSet, Key: keys[i], Value: value}
					}},
			}
			for _, op := range ops {
				for _, callers := range []int{1, 64} {
					b.Run(fmt.Sprintf("%s/callers=%d/client=go", op.name, callers), func(b *testing.B) {
						benchCallers(b, callers, op.op)
					})
					b.Run(fmt.Sprintf("%s/callers=%d/client=raw", op.name, callers), func(b *testing.B) {
						benchRaw(b, srv.socket, callers, len(keys), op.req)
					})
				}
			}
		})
	}
}

// benchRaw sends b.N requests over one connection of its own, keeping up
// to callers in flight, and reads their answers: the requests cycle over n
// frames, req(i) for i < n, each encoded once with an id of its own. What
// it writes is flushed whenever the window is full; each answer is read
// into one reused buffer and checked to be an answer, not an error (every
// answer's id, and every 1024th decoded whole), so the loop allocates
// nothing of its own.
func benchRaw(b *testing.B, socket string, callers, n int, req func(i int) *protocol.Request) {
	r := dialRaw(b, socket)
	r.hello()
	r.nc.SetDeadline(time.Time{})
	frames := make([][]byte, n)
	for i := range frames {
		q := req(i)
		q.ID = uint64(i + 1)
		f, err := r.enc.Request(q)
		if err != nil {
			b.Fatal(err)
		}
		frames[i] = bytes.Clone(f)
		r.ops[q.ID] = q.Op
	}
	window := make(chan struct{}, callers)
	bw := bufio.NewWriterSize(r.nc, 32<<10)
	b.ReportAllocs()
	b.ResetTimer()
	start := processCPU(b)
	wrote := make(chan error, 1)
	go func() {
		for i := range b.N {
			select {
			case window <- struct{}{}:
			default:
				if err := bw.Flush(); err != nil {
					wrote <- err
					return
				}
				window <- struct{}{}
			}
			bw.Write(frames[i%n])
		}
		wrote <- bw.Flush()
	}()
	var buf []byte
	dec := protocol.NewDecoder()
	var resp protocol.Response
	for i := range b.N {
		payload, err := protocol.ReadFrame(r.br, 64<<20, buf)
		if err != nil {
			b.Fatalf("answer %d of %d: %v", i, b.N, err)
		}
		buf = payload
		id, err := dec.ResponseID(payload)
		if err != nil || id == 0 || id > uint64(n) {
			b.Fatalf("answer %d: id %d, %v: not an answer to a request sent", i, id, err)
		}
		if i%1024 == 0 {
			resp = protocol.Response{Op: r.ops[id]}
			if err := dec.DecodeResponse(payload, &resp); err != nil || resp.Err != nil {
				b.Fatalf("answer %d: %+v, %v", i, resp, err)
			}
		}
		<-window
	}
	if err := <-wrote; err != nil {
		b.Fatal(err)
	}
	cpu := processCPU(b) - start
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
}

// benchCallers runs op from callers goroutines and reports the process's
// CPU time per op.
func benchCallers(b *testing.B, callers int, op func(ctx context.Context, i int) error) {
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := processCPU(b)
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for {
				i := int(n.Add(1))
				if i > b.N {
					return
				}
				if err := op(ctx, i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	cpu := processCPU(b) - start
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
}

// processCPU is the process's user and system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
