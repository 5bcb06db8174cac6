package sidecar_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
)

// TestPipelinedWritesToOneKeyApplyInOrder sends many writes to the same
// keys in one burst, without waiting for answers: the daemon runs requests
// concurrently, yet each key ends with the last value sent, incr answers
// count up in send order, and a clear in the middle splits the stream.
func TestPipelinedWritesToOneKeyApplyInOrder(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c := dialRaw(t, d.Socket)
	c.hello()
	enc := protocol.NewEncoder()
	var burst []byte
	add := func(req *protocol.Request) {
		f, err := enc.Request(req)
		if err != nil {
			t.Fatal(err)
		}
		burst = append(burst, f...)
		c.ops[req.ID] = req.Op
	}
	id := uint64(1)
	const n = 200
	for i := 1; i <= n; i++ {
		add(&protocol.Request{ID: id, Op: protocol.OpSet, Key: "last", Value: []byte(strconv.Itoa(i))})
		id++
		add(&protocol.Request{ID: id, Op: protocol.OpIncr, Key: "counter", Delta: 1})
		id++
		add(&protocol.Request{ID: id, Op: protocol.OpSet, Key: "k" + strconv.Itoa(i%7), Value: []byte("x")})
		id++
		if i == n/2 {
			add(&protocol.Request{ID: id, Op: protocol.OpClear})
			id++
		}
	}
	getID := id
	add(&protocol.Request{ID: getID, Op: protocol.OpGet, Key: "last"})
	c.write(burst)

	incrs := map[uint64]int64{}
	var final *protocol.Response
	for range id {
		r, ok := c.read()
		if !ok {
			t.Fatal("connection closed")
		}
		if r.Err != nil {
			t.Fatalf("request %d: %v", r.ID, r.Err)
		}
		if c.ops[r.ID] == protocol.OpIncr {
			incrs[r.ID] = r.Int
		}
		if r.ID == getID {
			final = r
		}
	}
	if string(final.Value) != strconv.Itoa(n) {
		t.Fatalf("last = %s, want %d: writes to one key were reordered", final.Value, n)
	}
	// incr k-th after the clear restarts from 1; before it counts 1..n/2.
	var prevID uint64
	var prev int64
	for i := 1; i <= n; i++ {
		want := int64(i)
		if i > n/2 {
			want = int64(i - n/2)
		}
		// ids of incr: 2, 5, 8, ... (plus one after the clear)
		rid := uint64(3*(i-1) + 2)
		if i > n/2 {
			rid++
		}
		if got := incrs[rid]; got != want {
			t.Fatalf("incr #%d (id %d) = %d, want %d (previous id %d = %d)", i, rid, got, want, prevID, prev)
		}
		prevID, prev = rid, incrs[rid]
	}
}

// TestMaxConnsRefusesCallers checks the connection bound: past it a caller
// is refused at once with busy naming the limit (rather than left waiting
// behind connections that may never close), and once a connection closes
// the next caller is served.
func TestMaxConnsRefusesCallers(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{MaxConns: 1})
	first := dialRaw(t, d.Socket)
	first.hello()

	second := dialRaw(t, d.Socket)
	second.send(&protocol.Request{ID: 0, Op: protocol.OpHello, Version: 1})
	r, ok := second.read()
	if !ok || r.Err == nil || r.Err.Code != protocol.CodeBusy || !strings.Contains(r.Err.Message, "--max-conns") {
		t.Fatalf("second connection while the first is open: %+v (open %v), want busy naming --max-conns", r, ok)
	}
	second.expectClosed()
	first.nc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		third := dialRaw(t, d.Socket)
		r := third.call(&protocol.Request{ID: 0, Op: protocol.OpHello, Version: 1})
		if r.Err == nil && r.Hello.Project == "test" {
			return
		}
		if r.Err == nil || r.Err.Code != protocol.CodeBusy || time.Now().After(deadline) {
			t.Fatalf("connection after the first closed: %+v", r)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestInflightBoundDoesNotStall pipelines far more requests than the
// connection may have in flight: the daemon stops reading ahead, answers,
// reads on, and every request is answered.
func TestInflightBoundDoesNotStall(t *testing.T) {
	for _, inflight := range []int{1, 3} {
		d := sidecartest.Start(t, sidecartest.Options{MaxInflight: inflight})
		c := dialRaw(t, d.Socket)
		if h := c.hello(); h.Limits.MaxInflight != int64(inflight) {
			t.Fatalf("hello announces max_inflight %d, want %d", h.Limits.MaxInflight, inflight)
		}
		enc := protocol.NewEncoder()
		var burst []byte
		const n = 300
		for i := 1; i <= n; i++ {
			req := &protocol.Request{ID: uint64(i), Op: protocol.OpIncr, Key: "n", Delta: 1}
			if i%3 == 0 {
				req = &protocol.Request{ID: uint64(i), Op: protocol.OpGet, Key: "k" + strconv.Itoa(i)}
			}
			f, _ := enc.Request(req)
			burst = append(burst, f...)
			c.ops[req.ID] = req.Op
		}
		go c.nc.Write(burst) // the daemon reads it only as fast as it answers
		var last int64
		for range n {
			r, ok := c.read()
			if !ok || r.Err != nil {
				t.Fatalf("max_inflight %d: response %+v, ok=%v", inflight, r, ok)
			}
			if c.ops[r.ID] == protocol.OpIncr {
				last = max(last, r.Int)
			}
		}
		if last != n-n/3 {
			t.Fatalf("max_inflight %d: counter reached %d, want %d", inflight, last, n-n/3)
		}
	}
}

// TestClearOrdersRequestsWithoutKeys pipelines list and usage around a
// clear: PROTOCOL.md orders clear against every request of its connection,
// so a list sent before a clear sees what was there, and a list or usage
// sent after it never sees what the clear removed.
func TestClearOrdersRequestsWithoutKeys(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c := dialRaw(t, d.Socket)
	c.hello()
	enc := protocol.NewEncoder()
	id := uint64(0)
	for round := 0; round < 20; round++ {
		id++
		if r := c.call(&protocol.Request{ID: id, Op: protocol.OpSet, Key: "a", Value: []byte("1")}); r.Err != nil {
			t.Fatal(r.Err)
		}
		var burst []byte
		add := func(op protocol.Op) uint64 {
			id++
			req := &protocol.Request{ID: id, Op: op}
			f, err := enc.Request(req)
			if err != nil {
				t.Fatal(err)
			}
			burst = append(burst, f...)
			c.ops[id] = op
			return id
		}
		before := add(protocol.OpList)
		add(protocol.OpClear)
		after := add(protocol.OpList)
		usage := add(protocol.OpUsage)
		c.write(burst)
		got := map[uint64]*protocol.Response{}
		for range 4 {
			r, ok := c.read()
			if !ok {
				t.Fatal("connection closed")
			}
			if r.Err != nil {
				t.Fatalf("request %d: %v", r.ID, r.Err)
			}
			got[r.ID] = r
		}
		if keys := got[before].List.Keys; len(keys) != 1 || keys[0] != "a" {
			t.Fatalf("round %d: list sent before clear saw %q, want [a]", round, keys)
		}
		if keys := got[after].List.Keys; len(keys) != 0 {
			t.Fatalf("round %d: list sent after clear saw %q", round, keys)
		}
		if u := got[usage].Usage; u.Entries != 0 {
			t.Fatalf("round %d: usage sent after clear saw %d entries", round, u.Entries)
		}
	}
}
