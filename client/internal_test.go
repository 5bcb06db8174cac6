package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/protocol"
)

// peer is a scripted daemon for what a real one cannot be made to do on
// cue: hold a response back, or answer after the caller gave up. It answers
// the hello and hands every later request to the test.
type peer struct {
	t      *testing.T
	socket string
	reqs   chan *protocol.Request
	conns  chan net.Conn
}

func startPeer(t *testing.T) *peer {
	t.Helper()
	dir, err := os.MkdirTemp("", "kvpeer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &peer{t: t, socket: filepath.Join(dir, "kv.sock"), reqs: make(chan *protocol.Request, 16), conns: make(chan net.Conn, 1)}
	ln, err := net.Listen("unix", p.socket)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		p.conns <- nc
		p.serve(nc)
	}()
	return p
}

func (p *peer) serve(nc net.Conn) {
	br := bufio.NewReader(nc)
	dec := protocol.NewDecoder()
	for first := true; ; first = false {
		payload, err := protocol.ReadFrame(br, 1<<20, nil)
		if err != nil {
			return
		}
		req := &protocol.Request{}
		if err := dec.DecodeRequest(payload, req); err != nil {
			p.t.Errorf("peer: %v", err)
			return
		}
		if first {
			p.respond(nc, &protocol.Response{ID: req.ID, Op: protocol.OpHello, Hello: protocol.HelloResult{
				Version: protocol.Version, Server: "peer", Project: "p",
				Limits: protocol.Limits{MaxKey: 1024, MaxValue: 1 << 20, MaxFrame: 2 << 20, MaxInflight: 128, MaxBatch: 1000},
			}})
			continue
		}
		p.reqs <- req
	}
}

func (p *peer) respond(nc net.Conn, resp *protocol.Response) {
	frame, err := protocol.NewEncoder().Response(resp)
	if err == nil {
		_, err = nc.Write(frame)
	}
	if err != nil {
		p.t.Errorf("peer: respond: %v", err)
	}
}

func (p *peer) next() *protocol.Request {
	p.t.Helper()
	select {
	case req := <-p.reqs:
		return req
	case <-time.After(5 * time.Second):
		p.t.Fatal("peer: no request arrived")
		return nil
	}
}

func pendingCount(c *Client) int {
	cn := c.slots[0].cur.Load()
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return len(cn.pending)
}

func TestDeadlineWhileWaiting(t *testing.T) {
	p := startPeer(t)
	c, err := Dial(t.Context(), p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc := <-p.conns

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() { _, _, err := c.GetBytes(ctx, "slow"); errc <- err }()
	held := p.next() // the daemon has the request and does not answer
	select {
	case err := <-errc:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call outlived its deadline")
	}
	if n := pendingCount(c); n != 0 {
		t.Fatalf("%d calls still pending after the caller gave up", n)
	}

	// The late response is dropped; the next call gets its own answer.
	p.respond(nc, &protocol.Response{ID: held.ID, Op: protocol.OpGet, Found: true, Value: []byte(`"late"`)})
	go func() { _, _, err := c.GetBytes(t.Context(), "next"); errc <- err }()
	req := p.next()
	if req.Key != "next" || req.ID == held.ID {
		t.Fatalf("second request: %+v", req)
	}
	p.respond(nc, &protocol.Response{ID: req.ID, Op: protocol.OpGet})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestCloseFailsCallsInFlight(t *testing.T) {
	p := startPeer(t)
	c, err := Dial(t.Context(), p.socket)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.SetBytes(t.Context(), "k", []byte("1"), 0) }()
	p.next()
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("call in flight at Close: %v, want ErrClosed", err)
	}
}

func TestConnectionLostInFlight(t *testing.T) {
	p := startPeer(t)
	c, err := Dial(t.Context(), p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc := <-p.conns
	errc := make(chan error, 1)
	go func() { errc <- c.SetBytes(t.Context(), "k", []byte("1"), 0) }()
	p.next()
	nc.Close()
	err = <-errc
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "outcome") {
		t.Fatalf("call in flight when the connection broke: %v, want ErrUnavailable saying the outcome is unknown", err)
	}
}

func TestErrorSentinelsMatchResponses(t *testing.T) {
	sentinels := map[protocol.Code]error{
		protocol.CodeBadFrame: ErrBadFrame, protocol.CodeFrameTooLarge: ErrFrameTooLarge,
		protocol.CodeUnsupportedVersion: ErrUnsupportedVersion, protocol.CodeForbidden: ErrForbidden,
		protocol.CodeBadRequest: ErrBadRequest, protocol.CodeUnknownOp: ErrUnknownOp,
		protocol.CodeKeyTooLarge: ErrKeyTooLarge, protocol.CodeValueTooLarge: ErrValueTooLarge,
		protocol.CodeQuotaExceeded: ErrQuotaExceeded, protocol.CodeNotInteger: ErrNotInteger,
		protocol.CodeOverflow: ErrOverflow, protocol.CodeUnavailable: ErrUnavailable,
		protocol.CodeBusy: ErrBusy, protocol.CodeInternal: ErrInternal,
		protocol.CodeResponseTooLarge: ErrResponseTooLarge, protocol.CodeConflict: ErrConflict,
	}
	for _, code := range protocol.Codes {
		if _, ok := sentinels[code]; !ok {
			t.Errorf("no sentinel for code %s", code)
			continue
		}
		resp := opError(protocol.OpSet, "k", protocol.NewError(code, "from the daemon"))
		for other, s := range sentinels {
			if got := errors.Is(resp, s); got != (other == code) {
				t.Errorf("errors.Is(%s response, sentinel of %s) = %v", code, other, got)
			}
		}
		if !strings.Contains(resp.Error(), "from the daemon") {
			t.Errorf("%s: message %q lost the daemon's text", code, resp)
		}
	}
	lost := lostError("/s", protocol.NewError(protocol.CodeBadFrame, "garbage"))
	if !errors.Is(lost, ErrUnavailable) || !errors.Is(lost, ErrBadFrame) {
		t.Errorf("a lost connection's error %q should match ErrUnavailable and its cause", lost)
	}
	if errors.Is(ErrClosed, ErrUnavailable) {
		t.Error("ErrClosed matches ErrUnavailable")
	}
}

func TestTTLMillis(t *testing.T) {
	cases := []struct {
		ttl  time.Duration
		want int64
	}{
		{0, 0},
		{time.Nanosecond, 1},
		{time.Millisecond, 1},
		{time.Millisecond + 1, 2},
		{1500 * time.Microsecond, 2},
		{time.Hour, 3600000},
	}
	for _, tc := range cases {
		got, err := ttlMillis(tc.ttl)
		if err != nil || got != tc.want {
			t.Errorf("ttlMillis(%v) = %d, %v; want %d", tc.ttl, got, err, tc.want)
		}
	}
	if _, err := ttlMillis(-time.Millisecond); !errors.Is(err, ErrBadRequest) {
		t.Errorf("negative ttl: %v, want ErrBadRequest", err)
	}
}

func TestDefaultSocket(t *testing.T) {
	t.Setenv(SocketEnv, "")
	_, err := Dial(t.Context(), "")
	if err == nil || !strings.Contains(err.Error(), DefaultSocket) {
		// Only a machine running the daemon at the default path gets nil.
		if _, statErr := os.Stat(DefaultSocket); statErr != nil {
			t.Fatalf("Dial(\"\") without $%s: %v, want an error naming %s", SocketEnv, err, DefaultSocket)
		}
	}
}

func TestJSONBufferKeepsHTML(t *testing.T) {
	jb := getJSONBuffer()
	defer putJSONBuffer(jb)
	b, err := jb.marshal(map[string]string{"h": "<a&b>"})
	if err != nil || string(b) != `{"h":"<a&b>"}` {
		t.Fatalf("marshal = %q, %v", b, err)
	}
}

// BenchmarkEncodeSet measures the client's side of a set up to the write
// queue: JSON-encoding the value, encoding the frame with a pooled encoder
// and queueing it. It should not allocate.
func BenchmarkEncodeSet(b *testing.B) {
	cn := &conn{pending: make(map[uint64]*call), maxFrame: defaultMaxFrame, wake: make(chan struct{}, 1)}
	value := struct {
		Name  string   `json:"name"`
		Email string   `json:"email"`
		Roles []string `json:"roles"`
		Seen  int64    `json:"seen"`
	}{"John Smith", "john.smith@example.com", []string{"admin", "editor"}, 1712345678}
	b.ReportAllocs()
	for b.Loop() {
		jb := getJSONBuffer()
		v, err := jb.marshal(&value)
		if err != nil {
			b.Fatal(err)
		}
		cl := newCall(protocol.OpSet)
		cl.req.Key, cl.req.Value, cl.req.TTL = "user:123", v, 3600000
		if _, _, err := cn.queue(cl); err != nil {
			b.Fatal(err)
		}
		putJSONBuffer(jb)
		// What the write side's holder and the reader would do.
		cn.wbuf, cn.wq, cn.writing = cn.wbuf[:0], cn.wq[:0], false
		delete(cn.pending, cl.req.ID)
		putCall(cl)
	}
}

func TestDialDeadlineWhenHelloUnanswered(t *testing.T) {
	dir, err := os.MkdirTemp("", "kvmute")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "kv.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		// Accept and never answer.
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			defer nc.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Dial(ctx, socket)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Dial took %v with a 50ms deadline", d)
	}
}

// TestResponseFrames reads responses smaller and larger than the read
// buffer, one after the other on the same stream, and checks that a broken
// frame fails the call in flight with a cause that names the problem.
func TestResponseFrames(t *testing.T) {
	t.Run("sizes", func(t *testing.T) {
		p := startPeer(t)
		c, err := Dial(t.Context(), p.socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		nc := <-p.conns
		for _, size := range []int{10, readBufferSize + 1, 3, 3 * readBufferSize, readBufferSize - 64} {
			want := bytes.Repeat([]byte{byte(size)}, size)
			got := make(chan []byte, 1)
			go func() {
				v, _, err := c.GetBytes(t.Context(), "k")
				if err != nil {
					t.Error(err)
				}
				got <- v
			}()
			req := p.next()
			p.respond(nc, &protocol.Response{ID: req.ID, Op: protocol.OpGet, Found: true, Value: want})
			if v := <-got; !bytes.Equal(v, want) {
				t.Fatalf("a %d-byte value came back as %d bytes", size, len(v))
			}
		}
	})
	for _, tc := range []struct {
		name  string
		bytes []byte
		want  string
	}{
		{"cut in the length prefix", []byte{0, 0}, "stream ended inside a length prefix"},
		{"cut in the payload", []byte{0, 0, 0, 100, 0x81}, "stream ended inside a 100-byte frame"},
		{"empty frame", []byte{0, 0, 0, 0}, "empty frame"},
		{"too large", []byte{0xff, 0xff, 0xff, 0xff}, "frame too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startPeer(t)
			c, err := Dial(t.Context(), p.socket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			nc := <-p.conns
			errc := make(chan error, 1)
			go func() { _, _, err := c.GetBytes(t.Context(), "k"); errc <- err }()
			p.next()
			if _, err := nc.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			nc.(*net.UnixConn).CloseWrite()
			err = <-errc
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrUnavailable saying %q", err, tc.want)
			}
		})
	}
}

// A daemon that stops reading fills the socket: the calls queued meanwhile
// wait (a caller's own deadline still ends its wait), and once the daemon
// reads again every request arrives whole, however the writes were cut.
func TestFullSocket(t *testing.T) {
	p := startPeer(t)
	c, err := Dial(t.Context(), p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc := <-p.conns

	// The peer queues 16 requests, then stops reading until the test takes
	// them; 40 values of 200 KB are far more than the socket holds.
	const calls, size = 40, 200 << 10
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, size) }
	errs := make(chan error, calls)
	for i := range calls {
		go func() { errs <- c.SetBytes(t.Context(), fmt.Sprint("k", i), value(i), 0) }()
	}
	time.Sleep(100 * time.Millisecond) // let the socket fill

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ping behind a full socket: %v, want its deadline exceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("ping behind a full socket returned after %v, its deadline was 100ms", d)
	}

	seen := map[string]bool{}
	for len(seen) < calls {
		req := p.next()
		if req.Op == protocol.OpPing {
			continue
		}
		var i int
		if _, err := fmt.Sscanf(req.Key, "k%d", &i); err != nil || seen[req.Key] {
			t.Fatalf("request for key %q: unexpected", req.Key)
		}
		if !bytes.Equal(req.Value, value(i)) {
			t.Fatalf("the value of %s arrived damaged: %d bytes", req.Key, len(req.Value))
		}
		seen[req.Key] = true
		p.respond(nc, &protocol.Response{ID: req.ID, Op: protocol.OpSet})
	}
	for range calls {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// Responses that arrive in one read are handed over together, in order: a
// response before the daemon's closing error is delivered, one after it
// fails with the connection as it always has.
func TestErrorFrameAmidResponses(t *testing.T) {
	p := startPeer(t)
	c, err := Dial(t.Context(), p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc := <-p.conns
	errs := map[string]chan error{"a": make(chan error, 1), "b": make(chan error, 1)}
	ids := map[string]uint64{}
	for key, errc := range errs {
		go func() { _, _, err := c.GetBytes(t.Context(), key); errc <- err }()
		req := p.next()
		ids[req.Key] = req.ID
	}
	enc := protocol.NewEncoder()
	var out []byte
	for _, resp := range []*protocol.Response{
		{ID: ids["a"], Op: protocol.OpGet, Found: true, Value: []byte("1")},
		{ID: 0, Op: protocol.OpGet, Err: protocol.NewError(protocol.CodeBadFrame, "bad frame: test")},
		{ID: ids["b"], Op: protocol.OpGet, Found: true, Value: []byte("2")},
	} {
		frame, err := enc.Response(resp)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, frame...)
	}
	if _, err := nc.Write(out); err != nil {
		t.Fatal(err)
	}
	if err := <-errs["a"]; err != nil {
		t.Fatalf("get a, answered before the error: %v", err)
	}
	if err := <-errs["b"]; !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "bad frame: test") {
		t.Fatalf("get b, answered after the error: %v, want ErrUnavailable with the daemon's error", err)
	}
}

// leading waits until a caller holds the connection's read side: it reads
// the socket itself, as a lone caller does.
func leading(t *testing.T, c *Client) {
	t.Helper()
	cn := c.slots[0].cur.Load()
	for deadline := time.Now().Add(5 * time.Second); !cn.reading.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no caller took the read side")
		}
	}
}

// getResult is what a GetBytes in a goroutine returned.
type getResult struct {
	value []byte
	err   error
}

func goGet(ctx context.Context, c *Client, key string) chan getResult {
	ch := make(chan getResult, 1)
	go func() {
		v, _, err := c.GetBytes(ctx, key)
		ch <- getResult{v, err}
	}()
	return ch
}

func awaitGet(t *testing.T, ch chan getResult, what string) getResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return", what)
		return getResult{}
	}
}

// The caller reading the socket hands over the answers of others it reads,
// and keeps reading until its own comes.
func TestReadingCallerDeliversOthersAnswers(t *testing.T) {
	p := startPeer(t)
	c, err := Dial(t.Context(), p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc := <-p.conns

	a := goGet(t.Context(), c, "a")
	reqA := p.next()
	leading(t, c)
	b, c2 := goGet(t.Context(), c, "b"), goGet(t.Context(), c, "c")
	reqs := map[string]*protocol.Request{}
	for range 2 {
		req := p.next()
		reqs[req.Key] = req
	}
	enc := protocol.NewEncoder()
	var out []byte
	for _, key := range []string{"c", "b"} {
		frame, err := enc.Response(&protocol.Response{ID: reqs[key].ID, Op: protocol.OpGet, Found: true, Value: []byte(key + "!")})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, frame...)
	}
	if _, err := nc.Write(out); err != nil {
		t.Fatal(err)
	}
	for key, ch := range map[string]chan getResult{"b": b, "c": c2} {
		if r := awaitGet(t, ch, "get "+key); r.err != nil || string(r.value) != key+"!" {
			t.Fatalf("get %s = %q, %v; want %q", key, r.value, r.err, key+"!")
		}
	}
	select {
	case r := <-a:
		t.Fatalf("get a returned %q, %v before its answer was sent", r.value, r.err)
	default:
	}
	p.respond(nc, &protocol.Response{ID: reqA.ID, Op: protocol.OpGet, Found: true, Value: []byte("a!")})
	if r := awaitGet(t, a, "get a"); r.err != nil || string(r.value) != "a!" {
		t.Fatalf("get a = %q, %v; want %q", r.value, r.err, "a!")
	}
}

// A caller reading the socket whose context ends returns at once; the calls
// still in flight get their answers all the same, read by the reader
// goroutine, and the late answer of the caller that gave up is dropped.
func TestReadingCallerGivesUp(t *testing.T) {
	for _, how := range []string{"cancel", "deadline"} {
		t.Run(how, func(t *testing.T) {
			p := startPeer(t)
			c, err := Dial(t.Context(), p.socket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			nc := <-p.conns

			ctxA, cancelA := context.WithCancel(t.Context())
			defer cancelA()
			want := context.Canceled
			if how == "deadline" {
				ctxA, cancelA = context.WithTimeout(t.Context(), 100*time.Millisecond)
				defer cancelA()
				want = context.DeadlineExceeded
			}
			a := goGet(ctxA, c, "a")
			reqA := p.next()
			leading(t, c)
			b := goGet(t.Context(), c, "b")
			reqB := p.next()
			if how == "cancel" {
				cancelA()
			}
			if r := awaitGet(t, a, "get a, its context ended,"); !errors.Is(r.err, want) {
				t.Fatalf("get a: %v, want %v", r.err, want)
			}
			p.respond(nc, &protocol.Response{ID: reqB.ID, Op: protocol.OpGet, Found: true, Value: []byte("b!")})
			if r := awaitGet(t, b, "get b"); r.err != nil || string(r.value) != "b!" {
				t.Fatalf("get b = %q, %v; want %q", r.value, r.err, "b!")
			}
			p.respond(nc, &protocol.Response{ID: reqA.ID, Op: protocol.OpGet, Found: true, Value: []byte("late")})
			for _, key := range []string{"c", "d"} { // a lone caller reads again, twice
				ch := goGet(t.Context(), c, key)
				req := p.next()
				p.respond(nc, &protocol.Response{ID: req.ID, Op: protocol.OpGet, Found: true, Value: []byte(key + "!")})
				if r := awaitGet(t, ch, "get "+key); r.err != nil || string(r.value) != key+"!" {
					t.Fatalf("get %s = %q, %v; want %q", key, r.value, r.err, key+"!")
				}
			}
			if n := pendingCount(c); n != 0 {
				t.Fatalf("%d calls still pending", n)
			}
		})
	}
}

// The daemon closing the connection while a caller reads it fails that
// call and every other in flight, with their outcome unknown.
func TestConnectionLostWhileACallerReads(t *testing.T) {
	p := startPeer(t)
	c, err := Dial(t.Context(), p.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nc := <-p.conns
	a := goGet(t.Context(), c, "a")
	p.next()
	leading(t, c)
	b := goGet(t.Context(), c, "b")
	p.next()
	nc.Close()
	for key, ch := range map[string]chan getResult{"a": a, "b": b} {
		if r := awaitGet(t, ch, "get "+key); !errors.Is(r.err, ErrUnavailable) || !strings.Contains(r.err.Error(), "outcome") {
			t.Fatalf("get %s: %v, want ErrUnavailable saying the outcome is unknown", key, r.err)
		}
	}
}
