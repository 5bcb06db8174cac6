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
	"golang.org/x/sync/semaphore"

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
	// A request on the round path takes its frame's buffer (its key and
	// value are views of it) and gives the read loop the buffer of an
	// earlier one in exchange, so buffers circulate among a connection's
	// requests. frameBufferMin is the least a new one holds, so that one
	// grows rarely (a get's frame is tens of bytes, a set's of a 100-byte
	// value under 200); fastBufferMax is the largest a finished request
	// keeps: at most MaxInflight of them per connection (64 KiB at the
	// default 128; README, Memory), larger frames' buffers go back to the
	// garbage collector.
	frameBufferMin = 256
	fastBufferMax  = 512
)

// closeReason says why a connection ended. Each is a value of the reason
// label of kvsidecar_connections_closed_total; operators alert on them, so
// they are part of the daemon's interface (README, Metrics).
type closeReason string

// Close reasons.
const (
	closePeerClosed   closeReason = "peer_closed"   // the peer closed the connection between frames
	closeReadError    closeReason = "read_error"    // reading failed: a reset, or another error of the socket
	closeWriteError   closeReason = "write_error"   // writing a response failed
	closeBadFrame     closeReason = "bad_frame"     // a malformed or oversized frame, or a bad handshake
	closeStopping     closeReason = "stopping"      // the daemon is stopping
	closeSlowReader   closeReason = "slow_reader"   // the peer did not take its responses within the write timeout
	closeFrameTimeout closeReason = "frame_timeout" // a request frame, once begun, did not arrive within the write timeout
	closeHelloTimeout closeReason = "hello_timeout" // no hello within the hello timeout
	closeRevoked      closeReason = "revoked"       // a reloaded identity no longer maps the peer to this project
	closeForbidden    closeReason = "forbidden"     // refused at accept: the peer maps to no project, or may not use KV
)

// closeReasons lists every close reason, so the metric starts at zero for each.
var closeReasons = []closeReason{
	closePeerClosed, closeReadError, closeWriteError, closeBadFrame, closeStopping,
	closeSlowReader, closeFrameTimeout, closeHelloTimeout, closeRevoked, closeForbidden,
}

// conn is one client connection: a read loop that decodes requests and
// starts a goroutine for each, and a write loop that encodes responses and
// flushes when no more are queued. Every way it ends goes through end,
// which records the first reason.
type conn struct {
	s       *Server
	nc      *net.UnixConn
	peer    identity.Peer
	project string
	proj    *projectState
	log     *zap.Logger

	// ctx is cancelled when the connection ends (end) or the server stops
	// reading: the read loop stops waiting for a slot or for bytes.
	ctx    context.Context
	cancel context.CancelFunc

	slots      chan struct{}       // requests read and not yet answered (MaxInflight)
	bytes      *semaphore.Weighted // bytes this connection holds (MaxConnInflightBytes)
	writerDone chan struct{}
	wg         sync.WaitGroup // requests read and not yet answered: goroutines and store ops
	order      orderer

	// The round path (round.go): requests of one read round handed to the
	// store together. Owned by the read loop.
	async     store.Async   // the store, when it takes ops without a goroutine each
	round     []*store.Op   // ops read in this round, not yet given to the store
	roundReqs []*fastReq    // their requests
	roundOpen bool          // frames have been handled since the read loop last blocked
	roundTime time.Time     // when the round's first frame was read
	br        *bufio.Reader // the read loop's buffer
	// heldSince is when a Do that held the read loop for long (heldRead)
	// began, while frames had arrived meanwhile: the next round's
	// requests count their timeouts from then (openRound).
	heldSince time.Time

	// The output (see send and flush), under outMu: encoded answers and
	// what their requests hold, released once they are written.
	outMu       sync.Mutex
	enc         *protocol.Encoder
	outSegs     [][]byte // full segments, in order, before outBuf
	outBuf      []byte   // small frames, up to keepBufferMax
	outHolds    []hold
	outTrim     int64 // bytes the answers in the output no longer need, given back by the next flush
	spareSegs   [][]byte
	spareBuf    []byte
	spareHold   []hold
	writing     bool          // a write is under way (the write loop's or the read loop's)
	holdWake    bool          // the read loop is handling a round and flushes after it: do not wake the write loop
	outClosed   bool          // the last frame is queued; the write loop ends when it is written
	broken      bool          // a write failed: answers are dropped, holds still released
	wake        chan struct{} // one token: the write loop has something to write
	deadlineSet time.Time     // when the write deadline was last moved; by the writer of the moment

	// Fast requests given to the store and not yet done (for the sweeper),
	// and a free list of them; under outMu.
	pending  fastList
	free     []*fastReq
	sweep    *time.Timer
	sweepAt  time.Time // when sweep fires; zero when it is not armed
	stopKill func() bool

	endOnce   sync.Once
	reason    closeReason // set once, by end
	revokeMsg string      // the forbidden message of a revoked connection; set before end(closeRevoked)
}

// hold is what one request holds from the moment its frame header is read
// until its response is written or dropped: one of the connection's slots
// and bytes of the connection's, its project's and the server's budgets.
// The bytes are first a reserve for the largest request and response
// (Config.frameReserve), trimmed once the request is decoded to what its
// response may need, and once it is answered to what the response holds.
// Only trim and conn.release give bytes back.
type hold struct {
	slot  bool
	bytes int64
}

func newConn(s *Server, nc *net.UnixConn, peer identity.Peer, ps *projectState) *conn {
	c := &conn{
		s:          s,
		nc:         nc,
		peer:       peer,
		project:    ps.name,
		proj:       ps,
		log:        s.log.With(zap.Int32("pid", peer.PID), zap.Uint32("uid", peer.UID), zap.String("project", ps.name)),
		slots:      make(chan struct{}, s.cfg.MaxInflight),
		bytes:      semaphore.NewWeighted(s.cfg.MaxConnInflightBytes),
		writerDone: make(chan struct{}),
		async:      s.async,
		enc:        protocol.NewEncoder(),
		wake:       make(chan struct{}, 1),
	}
	c.ctx, c.cancel = context.WithCancel(s.stopReading)
	return c
}

// end records why the connection ends; the first reason wins.
func (c *conn) end(r closeReason) {
	c.endOnce.Do(func() { c.reason = r })
	c.cancel()
}

// revoke ends a connection whose peer no longer maps to its project: the
// read loop stops at once, requests already read are answered, then a
// forbidden frame carrying msg is sent and the connection closed.
func (c *conn) revoke(msg string) {
	c.endOnce.Do(func() {
		c.revokeMsg = msg
		c.reason = closeRevoked
	})
	c.cancel()
	c.nc.SetReadDeadline(time.Now())
}

// run serves the connection until it ends (see closeReason); it returns
// when every request read has been answered and every byte held released.
func (c *conn) run() {
	c.log.Debug("connection open")
	// Requests given to the store are answered unavailable when the stop's
	// grace period ends, as running requests are cancelled.
	c.stopKill = context.AfterFunc(c.s.kill, func() { c.sweepOverdue(true) })
	go c.writeLoop()
	c.end(c.readLoop())
	c.wg.Wait()
	switch c.reason {
	case closeStopping:
		c.send(&protocol.Response{Err: protocol.NewError(protocol.CodeUnavailable, "the daemon is stopping; requests not yet answered were not read")}, hold{})
	case closeRevoked:
		c.send(&protocol.Response{Err: protocol.NewError(protocol.CodeForbidden, c.revokeMsg)}, hold{})
	case closeHelloTimeout:
		c.s.metrics.refusedBy[refusedHelloTimeout].Inc()
		c.s.limited.Info("closing connection: no hello within the hello timeout", zap.Int32("pid", c.peer.PID), zap.Uint32("uid", c.peer.UID), zap.String("project", c.project), zap.Duration("hello_timeout", c.s.cfg.HelloTimeout))
		c.send(&protocol.Response{Err: protocol.NewError(protocol.CodeBadRequest, fmt.Sprintf("no hello within %s (the daemon's hello timeout)", c.s.cfg.HelloTimeout))}, hold{})
	}
	c.cancel()
	c.closeOutput()
	<-c.writerDone
	c.stopKill()
	c.stopSweeper()
	c.nc.Close()
	c.s.metrics.closed.WithLabelValues(string(c.reason)).Inc()
	c.log.Debug("connection closed", zap.String("reason", string(c.reason)))
}

// stopReading makes the read loop end at its next read, without an error
// frame: the server is stopping.
func (c *conn) stopReading() {
	c.nc.SetReadDeadline(time.Now())
}

// readLoop reads and dispatches requests until the connection must end,
// and returns why.
//
// It reads in rounds: every frame already buffered after one read of the
// socket is handled before the next, and the simple single-key requests
// among them are given to the store together (round.go) just before the
// loop would block — on the socket, a slot or the byte budgets — and when
// it ends. Other requests run on a goroutine each, as before.
func (c *conn) readLoop() closeReason {
	cfg := &c.s.cfg
	br := bufio.NewReaderSize(c.nc, readBufferSize)
	c.br = br
	dec := protocol.NewDecoder()
	dec.MaxBatch = store.MaxBatchItems
	// A request's key and value are views of its frame's buffer: a request
	// on the round path takes that buffer with it (dispatchFast), any
	// other takes copies (Request.Own) before the buffer is read into
	// again.
	dec.Borrow = true
	defer c.endRound()
	var buf []byte
	var scratch protocol.Request
	greeted := false
	c.nc.SetReadDeadline(time.Now().Add(cfg.HelloTimeout))
	for {
		select {
		case c.slots <- struct{}{}:
		default:
			c.endRound()
			select {
			case c.slots <- struct{}{}:
			case <-c.ctx.Done():
				return c.interrupted(greeted)
			}
		}
		h := hold{slot: true}
		// A stop, revocation or failed write ends reading through ctx and
		// a read deadline, but a frame already in br needs no read of the
		// socket, and the select above takes the slot rather than ctx.Done
		// when both are ready. After a round that ran on this goroutine
		// (a commit of Do), which the stop may have come during, the frames
		// buffered behind it would then be answered before the stopping
		// frame: look at ctx before each frame instead.
		if c.ctx.Err() != nil {
			c.release(h)
			return c.interrupted(greeted)
		}
		if br.Buffered() < protocol.HeaderSize {
			c.endRound()
		}
		n, err := protocol.ReadFrameHeader(br, cfg.MaxFrameBytes)
		if err != nil {
			c.release(h)
			return c.readFailed(err, greeted)
		}
		c.openRound()
		// Reserve the most this request and its response can hold before
		// reading it; the reserve is trimmed once the request is decoded.
		// The first frame is answered with a hello result or an error, so
		// a new connection does not wait for room for a large response.
		reserve := int64(n) + 2*int64(cfg.MaxResponseBytes)
		if !greeted {
			reserve = int64(n) + requestOverhead + c.s.smallResponse()
		}
		if !c.tryAcquire(reserve) {
			c.endRound()
			if err := c.acquire(reserve); err != nil {
				c.release(h)
				return c.interrupted(greeted)
			}
		}
		h.bytes = reserve
		// The reserve is held while the payload arrives: a peer that
		// trickles it must not hold it for longer than the write timeout.
		// Before hello the hello timeout is in force; a payload already
		// buffered needs no deadline.
		timed := false
		if br.Buffered() < n {
			c.endRound()
			timed = greeted
		}
		if timed {
			c.nc.SetReadDeadline(time.Now().Add(cfg.WriteTimeout))
		}
		into := buf
		if cap(into) < n {
			into = make([]byte, 0, max(n, frameBufferMin))
		}
		payload, err := protocol.ReadFramePayload(br, n, into)
		if timed {
			if err != nil && c.ctx.Err() == nil && errors.Is(err, os.ErrDeadlineExceeded) {
				c.release(h)
				c.s.limited.Info("closing connection: a frame did not arrive within the write timeout",
					zap.Int32("pid", c.peer.PID), zap.Uint32("uid", c.peer.UID), zap.String("project", c.project), zap.Int("frame_bytes", n), zap.Duration("write_timeout", cfg.WriteTimeout))
				return closeFrameTimeout
			}
			// A stop or revocation that set a deadline meanwhile is
			// seen through ctx.
			c.nc.SetReadDeadline(time.Time{})
			if err == nil && c.ctx.Err() != nil {
				c.release(h)
				return c.interrupted(greeted)
			}
		}
		if err != nil {
			c.release(h)
			return c.readFailed(err, greeted)
		}
		c.openRound()
		if cap(payload) <= keepBufferMax {
			buf = payload
		}
		req := &scratch
		if err := dec.DecodeRequest(payload, req); err != nil {
			id, scanErr := dec.Scan(payload)
			if scanErr != nil {
				return c.fatal(h, 0, protocol.CodeBadFrame, err.Error())
			}
			if greeted && id == 0 {
				return c.fatal(h, 0, protocol.CodeBadRequest, badIDMessage+"; and "+err.Error())
			}
			c.trim(&h, int64(n)+c.s.smallResponse())
			c.send(&protocol.Response{ID: id, Err: protocol.NewError(protocol.CodeBadRequest, "bad request: "+err.Error())}, h)
			c.count(protocol.OpInvalid, protocol.CodeBadRequest, time.Time{})
			if !greeted {
				return closeBadFrame
			}
			continue
		}
		c.trim(&h, int64(n)+requestOverhead+c.s.responseReserve(req))
		if !greeted {
			if r, ok := c.hello(req, h); !ok {
				return r
			}
			greeted = true
			// The hello timeout no longer applies. A stop or revocation
			// that set a deadline meanwhile is seen through ctx.
			c.nc.SetReadDeadline(time.Time{})
			if c.ctx.Err() != nil {
				return c.interrupted(greeted)
			}
			continue
		}
		if req.ID == 0 {
			return c.fatal(h, 0, protocol.CodeBadRequest, badIDMessage)
		}
		if spare, ok := c.dispatchFast(req, h, payload); ok {
			// The request holds payload until it is answered; the next
			// frame is read into a buffer no request holds.
			buf = spare
			continue
		}
		own := new(protocol.Request)
		*own = *req
		own.Own()
		keys, barrier := orderKeys(own)
		t := c.order.register(keys, barrier)
		c.wg.Add(1)
		go c.handle(own, t, h, c.roundTime)
	}
}

// badIDMessage explains why a request without a usable id closes the
// connection: its answer could not be matched to it, and an error with id 0
// after the hello means the connection is closing (PROTOCOL.md §4).
const badIDMessage = "bad request: after the hello every request needs an id that is a positive integer (0 is the hello's, and an id of another type or a negative one cannot be echoed); the connection is closed"

// hello answers the first request, which must be a hello.
func (c *conn) hello(req *protocol.Request, h hold) (closeReason, bool) {
	cfg := &c.s.cfg
	switch {
	case req.Op != protocol.OpHello:
		return c.fatal(h, req.ID, protocol.CodeBadRequest, fmt.Sprintf("the first request must be hello, got %q", opName(req))), false
	case req.Version < 1:
		return c.fatal(h, req.ID, protocol.CodeUnsupportedVersion, fmt.Sprintf("protocol version %d is not supported; this server speaks 1 to %d", req.Version, protocol.Version)), false
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
			MaxResponse: int64(cfg.MaxResponseBytes),
		},
	}}, h)
	return "", true
}

func opName(req *protocol.Request) string {
	if req.Op == protocol.OpInvalid {
		return req.UnknownOp
	}
	return req.Op.String()
}

// readFailed turns a read error into the reason the connection ends,
// queueing an error frame when the peer sent something wrong.
func (c *conn) readFailed(err error, greeted bool) closeReason {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		return closePeerClosed
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return c.interrupted(greeted)
	case errors.Is(err, protocol.ErrFrameTooLarge):
		return c.fatal(hold{}, 0, protocol.CodeFrameTooLarge, err.Error())
	case errors.Is(err, protocol.ErrTruncated):
		return c.fatal(hold{}, 0, protocol.CodeBadFrame, err.Error())
	}
	c.log.Debug("read failed", zap.Error(err))
	return closeReadError
}

// interrupted is why the read loop was stopped from outside: a stop, an end
// recorded by another goroutine (a revocation, a failed write), or the
// hello timeout.
func (c *conn) interrupted(greeted bool) closeReason {
	switch {
	case c.s.stopReading.Err() != nil:
		return closeStopping
	case c.ctx.Err() != nil:
		return c.reason // set by end or revoke before they cancelled ctx
	case !greeted:
		return closeHelloTimeout
	}
	return closeReadError
}

// fatal queues a closing error frame, which carries h; the read loop then
// ends.
func (c *conn) fatal(h hold, id uint64, code protocol.Code, msg string) closeReason {
	c.s.metrics.badFrames.Inc()
	c.count(protocol.OpInvalid, code, time.Time{})
	c.s.limited.Info("closing connection after a bad frame", zap.Int32("pid", c.peer.PID), zap.Uint32("uid", c.peer.UID), zap.String("project", c.project), zap.String("code", string(code)), zap.String("error", msg))
	c.send(&protocol.Response{ID: id, Err: protocol.NewError(code, msg)}, h)
	return closeBadFrame
}

// acquire takes n bytes from the connection's budget, then its project's,
// then the server's, waiting while any is short. Every request takes its
// bytes in one acquire, in that order, and never waits for more while it
// holds some, so waiting cannot deadlock.
func (c *conn) acquire(n int64) error {
	if err := c.bytes.Acquire(c.ctx, n); err != nil {
		return err
	}
	if err := c.proj.bytes.Acquire(c.ctx, n); err != nil {
		c.bytes.Release(n)
		return err
	}
	if err := c.s.bytes.Acquire(c.ctx, n); err != nil {
		c.proj.bytes.Release(n)
		c.bytes.Release(n)
		return err
	}
	c.proj.held.Add(n)
	c.s.metrics.inflight.Add(float64(n))
	return nil
}

// tryAcquire is acquire without waiting: it takes n bytes from all three
// budgets, or from none and reports false.
func (c *conn) tryAcquire(n int64) bool {
	if !c.bytes.TryAcquire(n) {
		return false
	}
	if !c.proj.bytes.TryAcquire(n) {
		c.bytes.Release(n)
		return false
	}
	if !c.s.bytes.TryAcquire(n) {
		c.proj.bytes.Release(n)
		c.bytes.Release(n)
		return false
	}
	c.proj.held.Add(n)
	c.s.metrics.inflight.Add(float64(n))
	return true
}

// giveBack returns n bytes to the budgets acquire took them from.
func (c *conn) giveBack(n int64) {
	if n <= 0 {
		return
	}
	c.s.metrics.inflight.Sub(float64(n))
	c.proj.held.Add(-n)
	c.s.bytes.Release(n)
	c.proj.bytes.Release(n)
	c.bytes.Release(n)
}

// trim lowers what h holds to n bytes, when it holds more.
func (c *conn) trim(h *hold, n int64) {
	if h.bytes > n {
		c.giveBack(h.bytes - n)
		h.bytes = n
	}
}

// release gives back what a request held. It is called once per hold: by
// whoever wrote the response after it is written or dropped, by the read
// loop when the frame could not be read, or (for the bytes of a request
// the sweeper answered) when the store is done with it.
func (c *conn) release(h hold) {
	c.giveBack(h.bytes)
	if h.slot {
		<-c.slots
	}
}

// releaseAll releases every hold of holds, as release does each, giving
// their bytes back in one step: a write's answers are released together,
// and each step takes the three budgets' locks.
func (c *conn) releaseAll(holds []hold) {
	var n int64
	for _, h := range holds {
		n += h.bytes
	}
	// Bytes before slots, as release: a read loop given a slot then finds
	// the bytes for its next frame.
	c.giveBack(n)
	for i, h := range holds {
		if h.slot {
			<-c.slots
		}
		holds[i] = hold{}
	}
}

// handle runs one request after those it is ordered after, and queues its
// response.
func (c *conn) handle(req *protocol.Request, t *ticket, h hold, start time.Time) {
	t.await()
	timeout := c.s.cfg.RequestTimeout
	if req.Timeout > 0 && req.Timeout < timeout.Milliseconds() {
		timeout = time.Duration(req.Timeout) * time.Millisecond
	}
	// The timeout counts from when the request was read: time spent
	// waiting for earlier requests on its keys is part of what the client
	// waits.
	deadline := start.Add(timeout)
	defer c.wg.Done()
	ctx, cancel := context.WithDeadline(c.s.kill, deadline)
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
	// The request is done with; what stays is the response (then, once
	// it is encoded, its encoding).
	c.trim(&h, c.s.responseSize(resp))
	c.send(resp, h)
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

// send encodes a response for a request that holds h into the output,
// where the next write takes it. A response too large to keep the
// encoder's buffer for the next one gets a new encoder after it.
func (c *conn) send(resp *protocol.Response, h hold) {
	c.outMu.Lock()
	c.appendResponse(resp, h)
	c.signal()
	c.outMu.Unlock()
}

// appendResponse encodes resp into the output and notes h; c.outMu is
// held. The encoding takes the place of the response's values in what the
// request holds. After a write failed, answers are dropped.
func (c *conn) appendResponse(resp *protocol.Response, h hold) {
	c.outHolds = append(c.outHolds, h)
	if c.broken {
		return
	}
	frame, err := c.enc.Response(resp)
	if err != nil {
		c.log.Error("encode response", zap.Error(err))
		frame, _ = c.enc.Response(&protocol.Response{ID: resp.ID, Err: protocol.NewError(protocol.CodeInternal, "internal error; the daemon's log has the details")})
	}
	if len(frame) > keepBufferMax {
		// A large frame is written from the encoder's buffer, not
		// copied: the encoder goes with it, and a new one takes its place.
		if len(c.outBuf) > 0 {
			c.outSegs = append(c.outSegs, c.outBuf)
			c.outBuf = nil
		}
		c.outSegs = append(c.outSegs, frame)
		c.enc = protocol.NewEncoder()
		return
	}
	if len(c.outBuf)+len(frame) > keepBufferMax {
		c.outSegs = append(c.outSegs, c.outBuf)
		c.outBuf = nil
	}
	c.outBuf = append(c.outBuf, frame...)
}

// signal wakes the write loop, unless a write is under way (its writer
// looks again when it is done) or the read loop is in a round (it flushes
// at the round's end); c.outMu is held.
func (c *conn) signal() {
	if c.writing || c.holdWake {
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// closeOutput tells the write loop that nothing more is queued after what
// is in the output now.
func (c *conn) closeOutput() {
	c.outMu.Lock()
	c.outClosed = true
	select {
	case c.wake <- struct{}{}:
	default:
	}
	c.outMu.Unlock()
}

// flush writes everything in the output in one write (writev, when large
// frames make it several buffers) and then releases what its requests
// held; it reports whether more was queued meanwhile. One writer at a
// time: it does nothing while another write is under way. After a write
// fails, the output is dropped.
func (c *conn) flush() (more bool) {
	c.outMu.Lock()
	if c.writing || (len(c.outBuf) == 0 && len(c.outSegs) == 0 && len(c.outHolds) == 0) {
		c.outMu.Unlock()
		return false
	}
	c.writing = true
	segs, buf, holds := c.outSegs, c.outBuf, c.outHolds
	c.outSegs, c.outBuf, c.outHolds = c.spareSegs[:0], c.spareBuf[:0], c.spareHold[:0]
	c.spareSegs, c.spareBuf, c.spareHold = nil, nil, nil
	trim := c.outTrim
	c.outTrim = 0
	broken := c.broken
	c.outMu.Unlock()
	c.giveBack(trim)

	if !broken && (len(buf) > 0 || len(segs) > 0) {
		// Every write must complete within the write timeout of the
		// moment it started. Moving the deadline costs a timer update,
		// so it moves only when a tenth of the timeout has passed: a
		// peer is cut off after between 0.9 and 1 times the timeout.
		timeout := c.s.cfg.WriteTimeout
		if now := time.Now(); now.Sub(c.deadlineSet) > timeout/10 {
			c.nc.SetWriteDeadline(now.Add(timeout))
			c.deadlineSet = now
		}
		var err error
		if len(segs) == 0 {
			_, err = c.nc.Write(buf)
		} else {
			bufs := net.Buffers(append(segs, buf))
			_, err = bufs.WriteTo(c.nc)
		}
		if err != nil {
			broken = c.writeFailed(err)
		}
	}
	c.releaseAll(holds)
	clear(segs[:cap(segs)])

	c.outMu.Lock()
	c.writing = false
	c.broken = c.broken || broken
	// Keep the buffers for the next write, unless they grew large.
	if cap(buf) <= keepBufferMax {
		c.spareBuf = buf[:0]
	}
	if cap(holds) <= c.s.cfg.MaxInflight+1 {
		c.spareHold = holds[:0]
	}
	c.spareSegs = segs[:0]
	more = len(c.outBuf) > 0 || len(c.outSegs) > 0 || len(c.outHolds) > 0
	c.outMu.Unlock()
	return more
}

// writeLoop writes the output whenever it is woken, until the output is
// closed and written.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	for range c.wake {
		for c.flush() {
		}
		c.outMu.Lock()
		done := c.outClosed && !c.writing && len(c.outBuf) == 0 && len(c.outSegs) == 0 && len(c.outHolds) == 0
		c.outMu.Unlock()
		if done {
			return
		}
	}
}

// writeFailed ends a connection whose peer no longer takes its responses,
// or takes them too slowly; closing the socket makes the read loop end, and
// remaining responses are dropped (what they hold is released).
func (c *conn) writeFailed(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.end(closeSlowReader)
		c.s.limited.Info("closing connection: the peer did not take its responses within the write timeout",
			zap.Int32("pid", c.peer.PID), zap.Uint32("uid", c.peer.UID), zap.String("project", c.project), zap.Duration("write_timeout", c.s.cfg.WriteTimeout))
	} else {
		c.end(closeWriteError)
		c.log.Debug("write failed; closing connection", zap.Error(err))
	}
	c.nc.Close()
	return true
}
