package sidecar

import (
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/store"
)

// The round path. When the store implements store.Async, the read loop
// hands the simple single-key requests (get, has, set, delete) of one read
// round to the store in one Do, with no goroutine and no timer per
// request. Each op's Done encodes its answer straight into the
// connection's output; the answers of a store batch thus leave in one
// write. A request's deadline travels in its op, and the store checks it
// when it takes the op up; for a store that does not answer at all, one
// timer per connection (the sweeper), armed at the earliest deadline of
// the ops given to the store, answers overdue ones unavailable.
//
// A request on a key that an earlier unfinished request names, or read
// while a clear is pending, takes the goroutine path (conn.handle), which
// waits for what it is ordered after; so does every other op.

// fastReq is one request on the round path: its op, its ordering ticket
// and what it holds. A connection keeps those it has used for the next
// ones (conn.free).
type fastReq struct {
	c    *conn
	op   store.Op
	t    ticket
	id   uint64
	kind protocol.Op
	h    hold
	read time.Time // when the request was read, for the duration metric
	resp protocol.Response
	// frame is the request's frame payload, which op.Key (and, for a
	// set, op.Value) are views of (protocol.Decoder.Borrow): the store
	// reads them until Done, and the buffer is not read into again until
	// the request is done and a later request gives it to the read loop.
	frame []byte

	// Under c.outMu:
	answered   bool // the sweeper answered it; Done only gives back its bytes
	prev, next *fastReq
}

// fastList is a list of the fast requests given to the store and not yet
// done, in the order they were given.
type fastList struct {
	head, tail *fastReq
	n          int
}

func (l *fastList) push(f *fastReq) {
	f.prev, f.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = f
	} else {
		l.head = f
	}
	l.tail = f
	l.n++
}

func (l *fastList) remove(f *fastReq) {
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		l.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		l.tail = f.prev
	}
	f.prev, f.next = nil, nil
	l.n--
}

// storeOpOf is the store op of a request the round path takes, or 0.
func storeOpOf(op protocol.Op) store.OpKind {
	switch op {
	case protocol.OpGet:
		return store.OpGet
	case protocol.OpHas:
		return store.OpHas
	case protocol.OpSet:
		return store.OpSet
	case protocol.OpDelete:
		return store.OpDelete
	}
	return 0
}

// openRound notes that the read loop is handling frames: answers queued
// from now on wait for the round's end (endRound), which writes them.
func (c *conn) openRound() {
	if c.roundOpen {
		return
	}
	c.roundOpen = true
	c.roundTime = time.Now()
	if !c.heldSince.IsZero() {
		// These frames may have waited while a Do held the read loop: a
		// request's timeout counts from when the daemon could have read
		// it, so that a caller waiting behind a slow commit still gets
		// its answer within its timeout.
		c.roundTime, c.heldSince = c.heldSince, time.Time{}
	}
	c.outMu.Lock()
	c.holdWake = true
	c.outMu.Unlock()
}

// endRound gives the round's ops to the store and writes what is in the
// output, itself when no write is under way: when the store answers
// inside Do (the embedded store's reads), the round's answers leave in one
// write with no goroutine woken. The read loop calls it before it blocks.
func (c *conn) endRound() {
	if !c.roundOpen && len(c.round) == 0 {
		return
	}
	if len(c.round) > 0 {
		c.outMu.Lock()
		for _, f := range c.roundReqs {
			c.pending.push(f)
			c.armSweeper(f.op.Deadline)
		}
		c.outMu.Unlock()
		start := time.Now()
		c.async.Do(c.round)
		if time.Since(start) > heldRead && c.framesWaiting() {
			c.heldSince = start
		}
		clear(c.round)
		clear(c.roundReqs)
		c.round, c.roundReqs = c.round[:0], c.roundReqs[:0]
	}
	c.roundOpen = false
	c.outMu.Lock()
	c.holdWake = false
	c.outMu.Unlock()
	if c.flush() {
		c.outMu.Lock()
		c.signal()
		c.outMu.Unlock()
	}
}

// heldRead is how long a Do may hold the read loop (the store answering on
// its goroutine: a commit or a read round at an idle queue) before the
// frames that arrived meanwhile count their timeouts from when it began.
const heldRead = time.Millisecond

// framesWaiting reports whether bytes of further frames wait to be read:
// in the read loop's buffer or in the socket.
func (c *conn) framesWaiting() bool {
	if c.br.Buffered() > 0 {
		return true
	}
	rc, err := c.nc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if err := rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return false
	}
	return n > 0
}

// dispatchFast takes req on the round path, or answers it at once (ping),
// and reports whether it did; req is the read loop's and is not kept. A
// request it takes keeps frame, the payload req's key and value are views
// of, until it is done, and spare is a buffer for the read loop to read
// the next frame into: one that no request holds.
func (c *conn) dispatchFast(req *protocol.Request, h hold, frame []byte) (spare []byte, ok bool) {
	if req.Timeout < 0 {
		return nil, false // refused by execute, with its message
	}
	if req.Op == protocol.OpPing {
		if !c.order.pingMayRun() {
			return nil, false
		}
		resp := protocol.Response{ID: req.ID, Op: protocol.OpPing}
		c.trim(&h, c.s.responseSize(&resp))
		c.send(&resp, h)
		c.s.fast[0].ok.Inc()
		c.s.fast[0].duration.Observe(time.Since(c.roundTime).Seconds())
		return frame, true
	}
	kind := storeOpOf(req.Op)
	if kind == 0 || c.async == nil {
		return nil, false
	}
	var ttl time.Duration
	if req.Op == protocol.OpSet {
		var err error
		if ttl, err = ttlOf("ttl", req.TTL); err != nil {
			return nil, false
		}
	}
	f := c.newFast()
	if !c.order.enter(req.Key, &f.t) {
		c.freeFast(f)
		return nil, false
	}
	timeout := c.s.cfg.RequestTimeout
	if req.Timeout > 0 && req.Timeout < timeout.Milliseconds() {
		timeout = time.Duration(req.Timeout) * time.Millisecond
	}
	f.id, f.kind, f.h, f.read = req.ID, req.Op, h, c.roundTime
	f.op = store.Op{
		Kind:     kind,
		Project:  c.project,
		Key:      req.Key,
		TTL:      ttl,
		Cond:     condOf(req.HasIfVersion, req.IfVersion),
		Deadline: c.roundTime.Add(timeout),
		Done:     f.op.Done,
	}
	if kind == store.OpSet {
		f.op.Value = req.Value
	}
	spare, f.frame = f.frame[:0], frame
	c.wg.Add(1)
	c.round = append(c.round, &f.op)
	c.roundReqs = append(c.roundReqs, f)
	return spare, true
}

// newFast returns a fast request from the free list, or a new one.
func (c *conn) newFast() *fastReq {
	c.outMu.Lock()
	if n := len(c.free); n > 0 {
		f := c.free[n-1]
		c.free[n-1] = nil
		c.free = c.free[:n-1]
		c.outMu.Unlock()
		return f
	}
	c.outMu.Unlock()
	f := &fastReq{c: c}
	f.op.Done = f.done
	return f
}

// freeFast keeps f for a later request; c.outMu is not held.
func (c *conn) freeFast(f *fastReq) {
	c.outMu.Lock()
	c.keepFast(f)
	c.outMu.Unlock()
}

// keepFast puts f on the free list; c.outMu is held. The list holds at
// most MaxInflight requests, as many as can be read ahead.
func (c *conn) keepFast(f *fastReq) {
	done := f.op.Done
	f.op = store.Op{Done: done}
	f.resp = protocol.Response{}
	f.answered = false
	// The ticket's key is a view of the frame, which a later frame will
	// overwrite.
	f.t.one[0], f.t.keys = "", nil
	if cap(f.frame) > fastBufferMax {
		f.frame = nil
	}
	if len(c.free) < c.s.cfg.MaxInflight {
		c.free = append(c.free, f)
	}
}

// done is the Done of a fast request's op: it answers the request into
// the output, unless the sweeper did.
func (f *fastReq) done(op *store.Op) {
	c := f.c
	resp := &f.resp
	*resp = protocol.Response{ID: f.id, Op: f.kind}
	code := protocol.Code("")
	if op.Err != nil {
		perr, unexpected := errorFor(op.Err)
		if unexpected {
			c.log.Error("request failed", zap.String("op", f.kind.String()), zap.Error(op.Err))
		}
		*resp = protocol.Response{ID: f.id, Err: perr}
		code = perr.Code
	} else {
		switch op.Kind {
		case store.OpGet:
			resp.Found, resp.Value, resp.Version = op.Found, op.Value, op.Version
		case store.OpHas:
			resp.Found = op.Found
		case store.OpSet:
			resp.Version = op.Version
		case store.OpDelete:
			resp.Bool = op.Found
		}
	}
	size := c.s.responseSize(resp)

	c.outMu.Lock()
	if !f.answered {
		// The requests ordered after it may go; the sweeper did this for
		// one it answered. (outMu, then the orderer's lock, as there.)
		c.order.finish(&f.t)
	}
	c.pending.remove(f)
	if f.answered {
		// The caller was told unavailable; the store has now let go of
		// the request's value: give back its bytes.
		h := f.h
		c.keepFast(f)
		c.outMu.Unlock()
		c.release(h)
		return
	}
	// What stays is the response's encoding. The rest goes back with the
	// next write's bytes, before it starts (flush), in one step for all
	// the answers it takes; or now, when a write is under way, which may
	// take as long as the write timeout.
	var trimNow int64
	if excess := f.h.bytes - size; excess > 0 {
		f.h.bytes = size
		if c.writing {
			trimNow = excess
		} else {
			c.outTrim += excess
		}
	}
	// Counted before the answer can leave, as on the goroutine path: a
	// caller that reads /metrics after its answer finds it counted.
	if code == "" {
		m := &c.s.fast[storeOpOf(f.kind)]
		m.ok.Inc()
		m.duration.Observe(time.Since(f.read).Seconds())
	} else {
		c.count(f.kind, code, f.read)
	}
	c.appendResponse(resp, f.h)
	c.signal()
	c.keepFast(f)
	c.outMu.Unlock()
	c.giveBack(trimNow)
	c.wg.Done()
}

// armSweeper makes the sweeper fire by deadline; c.outMu is held.
func (c *conn) armSweeper(deadline time.Time) {
	if !c.sweepAt.IsZero() && !deadline.Before(c.sweepAt) {
		return
	}
	c.sweepAt = deadline
	d := time.Until(deadline)
	if c.sweep == nil {
		c.sweep = time.AfterFunc(d, func() { c.sweepOverdue(false) })
		return
	}
	c.sweep.Reset(d)
}

// sweepOverdue answers unavailable every fast request whose deadline has
// passed (all, when the stop's grace period has ended) and that the store
// has not answered, and arms the sweeper for the earliest that remains.
// Such a request gives back its slot now and its bytes when the store is
// done with it (done); requests on its key ordered after it go on.
func (c *conn) sweepOverdue(all bool) {
	now := time.Now()
	var next time.Time
	answered := 0
	c.outMu.Lock()
	for f := c.pending.head; f != nil; f = f.next {
		if f.answered {
			continue
		}
		if !all && f.op.Deadline.After(now) {
			if next.IsZero() || f.op.Deadline.Before(next) {
				next = f.op.Deadline
			}
			continue
		}
		f.answered = true
		// The requests ordered after it go on, as after a request whose
		// store call gave up at its deadline on the goroutine path.
		c.order.finish(&f.t)
		c.appendResponse(&protocol.Response{ID: f.id, Err: protocol.NewError(protocol.CodeUnavailable, "the store did not answer within the request's timeout")}, hold{slot: f.h.slot})
		f.h.slot = false
		c.count(f.kind, protocol.CodeUnavailable, f.read)
		answered++
	}
	c.sweepAt = time.Time{}
	if !next.IsZero() {
		c.armSweeper(next)
	}
	if answered > 0 && !c.writing {
		// Wake the write loop even in a round (c.holdWake): the read loop
		// may be inside a Do that waits for the store on its goroutine,
		// and these answers are due now.
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	c.outMu.Unlock()
	for range answered {
		c.wg.Done()
	}
}

// stopSweeper stops the sweeper's timer; the connection has ended.
func (c *conn) stopSweeper() {
	c.outMu.Lock()
	if c.sweep != nil {
		c.sweep.Stop()
	}
	c.sweepAt = time.Time{}
	c.outMu.Unlock()
}

// fastMetrics are the request metrics of one op's successful requests,
// looked up once rather than per request.
type fastMetrics struct {
	ok       interface{ Inc() }
	duration interface{ Observe(float64) }
}

// initFastMetrics looks up the metrics of the round path's ops: ping at 0,
// then by store.OpKind.
func (s *Server) initFastMetrics() {
	for i, op := range []protocol.Op{protocol.OpPing, protocol.OpGet, protocol.OpHas, protocol.OpSet, protocol.OpDelete} {
		if i > 0 && storeOpOf(op) != store.OpKind(i) {
			panic("sidecar: fast metrics out of order")
		}
		s.fast[i] = fastMetrics{
			ok:       s.metrics.requests.WithLabelValues(op.String(), "ok"),
			duration: s.metrics.duration.WithLabelValues(op.String()),
		}
	}
}
