package sidecar_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
	"github.com/kvsidecar/kvsidecar/store"
)

// rawCall sends m as a frame and returns the response as a generic map, or
// nil when the connection was closed instead.
func (c *rawConn) rawCall(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	c.write(frameOf(t, m))
	payload, err := protocol.ReadFrame(c.br, 64<<20, nil)
	if err != nil {
		return nil
	}
	var resp map[string]any
	if err := msgpack.Unmarshal(payload, &resp); err != nil {
		t.Fatalf("decode response: %v", err)
	}
	return resp
}

// wantError fails unless resp is an error of code whose message contains
// every part.
func wantError(t *testing.T, what string, resp map[string]any, code protocol.Code, parts ...string) {
	t.Helper()
	e, _ := resp["error"].(map[string]any)
	if e == nil || e["code"] != string(code) {
		t.Fatalf("%s: %v, want error %s", what, resp, code)
	}
	for _, p := range parts {
		if msg, _ := e["message"].(string); !strings.Contains(msg, p) {
			t.Fatalf("%s: message %q, want it to contain %q", what, msg, p)
		}
	}
}

func wantResult(t *testing.T, what string, resp map[string]any) any {
	t.Helper()
	if resp == nil || resp["error"] != nil {
		t.Fatalf("%s: %v, want a result", what, resp)
	}
	return resp["result"]
}

// TestIntegersAreRangeChecked: an integer field outside its range is a
// bad_request naming the field, never a wrapped value (PROTOCOL.md §5).
func TestIntegersAreRangeChecked(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c := dialRaw(t, d.Socket)
	c.hello()
	cases := []struct {
		name  string
		req   map[string]any
		parts []string
	}{
		{"delta 2^64-1", map[string]any{"id": 1, "op": "incr", "key": "n", "delta": uint64(math.MaxUint64)}, []string{`"delta"`, "out of range"}},
		{"ttl 2^63+500", map[string]any{"id": 2, "op": "set", "key": "k", "value": []byte("1"), "ttl": uint64(1<<63 + 500)}, []string{`"ttl"`, "out of range"}},
		{"ttl 2^63-1", map[string]any{"id": 3, "op": "set", "key": "k", "value": []byte("1"), "ttl": int64(math.MaxInt64)}, []string{"ttl", "too large", "9223372036854 ms"}},
		{"limit 2^64-1", map[string]any{"id": 4, "op": "list", "limit": uint64(math.MaxUint64)}, []string{`"limit"`, "out of range"}},
		{"negative timeout", map[string]any{"id": 5, "op": "ping", "timeout": -1}, []string{"timeout -1 ms is negative"}},
		{"expire ttl 2^63", map[string]any{"id": 6, "op": "expire", "key": "k", "ttl": uint64(1 << 63)}, []string{`"ttl"`, "out of range"}},
		{"if_version negative", map[string]any{"id": 7, "op": "set", "key": "k", "value": []byte("1"), "if_version": -1}, []string{`"if_version"`}},
	}
	for _, tc := range cases {
		wantError(t, tc.name, c.rawCall(t, tc.req), protocol.CodeBadRequest, tc.parts...)
	}
	// Nothing was written by the refused requests, and the connection works.
	if r := wantResult(t, "get n", c.rawCall(t, map[string]any{"id": 9, "op": "get", "key": "n"})); r != nil {
		t.Fatalf("the refused incr wrote %v", r)
	}
	// The largest TTL is accepted.
	wantResult(t, "set with the largest ttl", c.rawCall(t, map[string]any{"id": 10, "op": "set", "key": "k", "value": []byte("1"), "ttl": int64(9223372036854)}))
}

// TestRequestIDRule: after the hello, a request without a positive integer
// id is answered with an id-0 bad_request and the connection is closed, as
// every id-0 error after the hello (PROTOCOL.md §4, §6).
func TestRequestIDRule(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	for _, tc := range []struct {
		name string
		req  map[string]any
	}{
		{"string id", map[string]any{"id": "seven", "op": "ping"}},
		{"negative id", map[string]any{"id": -3, "op": "ping"}},
		{"missing id", map[string]any{"op": "ping"}},
		{"id 0", map[string]any{"id": 0, "op": "ping"}},
		{"string id and a bad field", map[string]any{"id": "x", "op": "get", "key": 12}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, d.Socket)
			c.hello()
			resp := c.rawCall(t, tc.req)
			wantError(t, tc.name, resp, protocol.CodeBadRequest, "positive integer")
			if id := fmt.Sprint(resp["id"]); id != "0" {
				t.Fatalf("the error carries id %s, want 0", id)
			}
			c.expectClosed()
		})
	}
	t.Run("hello with a non-zero id", func(t *testing.T) {
		c := dialRaw(t, d.Socket)
		resp := c.call(&protocol.Request{ID: 42, Op: protocol.OpHello, Version: protocol.Version})
		if resp.ID != 42 || resp.Err != nil || resp.Hello.Project != "test" {
			t.Fatalf("hello with id 42 = %+v, want its answer with id 42", resp)
		}
		if r := c.call(&protocol.Request{ID: 1, Op: protocol.OpPing}); r.Err != nil {
			t.Fatal(r.Err)
		}
	})
}

// TestFieldRules: fields a request does not need are ignored, but a field
// the protocol defines must have its type wherever it appears; text is str,
// bytes are bin; nil is absent; a request needs an op (PROTOCOL.md §2, §5).
func TestFieldRules(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c := dialRaw(t, d.Socket)
	c.hello()
	wantError(t, "ping with a key of the wrong type", c.rawCall(t, map[string]any{"id": 1, "op": "ping", "key": 12}), protocol.CodeBadRequest, `"key"`)
	wantResult(t, "ping with an unknown field", c.rawCall(t, map[string]any{"id": 2, "op": "ping", "frobnicate": 12}))
	wantResult(t, "get with a list field it does not use", c.rawCall(t, map[string]any{"id": 3, "op": "get", "key": "k", "limit": 5, "values": true}))
	wantError(t, "key given as bin", c.rawCall(t, map[string]any{"id": 4, "op": "get", "key": []byte("k")}), protocol.CodeBadRequest, `"key"`, "want a str, got a bin")
	wantError(t, "value given as str", c.rawCall(t, map[string]any{"id": 5, "op": "set", "key": "k", "value": "v"}), protocol.CodeBadRequest, `"value"`, "want a bin")
	wantError(t, "nil key is an absent key", c.rawCall(t, map[string]any{"id": 6, "op": "get", "key": nil}), protocol.CodeBadRequest, "key is empty")
	wantResult(t, "set with a nil ttl", c.rawCall(t, map[string]any{"id": 7, "op": "set", "key": "k", "value": []byte("v"), "ttl": nil}))
	if r := wantResult(t, "ttl of k", c.rawCall(t, map[string]any{"id": 8, "op": "ttl", "key": "k"})); fmt.Sprint(r) != "0" {
		t.Fatalf("a nil ttl gave the key a TTL: %v", r)
	}
	wantResult(t, "set with a nil if_version is unconditional", c.rawCall(t, map[string]any{"id": 9, "op": "set", "key": "k", "value": []byte("w"), "if_version": nil}))
	wantError(t, "missing op", c.rawCall(t, map[string]any{"id": 10, "key": "k"}), protocol.CodeBadRequest, "no op")
	wantError(t, "nil op", c.rawCall(t, map[string]any{"id": 11, "op": nil}), protocol.CodeBadRequest, "no op")
	wantError(t, "second hello", c.rawCall(t, map[string]any{"id": 12, "op": "hello", "version": 2}), protocol.CodeBadRequest, "hello may be sent only once")
	wantResult(t, "the connection still works", c.rawCall(t, map[string]any{"id": 13, "op": "ping"}))
}

// TestListEdges: a last page exactly limit long ends with a nil cursor; a
// cursor is a key, so one never issued resumes after it; a limit above
// max_batch is taken as max_batch (PROTOCOL.md §5.2).
func TestListEdges(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c := dialRaw(t, d.Socket)
	h := c.hello()
	id := uint64(0)
	call := func(req protocol.Request) *protocol.Response {
		t.Helper()
		id++
		req.ID = id
		r := c.call(&req)
		if r.Err != nil {
			t.Fatalf("%s: %v", req.Op, r.Err)
		}
		return r
	}
	items := make([]protocol.Item, 0, store.MaxBatchItems)
	for i := range store.MaxBatchItems {
		items = append(items, protocol.Item{Key: fmt.Sprintf("k%04d", i), Value: []byte("1")})
	}
	call(protocol.Request{Op: protocol.OpSetMany, Items: items})
	call(protocol.Request{Op: protocol.OpSet, Key: "k9999", Value: []byte("1")}) // max_batch + 1 keys

	page := call(protocol.Request{Op: protocol.OpList, Prefix: "k000", Limit: 10}).List
	if len(page.Keys) != 10 || page.Cursor != "" {
		t.Fatalf("a last page exactly limit long: %d keys, cursor %q; want 10 keys and no cursor", len(page.Keys), page.Cursor)
	}
	page = call(protocol.Request{Op: protocol.OpList, Prefix: "k", Cursor: "k0997x", Limit: 2}).List
	if strings.Join(page.Keys, ",") != "k0998,k0999" || page.Cursor == "" {
		t.Fatalf("list after a cursor never issued: %v cursor %q, want k0998,k0999 and more", page.Keys, page.Cursor)
	}
	page = call(protocol.Request{Op: protocol.OpList, Limit: 5000}).List
	if int64(len(page.Keys)) != h.Limits.MaxBatch || page.Cursor == "" {
		t.Fatalf("limit 5000: %d keys (cursor %q), want max_batch = %d and a cursor", len(page.Keys), page.Cursor, h.Limits.MaxBatch)
	}
	if page = call(protocol.Request{Op: protocol.OpList}).List; len(page.Keys) != 100 {
		t.Fatalf("no limit: %d keys, want the default 100", len(page.Keys))
	}
}

// TestIncrIntegerText pins what incr accepts as a stored integer: JSON's
// integer grammar within the signed 64-bit range (PROTOCOL.md §5.2).
func TestIncrIntegerText(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c := dialRaw(t, d.Socket)
	c.hello()
	id := uint64(0)
	for _, tc := range []struct {
		stored string
		want   int64         // when code is ""
		code   protocol.Code // the refusal
	}{
		{stored: "41", want: 42},
		{stored: "-0", want: 1},
		{stored: "-7", want: -6},
		{stored: "9223372036854775806", want: math.MaxInt64},
		{stored: "9223372036854775807", code: protocol.CodeOverflow},
		{stored: "9223372036854775808", code: protocol.CodeNotInteger},
		{stored: "007", code: protocol.CodeNotInteger},
		{stored: "+1", code: protocol.CodeNotInteger},
		{stored: " 1", code: protocol.CodeNotInteger},
		{stored: "1.0", code: protocol.CodeNotInteger},
		{stored: "1e3", code: protocol.CodeNotInteger},
		{stored: `"1"`, code: protocol.CodeNotInteger},
		{stored: "", code: protocol.CodeNotInteger},
	} {
		id += 2
		if r := c.call(&protocol.Request{ID: id, Op: protocol.OpSet, Key: "n", Value: []byte(tc.stored)}); r.Err != nil {
			t.Fatal(r.Err)
		}
		r := c.call(&protocol.Request{ID: id + 1, Op: protocol.OpIncr, Key: "n", Delta: 1})
		switch {
		case tc.code == "" && (r.Err != nil || r.Int != tc.want):
			t.Errorf("incr of %q = (%d, %v), want %d", tc.stored, r.Int, r.Err, tc.want)
		case tc.code != "" && (r.Err == nil || r.Err.Code != tc.code):
			t.Errorf("incr of %q = (%d, %v), want %s", tc.stored, r.Int, r.Err, tc.code)
		}
	}
}
