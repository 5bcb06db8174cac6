package postgres

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestWaitConn: an armed waitConn's read waits in poll until the peer
// writes and then reads what it wrote; past the connection's deadline it
// fails as a timeout instead of waiting; disarmed, it reads as the
// connection does; and a connection that is not a plain socket is left
// as it is.
func TestWaitConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	peer := <-accepted
	if peer == nil {
		t.FailNow()
	}
	defer peer.Close()
	nc, err := wrapConn(t.Context(), nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	w, ok := nc.(*waitConn)
	if !ok {
		t.Fatalf("wrapConn gave a TCP connection %T; want a waitConn", nc)
	}

	// Armed: the read waits for the peer's write, then reads it.
	w.arm(time.Now().Add(time.Minute))
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 16)
		n, err := w.Read(buf)
		if err != nil {
			t.Error(err)
		}
		got <- string(buf[:n])
	}()
	if _, err := peer.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "answer" {
		t.Fatalf("armed read = %q; want answer", s)
	}

	// Past the deadline, with nothing to read: a timeout, not a wait.
	limit := time.Now().Add(20 * time.Millisecond)
	if err := w.SetDeadline(limit); err != nil {
		t.Fatal(err)
	}
	w.arm(limit)
	if _, err := w.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("armed read past the deadline: %v; want a timeout", err)
	}

	// Disarmed, without a deadline: as the connection reads.
	w.disarm()
	if err := w.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := w.Read(buf); err != nil || string(buf[:n]) != "more" {
		t.Fatalf("disarmed read = %q, %v; want more", buf[:n], err)
	}

	// Not a plain socket: left as it is.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if nc, _ := wrapConn(t.Context(), nil, a); nc != a {
		t.Fatalf("wrapConn changed a %T into a %T", a, nc)
	}
	var none *waitConn
	none.arm(time.Now()) // a connection left as it was is not armed
	none.disarm()
}
