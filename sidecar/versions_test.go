package sidecar_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
)

// TestVersionsOnTheWire drives versions, conditions, ttl and expire over
// the real socket, as PROTOCOL.md describes them.
func TestVersionsOnTheWire(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c := dialRaw(t, d.Socket)
	if h := c.hello(); h.Version != protocol.Version {
		t.Fatalf("hello: version %d, want %d", h.Version, protocol.Version)
	}
	id := uint64(0)
	call := func(req protocol.Request) *protocol.Response {
		t.Helper()
		id++
		req.ID = id
		return c.call(&req)
	}
	ok := func(what string, r *protocol.Response) *protocol.Response {
		t.Helper()
		if r.Err != nil {
			t.Fatalf("%s: %v", what, r.Err)
		}
		return r
	}
	conflict := func(what string, r *protocol.Response, keys ...string) {
		t.Helper()
		if r.Err == nil || r.Err.Code != protocol.CodeConflict || !slices.Equal(r.Err.Keys, keys) {
			t.Fatalf("%s: %+v, want a conflict on %q", what, r.Err, keys)
		}
		for _, k := range keys {
			if !strings.Contains(r.Err.Message, `"`+k+`"`) {
				t.Fatalf("%s: message %q does not name key %q", what, r.Err.Message, k)
			}
		}
	}

	set := ok("set if absent", call(protocol.Request{Op: protocol.OpSet, Key: "k", Value: []byte("1"), HasIfVersion: true}))
	if set.Version == 0 {
		t.Fatal("set: no version in the response")
	}
	conflict("second set if absent", call(protocol.Request{Op: protocol.OpSet, Key: "k", Value: []byte("2"), HasIfVersion: true}), "k")
	get := ok("get", call(protocol.Request{Op: protocol.OpGet, Key: "k"}))
	if string(get.Value) != "1" || get.Version != set.Version {
		t.Fatalf("get = %q version %d, want \"1\" version %d", get.Value, get.Version, set.Version)
	}
	set2 := ok("set if version", call(protocol.Request{Op: protocol.OpSet, Key: "k", Value: []byte("3"), HasIfVersion: true, IfVersion: set.Version}))
	if set2.Version <= set.Version {
		t.Fatalf("set if version: version %d, want more than %d", set2.Version, set.Version)
	}
	conflict("delete with a stale version", call(protocol.Request{Op: protocol.OpDelete, Key: "k", HasIfVersion: true, IfVersion: set.Version}), "k")

	many := call(protocol.Request{Op: protocol.OpSetMany, Items: []protocol.Item{
		{Key: "a", Value: []byte("a"), HasIfVersion: true},
		{Key: "k", Value: []byte("k"), HasIfVersion: true, IfVersion: set.Version},
		{Key: "b", Value: []byte("b"), HasIfVersion: true, IfVersion: 12345},
	}})
	conflict("setMany with two failing items", many, "k", "b")
	if r := ok("has a", call(protocol.Request{Op: protocol.OpHas, Key: "a"})); r.Found {
		t.Fatal("a refused setMany wrote an item")
	}
	sm := ok("setMany", call(protocol.Request{Op: protocol.OpSetMany, Items: []protocol.Item{
		{Key: "a", Value: []byte("a"), HasIfVersion: true},
		{Key: "k", Value: []byte("k"), HasIfVersion: true, IfVersion: set2.Version},
	}}))
	if len(sm.Versions) != 2 || sm.Versions[0] == 0 || sm.Versions[1] <= set2.Version {
		t.Fatalf("setMany versions %v", sm.Versions)
	}
	gm := ok("getMany", call(protocol.Request{Op: protocol.OpGetMany, Keys: []string{"k", "nope", "a"}}))
	if !slices.Equal(gm.Versions, []uint64{sm.Versions[1], 0, sm.Versions[0]}) {
		t.Fatalf("getMany versions %v, want %v", gm.Versions, []uint64{sm.Versions[1], 0, sm.Versions[0]})
	}
	l := ok("list", call(protocol.Request{Op: protocol.OpList}))
	if !slices.Equal(l.List.Keys, []string{"a", "k"}) || !slices.Equal(l.List.Versions, []uint64{sm.Versions[0], sm.Versions[1]}) {
		t.Fatalf("list = %v %v", l.List.Keys, l.List.Versions)
	}

	// ttl and expire.
	if r := ok("ttl of a key without expiry", call(protocol.Request{Op: protocol.OpTTL, Key: "k"})); !r.Found || r.Int != 0 {
		t.Fatalf("ttl = (%d, found %v), want (0, true)", r.Int, r.Found)
	}
	if r := ok("ttl of a missing key", call(protocol.Request{Op: protocol.OpTTL, Key: "nope"})); r.Found {
		t.Fatalf("ttl of a missing key: found, %d", r.Int)
	}
	ex := ok("expire", call(protocol.Request{Op: protocol.OpExpire, Key: "k", TTL: 60000}))
	if !ex.Bool || ex.Version <= sm.Versions[1] {
		t.Fatalf("expire = (existed %v, version %d)", ex.Bool, ex.Version)
	}
	if r := ok("ttl", call(protocol.Request{Op: protocol.OpTTL, Key: "k"})); !r.Found || r.Int <= 59000 || r.Int > 60000 {
		t.Fatalf("ttl after expire 60000 = %d", r.Int)
	}
	if r := ok("expire of a missing key", call(protocol.Request{Op: protocol.OpExpire, Key: "nope", TTL: 1})); r.Bool || r.Version != 0 {
		t.Fatalf("expire of a missing key = (existed %v, version %d)", r.Bool, r.Version)
	}
	if r := call(protocol.Request{Op: protocol.OpExpire, Key: "k", TTL: -1}); r.Err == nil || r.Err.Code != protocol.CodeBadRequest {
		t.Fatalf("expire with a negative ttl: %+v", r.Err)
	}
	if r := ok("delete if version", call(protocol.Request{Op: protocol.OpDelete, Key: "k", HasIfVersion: true, IfVersion: ex.Version})); !r.Bool {
		t.Fatal("delete if version: the key did not exist")
	}
}

// TestVersion1ClientReadsVersion2Answers checks that a client of protocol
// version 1, which knows nothing of versions, is answered as before: its
// hello is answered with version 1, and the added keys are ones it ignores.
func TestVersion1ClientReadsVersion2Answers(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c := dialRaw(t, d.Socket)
	hello := c.call(&protocol.Request{ID: 0, Op: protocol.OpHello, Version: 1, Client: "old/1"})
	if hello.Err != nil || hello.Hello.Version != 1 {
		t.Fatalf("hello of version 1 = %+v", hello)
	}
	c.call(&protocol.Request{ID: 1, Op: protocol.OpSet, Key: "k", Value: []byte("v")})
	c.write(frameOf(t, map[string]any{"id": 2, "op": "get", "key": "k"}))
	payload, err := protocol.ReadFrame(c.br, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := msgpack.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	if string(m["result"].([]byte)) != "v" {
		t.Fatalf("get result %v", m["result"])
	}
	for k := range m {
		if k != "id" && k != "result" && k != "version" {
			t.Fatalf("the response has key %q; a version 1 client knows id and result, and ignores the rest", k)
		}
	}
}
