package postgres

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"
)

// waitConn is a connection to PostgreSQL whose reads, while a round armed
// it, wait for the server's answer in a blocking poll(2) on the socket
// instead of parking the goroutine in Go's network poller.
//
// For the lone caller's read round (Do at an idle reader, on the
// connection's read loop) the network poller's way costs more than the
// wait: the goroutine parks, its thread looks for other work, spins and
// sleeps, the poller's thread wakes on the answer and hands the goroutine
// to a thread again. In poll(2) the thread sleeps in the kernel and the
// answer wakes it, keeping its P (the runtime takes the P for other
// goroutines if they need it while the thread waits). The round's limit
// stays the connection's deadline: poll waits until it at most, and the
// read that follows then fails as without the wait.
type waitConn struct {
	net.Conn
	raw   syscall.RawConn
	until atomic.Int64 // armed: the read waits in poll until then (UnixNano); 0: off
	fds   [1]unix.PollFd
	ms    int
	poll  func(fd uintptr) // pollFD, made once
}

// wrapConn is the pool's AfterNetConnect: a plain TCP or Unix connection
// becomes a waitConn; others (TLS, whose own buffer the socket's state
// does not show) are left as they are.
func wrapConn(_ context.Context, _ *pgconn.Config, conn net.Conn) (net.Conn, error) {
	var sc syscall.Conn
	switch c := conn.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return conn, nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return conn, nil // then no waiting in poll, nothing else changes
	}
	w := &waitConn{Conn: conn, raw: raw}
	w.poll = w.pollFD
	return w, nil
}

// arm makes w's reads wait in poll until limit; a nil w (a connection
// left as it was) is not armed.
func (w *waitConn) arm(limit time.Time) {
	if w != nil {
		w.until.Store(limit.UnixNano())
	}
}

// disarm ends arm.
func (w *waitConn) disarm() {
	if w != nil {
		w.until.Store(0)
	}
}

// Read waits, when armed, until the socket has something to read (or the
// limit passed), then reads as the connection does.
func (w *waitConn) Read(p []byte) (int, error) {
	if until := w.until.Load(); until != 0 {
		if d := time.Duration(until - time.Now().UnixNano()); d > 0 {
			w.ms = int((d + time.Millisecond - 1) / time.Millisecond)
			_ = w.raw.Control(w.poll) // an error: the read below reports it
		}
	}
	return w.Conn.Read(p)
}

func (w *waitConn) pollFD(fd uintptr) {
	w.fds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	for {
		if _, err := unix.Poll(w.fds[:], w.ms); !errors.Is(err, unix.EINTR) {
			return
		}
		// A signal ended the wait early: wait only for what is left of it.
		d := time.Duration(w.until.Load() - time.Now().UnixNano())
		if d <= 0 {
			return
		}
		w.ms = int((d + time.Millisecond - 1) / time.Millisecond)
	}
}
