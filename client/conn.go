package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kvsidecar/kvsidecar/protocol"
)

const (
	// maxIdleBuffer bounds the buffers a connection keeps between uses:
	// a larger one (left by a large value) is dropped after use, so one big
	// value does not pin its size in memory for the life of the connection.
	maxIdleBuffer = 64 << 10
	// readBufferSize is the socket read buffer: big enough that one read
	// takes in the responses of many small calls at once.
	readBufferSize = 32 << 10
	// backlogPauseMin and backlogPauseMax bound the pause between dials
	// while the daemon's listen backlog is full: at first shorter than a
	// request takes, at most a small share of a typical call timeout.
	backlogPauseMin = time.Millisecond
	backlogPauseMax = 10 * time.Millisecond
	// helloMaxFrame bounds the hello response, read before the limits are
	// known; it is a few hundred bytes.
	helloMaxFrame = 64 << 10
	// defaultMaxFrame is the daemon's documented default frame limit, used
	// if a hello announces none.
	defaultMaxFrame = 2 << 20
	// responseOverhead is what a response frame needs beyond its keys and
	// values: field names, ids, msgpack headers.
	responseOverhead = 64 << 10
	// perEntryOverhead is the msgpack headers of one key and one value in
	// a list or getMany response.
	perEntryOverhead = 16
)

// encoderPool holds request encoders; requests are encoded by their callers,
// in parallel, and only copied into the connection's queue under its lock.
var encoderPool = sync.Pool{New: func() any { return protocol.NewEncoder() }}

// conn is one connection to the daemon. Callers queue their frames; whoever
// finds the write side free takes it and writes the queue: the caller itself
// when the socket takes the bytes at once, the writer goroutine when the
// socket is full (a write would block) or more frames were queued meanwhile.
//
// The read side is held the same way: a caller about to wait for its
// response that finds no one reading reads the socket itself (it leads),
// handing over the responses of others it reads, until its own has come;
// if calls are still in flight then, it hands the read side to the reader
// goroutine, which reads until none is. So a lone caller reads its own
// answer, with no goroutine between it and the socket, while under load the
// reader goroutine keeps reading and callers only wait. While no call is in
// flight no one reads: a connection the daemon closed meanwhile is noticed
// by the next call's write, and that request is sent again on a new
// connection (it never left).
type conn struct {
	c      *Client
	nc     net.Conn
	rc     syscall.RawConn // nc's descriptor, for callers' non-blocking writes; nil: the writer goroutine writes everything
	br     *bufio.Reader
	dec    *protocol.Decoder // used by the hello, then by the read side's holder only
	nextID atomic.Uint64
	broken atomic.Bool // set with err, read without the lock

	maxFrame int // largest request payload the daemon accepts
	maxResp  int // largest response payload this client reads

	wake     chan struct{} // capacity 1: hands the write side to the writer goroutine
	readWake chan struct{} // capacity 1: hands the read side to the reader goroutine
	done     chan struct{} // closed when the connection breaks

	// reading: the read side is held, by a leading caller or the reader
	// goroutine. Changed under mu; read without it as a hint.
	reading atomic.Bool
	// round is the read side's list of the responses of one read, reused.
	round []arrival
	// kick interrupts a leading caller's read when its context ends (bound
	// once, for context.AfterFunc); kicked receives a token when it has.
	kick   func()
	kicked chan struct{}

	mu      sync.Mutex
	pending map[uint64]*call // requests sent or queued, by id
	wbuf    []byte           // frames queued for the writer
	wq      []queued         // the frames in wbuf, in order
	// writing: the write side is held, by a caller writing the queue or
	// by the writer goroutine. While it is, callers only queue: the holder
	// writes what they queue or hands the write side to the goroutine.
	// While it is not, the queue is empty.
	writing bool
	spare   []byte   // an empty buffer the holder swaps with wbuf
	spareQ  []queued // and its frame list, swapped with wq
	now     nowWrite // the holder's non-blocking write
	err     error    // the error of calls in flight when the connection broke; nil while it works
	unsent  error    // the error of calls whose requests never left
}

// queued is a frame in a write buffer: the id of its request and the offset
// where it ends, so that after a failed write the requests that never left
// can be told from those the daemon may have received. begun marks a frame
// whose first bytes were already written, put back in the queue with the
// rest of it.
type queued struct {
	id    uint64
	end   int
	begun bool
}

// dialConn opens the socket. The hello is the caller's next step.
func dialConn(ctx context.Context, c *Client) (*conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", c.socket)
	// EAGAIN: the daemon's listen backlog is full, for instance while
	// another process floods it with connections. The daemon drains it
	// within moments, so try again until ctx ends.
	for pause := backlogPauseMin; errors.Is(err, syscall.EAGAIN) && ctx.Err() == nil; pause = min(2*pause, backlogPauseMax) {
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		nc, err = d.DialContext(ctx, "unix", c.socket)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	cn := &conn{
		c:        c,
		nc:       nc,
		br:       bufio.NewReaderSize(nc, readBufferSize),
		dec:      protocol.NewDecoder(),
		wake:     make(chan struct{}, 1),
		readWake: make(chan struct{}, 1),
		done:     make(chan struct{}),
		pending:  make(map[uint64]*call),
		kicked:   make(chan struct{}, 1),
	}
	cn.kick = func() {
		// A read deadline in the past ends the leader's read at once,
		// and any read after it, until the leader clears it.
		cn.nc.SetReadDeadline(time.Unix(1, 0))
		cn.kicked <- struct{}{}
	}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			cn.rc = rc
			cn.now.fn = cn.now.write
		}
	}
	return cn, nil
}

// hello exchanges the hello (id 0), synchronously, before the reader and
// writer start. ctx bounds it through the socket's deadline.
func (cn *conn) hello(ctx context.Context, name string) (protocol.HelloResult, error) {
	nc := cn.nc
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })

	enc := protocol.NewEncoder()
	frame, err := enc.Request(&protocol.Request{ID: 0, Op: protocol.OpHello, Version: protocol.Version, Client: name})
	if err != nil {
		stop()
		return protocol.HelloResult{}, err
	}
	// A daemon that refuses the caller sends its error frame and closes
	// without reading, so the write may fail while the error is there to
	// be read: read either way.
	_, werr := nc.Write(frame)
	payload, rerr := protocol.ReadFrame(cn.br, helloMaxFrame, nil)
	if !stop() || ctx.Err() != nil {
		return protocol.HelloResult{}, ctx.Err()
	}
	if errors.Is(rerr, os.ErrDeadlineExceeded) {
		// The socket's deadline is ctx's, and may pass a moment before
		// ctx reports it.
		return protocol.HelloResult{}, context.DeadlineExceeded
	}
	if rerr != nil {
		if werr != nil && errors.Is(rerr, io.EOF) {
			rerr = werr
		}
		return protocol.HelloResult{}, fmt.Errorf("%w: hello: %w", ErrUnavailable, rerr)
	}
	nc.SetDeadline(time.Time{})

	resp := protocol.Response{Op: protocol.OpHello}
	if err := cn.dec.DecodeResponse(payload, &resp); err != nil {
		return protocol.HelloResult{}, fmt.Errorf("%w: unreadable hello response: %w", ErrInternal, err)
	}
	if resp.Err != nil {
		return protocol.HelloResult{}, resp.Err
	}
	if v := resp.Hello.Version; v != protocol.Version {
		return protocol.HelloResult{}, fmt.Errorf("%w: the daemon answered version %d, this client speaks %d", ErrUnsupportedVersion, v, protocol.Version)
	}
	return resp.Hello, nil
}

// start sizes the connection from the daemon's limits and starts its reader
// and writer. The client's mu is held, so Close cannot be waiting yet.
func (cn *conn) start(l *protocol.Limits) {
	cn.maxFrame = int(l.MaxFrame)
	if cn.maxFrame <= 0 {
		cn.maxFrame = defaultMaxFrame
	}
	// The largest response is the announced max_response; a daemon that
	// does not announce one may send a full page of the largest keys and
	// values.
	resp := float64(l.MaxBatch)*float64(l.MaxKey+l.MaxValue+perEntryOverhead) + responseOverhead
	if l.MaxResponse > 0 {
		resp = float64(l.MaxResponse) + responseOverhead
	}
	cn.maxResp = int(min(max(resp, float64(cn.maxFrame)), math.MaxUint32))
	cn.c.wg.Add(2)
	go cn.readLoop()
	go cn.writeLoop()
}

// send queues cl.req, registering cl under a fresh id, and writes the queue
// if no one else is writing it. When the connection has already broken, the
// request is not queued and cl is marked unsent.
func (cn *conn) send(cl *call) error {
	hold, others, err := cn.queue(cl)
	if err != nil || !hold {
		return err
	}
	cn.flush(others)
	return nil
}

// queue encodes cl.req and queues its frame. hold reports that the caller
// took the write side and must flush; others, that other calls are in
// flight, so that more frames are likely to be queued in a moment.
func (cn *conn) queue(cl *call) (hold, others bool, err error) {
	req := &cl.req
	req.ID = cn.nextID.Add(1)
	enc := encoderPool.Get().(*protocol.Encoder)
	frame, err := enc.Request(req)
	if err != nil {
		return false, false, fmt.Errorf("%w: encode request: %w", ErrBadRequest, err)
	}
	defer func() {
		if cap(frame) <= maxIdleBuffer {
			encoderPool.Put(enc)
		}
	}()
	// The daemon answers an oversized frame by closing the connection,
	// which would fail every other call in flight on it: refuse it here.
	if n := len(frame) - protocol.HeaderSize; n > cn.maxFrame {
		return false, false, newError(protocol.CodeFrameTooLarge, "frame too large: the request is %d bytes, the limit is %d bytes", n, cn.maxFrame)
	}

	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.err != nil {
		cl.unsent = true
		return false, false, cn.unsent
	}
	cn.pending[req.ID] = cl
	cn.wbuf = append(cn.wbuf, frame...)
	cn.wq = append(cn.wq, queued{id: req.ID, end: len(cn.wbuf)})
	if cn.writing {
		return false, false, nil
	}
	cn.writing = true
	return true, len(cn.pending) > 1, nil
}

// flush writes the queue for a caller that holds the write side, without
// blocking, for up to inlineRounds writes while others keep queueing:
// whatever the socket does not take at once (it is full, or it failed), and
// whatever is still queued after the last round, goes to the writer
// goroutine with the write side. With others in flight it yields before
// each write, so that the callers ready to run queue their frames and they
// go out in this write rather than one write each.
func (cn *conn) flush(others bool) {
	if cn.rc == nil {
		cn.handOver()
		return
	}
	for round := 1; ; round++ {
		if others {
			runtime.Gosched()
		}
		cn.mu.Lock()
		buf, batch := cn.take()
		cn.mu.Unlock()
		n, err := cn.writeNow(buf)
		cn.mu.Lock()
		if n < len(buf) {
			cn.putBack(buf, batch, n)
		} else {
			cn.recycle(buf, batch)
		}
		switch {
		case err == nil && cn.err == nil && len(cn.wbuf) == 0:
			cn.writing = false
			cn.mu.Unlock()
			return
		case err == nil && cn.err == nil && n == len(buf) && round < inlineRounds:
			cn.mu.Unlock()
			others = true
			continue
		}
		cn.mu.Unlock()
		if err != nil {
			cn.fail(err)
		}
		cn.handOver()
		return
	}
}

// inlineRounds bounds the writes a caller makes for others before it hands
// the write side to the writer goroutine: a few rounds keep the goroutine
// asleep under a steady load, without holding one caller back for long.
const inlineRounds = 4

// handOver gives the write side to the writer goroutine.
func (cn *conn) handOver() {
	select {
	case cn.wake <- struct{}{}:
	default: // cannot happen: only the holder hands over, once
	}
}

// writeNow writes as much of buf as the socket takes without waiting and
// returns how many bytes it wrote; a full socket is no error. Only the
// write side's holder calls it.
func (cn *conn) writeNow(buf []byte) (int, error) {
	w := &cn.now
	w.buf, w.n, w.err = buf, 0, nil
	err := cn.rc.Write(w.fn)
	n, werr := w.n, w.err
	w.buf, w.err = nil, nil
	if werr == nil {
		werr = err
	}
	return n, werr
}

// nowWrite is the state of writeNow's non-blocking write, kept in the
// connection so that a write allocates nothing.
type nowWrite struct {
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool // w.write, bound once
}

// write writes w.buf from w.n on until it is written, the socket is full
// or the write fails. It returns true: never wait for the socket.
func (w *nowWrite) write(fd uintptr) bool {
	for w.n < len(w.buf) {
		m, err := syscall.Write(int(fd), w.buf[w.n:])
		if m > 0 {
			w.n += m
		}
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return true
		case err != nil:
			w.err = os.NewSyscallError("write", err)
			return true
		case m == 0:
			w.err = io.ErrShortWrite
			return true
		}
	}
	return true
}

// take swaps the queue with the spare buffer and returns the frames to
// write. cn.mu is held.
func (cn *conn) take() ([]byte, []queued) {
	buf, batch := cn.wbuf, cn.wq
	cn.wbuf, cn.wq = cn.spare[:0], cn.spareQ[:0]
	cn.spare, cn.spareQ = nil, nil
	return buf, batch
}

// recycle keeps a written buffer as the spare, unless it grew large.
// cn.mu is held.
func (cn *conn) recycle(buf []byte, batch []queued) {
	if cap(buf) <= maxIdleBuffer {
		cn.spare, cn.spareQ = buf[:0], batch[:0]
	}
}

// putBack puts what is left of buf after its first n bytes back in front of
// the queue: a frame cut short is marked begun. cn.mu is held.
func (cn *conn) putBack(buf []byte, batch []queued, n int) {
	rest := buf[n:]
	wbuf := make([]byte, 0, len(rest)+len(cn.wbuf))
	wbuf = append(append(wbuf, rest...), cn.wbuf...)
	wq := make([]queued, 0, len(batch)+len(cn.wq))
	start := 0
	for _, q := range batch {
		if q.end > n {
			wq = append(wq, queued{id: q.id, end: q.end - n, begun: q.begun || start < n})
		}
		start = q.end
	}
	for _, q := range cn.wq {
		wq = append(wq, queued{id: q.id, end: q.end + len(rest), begun: q.begun})
	}
	cn.wbuf, cn.wq = wbuf, wq
}

// abandon removes a call whose caller gives up. It reports false when the
// call was already taken by the reader (or a failing connection), which
// then signals it.
func (cn *conn) abandon(cl *call) bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.pending[cl.req.ID] != cl {
		return false
	}
	delete(cn.pending, cl.req.ID)
	return true
}

// writeLoop holds the write side when a caller handed it over: it writes
// the queue, blocking while the socket is full, until the queue is empty.
// When the connection breaks it fails the calls in flight, once it holds the
// write side: the holder alone knows which requests never left.
func (cn *conn) writeLoop() {
	defer cn.c.wg.Done()
	for {
		select {
		case <-cn.wake:
		case <-cn.done:
			cn.mu.Lock()
			held := cn.writing
			cn.writing = true
			cn.mu.Unlock()
			if held {
				// A caller is writing; it sees the connection broken
				// and hands the write side over.
				<-cn.wake
			}
			cn.failCalls(nil, 0)
			return
		}
		if !cn.drain() {
			return
		}
	}
}

// drain writes the queue until it is empty and gives up the write side. It
// returns false when the connection broke, its calls failed.
func (cn *conn) drain() bool {
	for {
		// The caller that handed the write side over, or queued during
		// the last write, has made others runnable (the reader woke them
		// with their responses): let them queue first, so that their
		// frames go out in this write. With no one else ready this
		// returns at once.
		runtime.Gosched()
		cn.mu.Lock()
		if cn.err != nil {
			cn.mu.Unlock()
			cn.failCalls(nil, 0)
			return false
		}
		if len(cn.wbuf) == 0 {
			cn.writing = false
			cn.mu.Unlock()
			return true
		}
		buf, batch := cn.take()
		cn.mu.Unlock()
		if n, err := cn.nc.Write(buf); err != nil {
			cn.fail(err)
			cn.failCalls(batch, n)
			return false
		}
		cn.mu.Lock()
		cn.recycle(buf, batch)
		cn.mu.Unlock()
	}
}

// readLoop holds the read side when a leading caller handed it over: it
// reads responses and hands each to its call until no call is in flight,
// then gives the read side up. It ends when the connection breaks.
func (cn *conn) readLoop() {
	defer cn.c.wg.Done()
	var buf []byte
	for {
		select {
		case <-cn.readWake:
		case <-cn.done:
			return
		}
		for {
			var err error
			if buf, err = cn.readSome(buf); err != nil {
				cn.fail(err)
				return
			}
			cn.mu.Lock()
			idle := len(cn.pending) == 0
			if idle {
				cn.reading.Store(false)
			}
			cn.mu.Unlock()
			if idle {
				break
			}
		}
	}
}

// readSome reads from the socket once, or more for a response larger than
// what was read, and hands the whole responses read to their calls. The
// responses that one read brought in whole are handed over together; a
// response not yet whole in the buffer is read on its own, into buf when it
// is larger than the read buffer (buf is returned for reuse). An error means
// the connection must break. Only the read side's holder calls it.
func (cn *conn) readSome(buf []byte) ([]byte, error) {
	frames, used, err := cn.buffered(cn.round[:0])
	if err != nil {
		return buf, err
	}
	if len(frames) > 0 {
		return buf, cn.deliverRead(frames, used)
	}
	payload, inPlace, err := cn.readFrame(buf)
	if err != nil {
		return buf, err
	}
	if err := cn.deliver(payload); err != nil {
		return buf, err
	}
	switch {
	case inPlace:
		cn.br.Discard(len(payload)) // cannot fail: the bytes were peeked
	case cap(payload) <= maxIdleBuffer:
		buf = payload[:0]
	default:
		buf = nil
	}
	return buf, nil
}

// deliverRead hands over the whole responses of a read, frames, which take
// the first used bytes of the read buffer, and discards them.
func (cn *conn) deliverRead(frames []arrival, used int) error {
	err := cn.deliverAll(frames)
	cn.br.Discard(used) // cannot fail: the bytes were peeked
	clear(frames)
	cn.round = frames[:0]
	return err
}

// takeRead gives the read side to the caller of cl, about to wait for its
// response, when no one holds it and cl is still in flight on a working
// connection.
func (cn *conn) takeRead(cl *call) bool {
	if cn.reading.Load() || len(cl.done) > 0 {
		return false
	}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.reading.Load() || cn.err != nil || cn.pending[cl.req.ID] != cl {
		return false
	}
	cn.reading.Store(true)
	return true
}

// lead reads the socket for the caller of cl, which holds the read side,
// and hands over every response it reads, until cl's own has come, ctx
// ends, or the response at the front is not whole in the read buffer (the
// reader goroutine reads it: a read ended by ctx must not cut a response in
// two). Then it gives the read side up, or to the reader goroutine while
// calls are still in flight.
func (cn *conn) lead(ctx context.Context, cl *call) {
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, cn.kick)
	}
	for len(cl.done) == 0 && ctx.Err() == nil {
		frames, used, err := cn.buffered(cn.round[:0])
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() == nil {
				cn.fail(err)
			}
			break
		}
		if len(frames) == 0 {
			break
		}
		if err := cn.deliverRead(frames, used); err != nil {
			cn.fail(err)
			break
		}
	}
	if stop != nil && !stop() {
		// The kick ran, or is running: once it has, clear its deadline
		// for whoever reads next.
		<-cn.kicked
		cn.nc.SetReadDeadline(time.Time{})
	}

	cn.mu.Lock()
	defer cn.mu.Unlock()
	inFlight := len(cn.pending)
	if ctx.Err() != nil && cn.pending[cl.req.ID] == cl {
		inFlight-- // its caller gives it up
	}
	if cn.err != nil || inFlight == 0 {
		cn.reading.Store(false)
		return
	}
	cn.readWake <- struct{}{} // cannot block: only the holder hands over, once
}

// arrival is one response of a read: its payload, in the read buffer, and
// its call.
type arrival struct {
	payload []byte
	id      uint64
	cl      *call
}

// buffered waits until the read buffer holds data and returns, appended to
// frames, the responses at its front that are whole there, and how many
// bytes they take. It returns none when the first is not whole yet (or is
// larger than the buffer): readFrame reads it. A bad length prefix after
// whole responses is left for readFrame to report.
func (cn *conn) buffered(frames []arrival) ([]arrival, int, error) {
	if cn.br.Buffered() == 0 {
		if _, err := cn.br.Peek(1); err != nil {
			return frames, 0, err
		}
	}
	data, _ := cn.br.Peek(cn.br.Buffered()) // cannot fail: the bytes are buffered
	off := 0
	for len(data)-off >= protocol.HeaderSize {
		n := int(binary.BigEndian.Uint32(data[off:]))
		if n == 0 || n > cn.maxResp || n > cn.br.Size() || off+protocol.HeaderSize+n > len(data) {
			break
		}
		start := off + protocol.HeaderSize
		frames = append(frames, arrival{payload: data[start : start+n]})
		off = start + n
	}
	return frames, off, nil
}

// readFrame reads the next response frame. A payload that fits in the read
// buffer, as small responses do, is returned in place (inPlace), without a
// copy; it stays valid until the caller discards it from cn.br. A larger
// one is read into buf, grown if needed. io.EOF means the stream ended
// cleanly between frames.
func (cn *conn) readFrame(buf []byte) (payload []byte, inPlace bool, err error) {
	hdr, err := cn.br.Peek(protocol.HeaderSize)
	if err != nil {
		if len(hdr) > 0 && errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: stream ended inside a length prefix", protocol.ErrTruncated)
		}
		return nil, false, err
	}
	n := binary.BigEndian.Uint32(hdr)
	switch {
	case uint64(n) > uint64(cn.maxResp):
		return nil, false, fmt.Errorf("%w: %d bytes, the limit is %d", protocol.ErrFrameTooLarge, n, cn.maxResp)
	case n == 0:
		return nil, false, fmt.Errorf("%w: empty frame", protocol.ErrTruncated)
	}
	cn.br.Discard(protocol.HeaderSize) // cannot fail: the bytes were peeked
	if int(n) > cn.br.Size() {
		payload, err = protocol.ReadFramePayload(cn.br, int(n), buf)
		return payload, false, err
	}
	payload, err = cn.br.Peek(int(n))
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: stream ended inside a %d-byte frame", protocol.ErrTruncated, n)
		}
		return nil, false, err
	}
	return payload, true, nil
}

// deliver decodes one response into its call and signals it. A response
// whose caller gave up is dropped. An error means the stream can no longer
// be trusted.
func (cn *conn) deliver(payload []byte) error {
	id, err := cn.dec.ResponseID(payload)
	if err != nil {
		return fmt.Errorf("unreadable response: %w", err)
	}
	cn.mu.Lock()
	cl := cn.pending[id]
	if cl != nil {
		delete(cn.pending, id)
	}
	cn.mu.Unlock()
	return cn.complete(payload, id, cl)
}

// deliverAll is deliver for the responses of one read, their calls taken
// from the pending map at once. After an error the calls of the responses
// that follow go back to the map, to fail with the connection as they
// would have had they not been read yet.
func (cn *conn) deliverAll(frames []arrival) error {
	k := len(frames)
	var idErr error
	for i := range frames {
		id, err := cn.dec.ResponseID(frames[i].payload)
		if err != nil {
			k, idErr = i, fmt.Errorf("unreadable response: %w", err)
			break
		}
		frames[i].id = id
	}
	cn.mu.Lock()
	for i := range frames[:k] {
		f := &frames[i]
		if f.cl = cn.pending[f.id]; f.cl != nil {
			delete(cn.pending, f.id)
		}
	}
	cn.mu.Unlock()
	for i := range frames[:k] {
		f := &frames[i]
		if err := cn.complete(f.payload, f.id, f.cl); err != nil {
			cn.restore(frames[i+1 : k])
			return err
		}
	}
	return idErr
}

// restore puts back the calls of responses left undelivered, or fails them
// when the connection's calls were already failed.
func (cn *conn) restore(frames []arrival) {
	cn.mu.Lock()
	if cn.pending != nil {
		for _, f := range frames {
			if f.cl != nil {
				cn.pending[f.id] = f.cl
			}
		}
		cn.mu.Unlock()
		return
	}
	err := cn.err
	cn.mu.Unlock()
	for _, f := range frames {
		if f.cl != nil {
			f.cl.err = err
			f.cl.done <- struct{}{}
		}
	}
}

// complete decodes the response id into its call cl, taken from the
// pending map, and signals it; a nil cl is a call given up, or the
// daemon's last word before it closes the connection (id 0).
func (cn *conn) complete(payload []byte, id uint64, cl *call) error {
	if cl == nil {
		if id == 0 {
			// An error the daemon sends before closing the connection
			// (bad_frame, unavailable when shutting down): keep it as
			// the cause the calls in flight will report.
			var resp protocol.Response
			if cn.dec.DecodeResponse(payload, &resp) == nil && resp.Err != nil {
				return resp.Err
			}
		}
		return nil
	}
	if err := cn.dec.DecodeResponse(payload, &cl.resp); err != nil {
		cl.err = fmt.Errorf("%w: unreadable %s response: %w", ErrInternal, cl.resp.Op, err)
		cl.done <- struct{}{}
		return err
	}
	cl.done <- struct{}{}
	return nil
}

// fail breaks the connection: it records why and closes the socket, which
// ends the reader; the writer then fails the calls in flight. Only the first
// call has an effect.
func (cn *conn) fail(cause error) {
	err, unsent := cause, cause
	if !errors.Is(cause, ErrClosed) {
		err = lostError(cn.c.socket, cause)
		unsent = fmt.Errorf("%w: connection to %s lost before the request was sent: %w", ErrUnavailable, cn.c.socket, cause)
	}
	cn.mu.Lock()
	if cn.err != nil {
		cn.mu.Unlock()
		return
	}
	cn.err, cn.unsent = err, unsent
	cn.broken.Store(true)
	cn.mu.Unlock()

	close(cn.done)
	cn.nc.Close()
	cn.c.forget(cn)
}

// failCalls fails every call still waiting on a broken connection. The calls
// whose requests never reached the socket — still queued, or in the part of
// the writer's last batch after the n bytes it wrote — are marked unsent, so
// they are sent again on a new connection; the others fail with the
// connection's error, their outcome unknown.
func (cn *conn) failCalls(batch []queued, n int) {
	cn.mu.Lock()
	pending, err, unsentErr := cn.pending, cn.err, cn.unsent
	cn.pending = nil
	start := 0
	for _, q := range batch {
		if start >= n {
			cn.wq = append(cn.wq, q)
		}
		start = q.end
	}
	unsent := cn.wq
	cn.wq, cn.wbuf = nil, nil
	cn.mu.Unlock()

	for _, q := range unsent {
		if q.begun {
			continue // part of it left: the daemon may have it
		}
		if cl := pending[q.id]; cl != nil {
			delete(pending, q.id)
			cl.err, cl.unsent = unsentErr, true
			cl.done <- struct{}{}
		}
	}
	for _, cl := range pending {
		cl.err = err
		cl.done <- struct{}{}
	}
}
