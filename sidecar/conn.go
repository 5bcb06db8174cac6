package sidecar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar/identity"
	"github.com/kvsidecar/kvsidecar/store"
)

// Buffer sizes of a connection. 32 KiB holds many small frames, so that a
// pipelining client's requests are read, and its responses written, with
// few system calls.
const (
	readBufferSize  = 32 << 10
	writeBufferSize = 32 << 10
	// keepBufferMax is the largest frame buffer a connection keeps for the
	// next frame; larger ones are dropped so an idle connection does not pin
	// a megabyte.
	keepBufferMax = 64 << 10
)

// conn is one client connection: a read loop that decodes requests and
// starts a goroutine for each, and a write loop that encodes responses and
// flushes when no more are queued.
type conn struct {
	s       *Server
	nc      *net.UnixConn
	peer    identity.Peer
	project string
	log     *zap.Logger

	slots      chan struct{} // requests read and not yet answered (MaxInflight)
	out        chan outItem  // responses for the write loop
	writerDone chan struct{}
	wg         sync.WaitGroup // request goroutines
	order      orderer
	stopped    bool // set by the read loop when it ended for a stop
}

// outItem is a response queued for writing, with what it holds.
type outItem struct {
	resp  *protocol.Response
	bytes int64 // request bytes to give back to the server's budget
	slot  bool  // whether it holds one of the connection's slots
}

func newConn(s *Server, nc *net.UnixConn, peer identity.Peer, project string) *conn {
	return &conn{
		s:       s,
		nc:      nc,
		peer:    peer,
		project: project,
		log:     s.log.With(zap.Int32("pid", peer.PID), zap.Uint32("uid", peer.UID), zap.String("project", project)),
		slots:   make(chan struct{}, s.cfg.MaxInflight),
		// Every queued response holds a slot, plus at most one closing
		// error frame, so sends to out never block.
		out:        make(chan outItem, s.cfg.MaxInflight+1),
		writerDone: make(chan struct{}),
	}
}

// run serves the connection until the peer closes it, a frame is malformed
// or the server stops; it returns when every request read has been answered.
func (c *conn) run() {
	c.log.Debug("connection open")
	go c.writeLoop()
	c.readLoop()
	c.wg.Wait()
	if c.stopped {
		c.out <- outItem{resp: &protocol.Response{Err: protocol.NewError(protocol.CodeUnavailable, "the daemon is stopping; requests not yet answered were not read")}}
	}
	close(c.out)
	<-c.writerDone
	c.nc.Close()
	c.log.Debug("connection closed")
}

// stopReading makes the read loop end at its next read, without an error
// frame: the server is stopping.
func (c *conn) stopReading() {
	c.nc.SetReadDeadline(time.Now())
}

func (c *conn) readLoop() {
	cfg := &c.s.cfg
	br := bufio.NewReaderSize(c.nc, readBufferSize)
	dec := protocol.NewDecoder()
	dec.MaxBatch = store.MaxBatchItems
	var buf []byte
	greeted := false
	for {
		select {
		case c.slots <- struct{}{}:
		case <-c.s.stopReading.Done():
			c.stopping()
			return
		}
		n, err := protocol.ReadFrameHeader(br, cfg.MaxFrameBytes)
		if err != nil {
			<-c.slots
			c.readFailed(err)
			return
		}
		if err := c.s.bytes.Acquire(c.s.stopReading, int64(n)); err != nil {
			<-c.slots
			c.stopping()
			return
		}
		payload, err := protocol.ReadFramePayload(br, n, buf)
		if err != nil {
			c.release(int64(n), true)
			c.readFailed(err)
			return
		}
		if cap(payload) <= keepBufferMax {
			buf = payload
		}
		req := &protocol.Request{}
		if err := dec.DecodeRequest(payload, req); err != nil {
			id, scanErr := dec.Scan(payload)
			if scanErr != nil {
				c.release(int64(n), true)
				c.fatal(0, protocol.CodeBadFrame, err.Error())
				return
			}
			c.send(&protocol.Response{ID: id, Err: protocol.NewError(protocol.CodeBadRequest, "bad request: "+err.Error())}, int64(n))
			c.count(protocol.OpInvalid, protocol.CodeBadRequest, time.Time{})
			if !greeted {
				return
			}
			continue
		}
		if !greeted {
			if !c.hello(req, int64(n)) {
				return
			}
			greeted = true
			continue
		}
		keys, barrier := orderKeys(req)
		t := c.order.register(keys, barrier)
		c.wg.Add(1)
		go c.handle(req, t, int64(n), time.Now())
	}
}

// hello answers the first request, which must be a hello.
func (c *conn) hello(req *protocol.Request, n int64) bool {
	cfg := &c.s.cfg
	switch {
	case req.Op != protocol.OpHello:
		c.release(n, true)
		c.fatal(req.ID, protocol.CodeBadRequest, fmt.Sprintf("the first request must be hello, got %q", opName(req)))
		return false
	case req.Version < 1:
		c.release(n, true)
		c.fatal(req.ID, protocol.CodeUnsupportedVersion, fmt.Sprintf("protocol version %d is not supported; this server speaks 1 to %d", req.Version, protocol.Version))
		return false
	}
	c.log.Debug("hello", zap.String("client", req.Client), zap.Int64("version", req.Version))
	c.send(&protocol.Response{ID: req.ID, Op: protocol.OpHello, Hello: protocol.HelloResult{
		Version: min(req.Version, protocol.Version),
		Server:  ServerName,
		Project: c.project,
		Limits: protocol.Limits{
			MaxKey:      int64(cfg.Limits.MaxKeyBytes),
			MaxValue:    int64(cfg.Limits.MaxValueBytes),
			MaxFrame:    int64(cfg.MaxFrameBytes),
			MaxInflight: int64(cfg.MaxInflight),
			MaxBatch:    store.MaxBatchItems,
		},
	}}, n)
	return true
}

func opName(req *protocol.Request) string {
	if req.Op == protocol.OpInvalid {
		return req.UnknownOp
	}
	return req.Op.String()
}

// readFailed ends the read loop on a read error, answering with an error
// frame when the peer sent something wrong.
func (c *conn) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		// The peer closed the connection between frames.
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		c.stopping()
	case errors.Is(err, protocol.ErrFrameTooLarge):
		c.fatal(0, protocol.CodeFrameTooLarge, err.Error())
	case errors.Is(err, protocol.ErrTruncated):
		c.fatal(0, protocol.CodeBadFrame, err.Error())
	default:
		c.log.Debug("read failed", zap.Error(err))
	}
}

// stopping records that the read loop ended because the server is
// stopping; run then sends the closing frame after the answers to every
// request read, so the client knows requests it sent after those were not
// read.
func (c *conn) stopping() {
	c.stopped = true
}

// fatal queues a closing error frame; the read loop then ends.
func (c *conn) fatal(id uint64, code protocol.Code, msg string) {
	c.s.metrics.badFrames.Inc()
	c.count(protocol.OpInvalid, code, time.Time{})
	c.log.Info("closing connection after a bad frame", zap.String("code", string(code)), zap.String("error", msg))
	c.out <- outItem{resp: &protocol.Response{ID: id, Err: protocol.NewError(code, msg)}}
}

// send queues a response for a request that holds a slot and n bytes.
func (c *conn) send(resp *protocol.Response, n int64) {
	c.out <- outItem{resp: resp, bytes: n, slot: true}
}

func (c *conn) release(n int64, slot bool) {
	if n > 0 {
		c.s.bytes.Release(n)
	}
	if slot {
		<-c.slots
	}
}

// handle runs one request after those it is ordered after, and queues its
// response.
func (c *conn) handle(req *protocol.Request, t *ticket, n int64, start time.Time) {
	defer c.wg.Done()
	t.await()
	timeout := c.s.cfg.RequestTimeout
	if req.Timeout > 0 && req.Timeout < timeout.Milliseconds() {
		timeout = time.Duration(req.Timeout) * time.Millisecond
	}
	// The timeout counts from when the request was read: time spent
	// waiting for earlier requests on its keys is part of what the client
	// waits.
	ctx, cancel := context.WithDeadline(c.s.kill, start.Add(timeout))
	resp := &protocol.Response{ID: req.ID, Op: req.Op}
	err := c.s.execute(ctx, c.project, req, resp)
	cancel()
	c.order.finish(t)
	code := protocol.Code("")
	if err != nil {
		perr, unexpected := errorFor(err)
		if unexpected {
			c.log.Error("request failed", zap.String("op", opName(req)), zap.Error(err))
		}
		resp = &protocol.Response{ID: req.ID, Err: perr}
		code = perr.Code
	}
	c.count(req.Op, code, start)
	c.send(resp, n)
}

// count records a request in the metrics.
func (c *conn) count(op protocol.Op, code protocol.Code, start time.Time) {
	m := c.s.metrics
	opLabel := "invalid"
	if op != protocol.OpInvalid {
		opLabel = op.String()
	}
	result := "ok"
	if code != "" {
		result = string(code)
	}
	m.requests.WithLabelValues(opLabel, result).Inc()
	if code == protocol.CodeQuotaExceeded {
		m.quotaRefusals.Inc()
	}
	if !start.IsZero() {
		m.duration.WithLabelValues(opLabel).Observe(time.Since(start).Seconds())
	}
}

// writeLoop encodes responses and flushes when no more are queued: under
// load many responses share a system call, and an idle connection's answer
// is not held back.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	bw := bufio.NewWriterSize(c.nc, writeBufferSize)
	enc := protocol.NewEncoder()
	broken := false
	for item := range c.out {
		if !broken {
			frame, err := enc.Response(item.resp)
			if err != nil {
				c.log.Error("encode response", zap.Error(err))
				frame, _ = enc.Response(&protocol.Response{ID: item.resp.ID, Err: protocol.NewError(protocol.CodeInternal, "internal error; the daemon's log has the details")})
			}
			if _, err := bw.Write(frame); err != nil {
				broken = c.writeFailed(err)
			}
		}
		c.release(item.bytes, item.slot)
		if len(c.out) == 0 && !broken {
			if err := bw.Flush(); err != nil {
				broken = c.writeFailed(err)
			}
		}
	}
	if !broken {
		bw.Flush()
	}
}

// writeFailed closes a connection whose peer no longer reads; the read loop
// then ends and remaining responses are dropped.
func (c *conn) writeFailed(err error) bool {
	c.log.Debug("write failed; closing connection", zap.Error(err))
	c.nc.Close()
	return true
}
