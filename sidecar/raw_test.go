package sidecar_test

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/protocol"
)

// rawConn speaks the protocol by hand, for tests that send what a
// well-behaved client never would.
type rawConn struct {
	t   testing.TB
	nc  net.Conn
	br  *bufio.Reader
	enc *protocol.Encoder
	dec *protocol.Decoder
	ops map[uint64]protocol.Op
}

func dialRaw(t testing.TB, socket string) *rawConn {
	t.Helper()
	nc, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatalf("dial %s: %v", socket, err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc), enc: protocol.NewEncoder(), dec: protocol.NewDecoder(), ops: map[uint64]protocol.Op{}}
}

// hello performs the handshake and returns its result.
func (c *rawConn) hello() protocol.HelloResult {
	c.t.Helper()
	resp := c.call(&protocol.Request{ID: 0, Op: protocol.OpHello, Version: protocol.Version, Client: "rawtest"})
	if resp.Err != nil {
		c.t.Fatalf("hello: %v", resp.Err)
	}
	return resp.Hello
}

func (c *rawConn) send(req *protocol.Request) {
	c.t.Helper()
	frame, err := c.enc.Request(req)
	if err != nil {
		c.t.Fatalf("encode: %v", err)
	}
	c.ops[req.ID] = req.Op
	c.write(frame)
}

func (c *rawConn) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read reads one response; ok is false when the connection was closed.
func (c *rawConn) read() (resp *protocol.Response, ok bool) {
	c.t.Helper()
	payload, err := protocol.ReadFrame(c.br, 64<<20, nil)
	if err != nil {
		return nil, false
	}
	id, err := c.dec.ResponseID(payload)
	if err != nil {
		c.t.Fatalf("response id: %v", err)
	}
	resp = &protocol.Response{Op: c.ops[id]}
	if err := c.dec.DecodeResponse(payload, resp); err != nil {
		c.t.Fatalf("decode response: %v", err)
	}
	return resp, true
}

func (c *rawConn) call(req *protocol.Request) *protocol.Response {
	c.t.Helper()
	c.send(req)
	resp, ok := c.read()
	if !ok {
		c.t.Fatalf("%s: connection closed", req.Op)
	}
	if resp.ID != req.ID {
		c.t.Fatalf("%s: response id %d, want %d", req.Op, resp.ID, req.ID)
	}
	return resp
}

// expectClosed asserts the server closes the connection.
func (c *rawConn) expectClosed() {
	c.t.Helper()
	if resp, ok := c.read(); ok {
		c.t.Fatalf("connection still open; got response %+v", resp)
	}
}
