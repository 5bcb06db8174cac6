package sidecar_test

import (
	"testing"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
)

func TestSmoke(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c := dialRaw(t, d.Socket)
	h := c.hello()
	if h.Project != "test" {
		t.Fatalf("project %q", h.Project)
	}
	if r := c.call(&protocol.Request{ID: 1, Op: protocol.OpSet, Key: "k", Value: []byte(`"v"`)}); r.Err != nil {
		t.Fatal(r.Err)
	}
	r := c.call(&protocol.Request{ID: 2, Op: protocol.OpGet, Key: "k"})
	if r.Err != nil || !r.Found || string(r.Value) != `"v"` {
		t.Fatalf("%+v", r)
	}
}
