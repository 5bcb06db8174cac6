package sidecar_test

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
	"github.com/kvsidecar/kvsidecar/store"
)

func frameOf(t *testing.T, v any) []byte {
	t.Helper()
	payload, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return protocol.AppendFrame(nil, payload)
}

// TestBadFramesCloseOnlyTheirConnection sends what a broken or hostile peer
// could send. Each gets an error frame naming the problem and its
// connection is closed, while another connection keeps being served.
func TestBadFramesCloseOnlyTheirConnection(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	bystander := dialRaw(t, d.Socket)
	bystander.hello()

	cases := []struct {
		name     string
		send     []byte
		halfOpen bool // close the write side after sending
		code     protocol.Code
		msg      string
	}{
		{"garbage bytes", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, protocol.CodeFrameTooLarge, "frame too large"},
		{"4 GiB length prefix", []byte{0xff, 0xff, 0xff, 0xff}, false, protocol.CodeFrameTooLarge, "4294967295 bytes"},
		{"truncated frame", []byte{0, 0, 0, 100, 0x82, 0xa2}, true, protocol.CodeBadFrame, "truncated"},
		{"payload not msgpack", protocol.AppendFrame(nil, []byte{0xc1, 0xc1, 0xc1}), false, protocol.CodeBadFrame, "malformed"},
		{"payload not a map", frameOf(t, []int{1, 2, 3}), false, protocol.CodeBadFrame, "expected a map"},
		{"empty frame", []byte{0, 0, 0, 0}, false, protocol.CodeBadFrame, "empty frame"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, d.Socket)
			c.hello()
			c.write(tc.send)
			if tc.halfOpen {
				c.nc.(interface{ CloseWrite() error }).CloseWrite()
			}
			resp, ok := c.read()
			if !ok {
				t.Fatal("connection closed without an error frame")
			}
			if resp.Err == nil || resp.Err.Code != tc.code || !strings.Contains(resp.Err.Message, tc.msg) {
				t.Fatalf("got %+v, want code %s with %q", resp.Err, tc.code, tc.msg)
			}
			c.expectClosed()

			// The daemon still serves everyone else.
			key := "alive"
			r := bystander.call(&protocol.Request{ID: uint64(100 + i), Op: protocol.OpIncr, Key: key, Delta: 1})
			if r.Err != nil || r.Int != int64(i+1) {
				t.Fatalf("bystander incr after %s: %+v %v", tc.name, r, r.Err)
			}
		})
	}
}

// TestBadRequestsKeepTheConnection sends well-formed requests with bad
// arguments: each gets an error naming the problem, and the same
// connection goes on working.
func TestBadRequestsKeepTheConnection(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{Limits: store.Limits{MaxKeyBytes: 16, MaxValueBytes: 64}})
	c := dialRaw(t, d.Socket)
	h := c.hello()
	if h.Limits.MaxKey != 16 || h.Limits.MaxValue != 64 {
		t.Fatalf("hello limits %+v", h.Limits)
	}
	cases := []struct {
		name string
		req  *protocol.Request
		raw  map[string]any // sent instead of req when set
		code protocol.Code
		msg  string
	}{
		{name: "unknown op", raw: map[string]any{"id": 1, "op": "frobnicate"}, code: protocol.CodeUnknownOp, msg: `unknown op "frobnicate"`},
		{name: "empty key", req: &protocol.Request{ID: 2, Op: protocol.OpGet}, code: protocol.CodeBadRequest, msg: "key is empty"},
		{name: "oversized key", req: &protocol.Request{ID: 3, Op: protocol.OpSet, Key: strings.Repeat("k", 17), Value: []byte("1")}, code: protocol.CodeKeyTooLarge, msg: "key is 17 bytes, the limit is 16 bytes"},
		{name: "oversized value", req: &protocol.Request{ID: 4, Op: protocol.OpSet, Key: "k", Value: bytes.Repeat([]byte("v"), 65)}, code: protocol.CodeValueTooLarge, msg: "value is 65 bytes, the limit is 64 bytes"},
		{name: "negative ttl", req: &protocol.Request{ID: 5, Op: protocol.OpSet, Key: "k", Value: []byte("1"), TTL: -5}, code: protocol.CodeBadRequest, msg: "ttl is negative"},
		{name: "key of wrong type", raw: map[string]any{"id": 6, "op": "get", "key": 42}, code: protocol.CodeBadRequest, msg: `field "key"`},
		{name: "invalid utf-8 key", raw: map[string]any{"id": 7, "op": "get", "key": "\xff\xfe"}, code: protocol.CodeBadRequest, msg: "not valid UTF-8"},
		{name: "negative list limit", req: &protocol.Request{ID: 8, Op: protocol.OpList, Limit: -1}, code: protocol.CodeBadRequest, msg: "limit -1 is negative"},
		{name: "second hello", req: &protocol.Request{ID: 9, Op: protocol.OpHello, Version: 1}, code: protocol.CodeBadRequest, msg: "hello may be sent only once"},
		{name: "incr of a non-integer", req: &protocol.Request{ID: 10, Op: protocol.OpIncr, Key: "text", Delta: 1}, code: protocol.CodeNotInteger, msg: "not an integer"},
		{name: "too many keys", req: &protocol.Request{ID: 11, Op: protocol.OpGetMany, Keys: make([]string, store.MaxBatchItems+1)}, code: protocol.CodeBadRequest, msg: "too many"},
	}
	if r := c.call(&protocol.Request{ID: 99, Op: protocol.OpSet, Key: "text", Value: []byte(`"abc"`)}); r.Err != nil {
		t.Fatal(r.Err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var resp *protocol.Response
			if tc.raw != nil {
				c.write(frameOf(t, tc.raw))
				var ok bool
				if resp, ok = c.read(); !ok {
					t.Fatal("connection closed")
				}
			} else {
				resp = c.call(tc.req)
			}
			if resp.Err == nil || resp.Err.Code != tc.code || !strings.Contains(resp.Err.Message, tc.msg) {
				t.Fatalf("got %+v, want code %s with %q", resp.Err, tc.code, tc.msg)
			}
			// The connection is still usable.
			if r := c.call(&protocol.Request{ID: 1000, Op: protocol.OpPing}); r.Err != nil {
				t.Fatalf("ping after %s: %v", tc.name, r.Err)
			}
		})
	}
}

func TestHandshake(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{Project: "shop"})
	t.Run("request before hello", func(t *testing.T) {
		c := dialRaw(t, d.Socket)
		resp := c.call(&protocol.Request{ID: 5, Op: protocol.OpGet, Key: "k"})
		if resp.Err == nil || resp.Err.Code != protocol.CodeBadRequest || !strings.Contains(resp.Err.Message, "first request must be hello") {
			t.Fatalf("got %+v", resp.Err)
		}
		c.expectClosed()
	})
	t.Run("unsupported version", func(t *testing.T) {
		c := dialRaw(t, d.Socket)
		resp := c.call(&protocol.Request{ID: 0, Op: protocol.OpHello, Version: 0})
		if resp.Err == nil || resp.Err.Code != protocol.CodeUnsupportedVersion {
			t.Fatalf("got %+v", resp.Err)
		}
		c.expectClosed()
	})
	t.Run("newer client gets our version", func(t *testing.T) {
		c := dialRaw(t, d.Socket)
		resp := c.call(&protocol.Request{ID: 0, Op: protocol.OpHello, Version: 7})
		if resp.Err != nil || resp.Hello.Version != protocol.Version || resp.Hello.Project != "shop" {
			t.Fatalf("got %+v", resp)
		}
	})
	t.Run("pipelined after hello", func(t *testing.T) {
		c := dialRaw(t, d.Socket)
		var buf []byte
		enc := protocol.NewEncoder()
		for i, req := range []*protocol.Request{
			{ID: 0, Op: protocol.OpHello, Version: 1},
			{ID: 1, Op: protocol.OpSet, Key: "p", Value: []byte("1")},
			{ID: 2, Op: protocol.OpGet, Key: "p"},
		} {
			f, _ := enc.Request(req)
			buf = append(buf, f...)
			c.ops[uint64(i)] = req.Op
		}
		c.write(buf)
		got := map[uint64]*protocol.Response{}
		for range 3 {
			r, ok := c.read()
			if !ok {
				t.Fatal("closed")
			}
			got[r.ID] = r
		}
		if got[2].Err != nil || string(got[2].Value) != "1" {
			t.Fatalf("get after pipelined set: %+v", got[2])
		}
	})
}

// TestFrameLimitAnnounced checks that a frame just over the announced
// max_frame is refused while one at the limit is read.
func TestFrameLimitAnnounced(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c := dialRaw(t, d.Socket)
	h := c.hello()
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(h.Limits.MaxFrame+1))
	c.write(hdr[:])
	resp, ok := c.read()
	if !ok || resp.Err == nil || resp.Err.Code != protocol.CodeFrameTooLarge {
		t.Fatalf("got %+v", resp)
	}
}

// TestHugeBatchIsRefusedBeforeAllocation sends a setMany whose items array
// fills a max_frame frame with one-byte items. It is answered bad_request
// without the daemon first allocating tens of bytes per wire byte (each
// decoded item is 48 bytes), which would let the in-flight byte budget
// pin many times its size.
func TestHugeBatchIsRefusedBeforeAllocation(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c := dialRaw(t, d.Socket)
	h := c.hello()
	var payload []byte
	payload = append(payload, 0x83, 0xa2, 'i', 'd', 0x07, 0xa2, 'o', 'p')
	payload = append(payload, 0xa7, 's', 'e', 't', 'M', 'a', 'n', 'y', 0xa5, 'i', 't', 'e', 'm', 's', 0xdd)
	n := int(h.Limits.MaxFrame) - len(payload) - 4
	payload = binary.BigEndian.AppendUint32(payload, uint32(n))
	payload = append(payload, bytes.Repeat([]byte{0x80}, n)...)
	frame := protocol.AppendFrame(nil, payload)
	c.ops[7] = protocol.OpSetMany

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c.write(frame)
	resp, ok := c.read()
	runtime.ReadMemStats(&after)
	if !ok || resp.Err == nil || resp.Err.Code != protocol.CodeBadRequest || !strings.Contains(resp.Err.Message, "too many items") {
		t.Fatalf("got %+v (open %v), want bad_request naming too many items", resp, ok)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 8*uint64(len(frame)) {
		t.Fatalf("a %d-byte frame made the daemon allocate %d bytes", len(frame), got)
	}
	if r := c.call(&protocol.Request{ID: 8, Op: protocol.OpPing}); r.Err != nil {
		t.Fatalf("ping after the refused batch: %v", r.Err)
	}
}
