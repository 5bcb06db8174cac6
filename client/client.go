package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvsidecar/kvsidecar/protocol"
)

// Defaults of Options. DefaultSocket and SocketEnv are the protocol's,
// shared with the daemon and every client library.
const (
	// DefaultSocket is the daemon's socket when neither Options.Socket nor
	// $KV_SOCKET names one.
	DefaultSocket = protocol.DefaultSocket
	// SocketEnv is the environment variable that names the socket.
	SocketEnv = protocol.SocketEnv
	// DefaultConns is the number of connections: one, because requests are
	// pipelined, so one connection carries any number of concurrent calls.
	DefaultConns = 1
	// DefaultClientName is sent in the hello, for the daemon's logs.
	DefaultClientName = "kvsidecar-go/1"
)

// Options configure a Client. The zero value is ready to use.
type Options struct {
	// Socket is the path of the daemon's Unix socket. "" means $KV_SOCKET,
	// or DefaultSocket when that is unset too.
	Socket string
	// Conns is the number of connections the client keeps open; calls are
	// spread over them round-robin and pipelined on each. Default
	// DefaultConns. More than one rarely helps: the daemon processes the
	// requests of one connection concurrently.
	Conns int
	// ClientName is the name and version sent to the daemon in the hello,
	// for its logs. Default DefaultClientName.
	ClientName string
}

// Client is a connection to a kvsidecar daemon. It is safe for concurrent
// use; concurrent calls share its connections, pipelined. Create it with
// Dial or DialOptions and release it with Close.
type Client struct {
	socket string
	name   string
	slots  []slot
	next   atomic.Uint64 // round-robin over slots
	hello  atomic.Pointer[protocol.HelloResult]
	closed atomic.Bool // set under mu; read without it on the hot path

	mu    sync.Mutex         // guards conns and the start of goroutines against Close
	conns map[*conn]struct{} // every connection not yet broken, dialing ones included
	wg    sync.WaitGroup     // the reader and writer goroutines of every connection
}

// slot holds one connection of the client and re-dials it when it broke.
type slot struct {
	cur    atomic.Pointer[conn]
	dialer chan struct{} // capacity 1, held while dialing: one dial at a time, waited for under ctx
}

// Dial connects to the daemon listening on socket ("" means $KV_SOCKET, else
// DefaultSocket) and exchanges the hello, so that a daemon that refuses the
// caller (ErrForbidden) or cannot be reached (ErrUnavailable) fails Dial.
func Dial(ctx context.Context, socket string) (*Client, error) {
	return DialOptions(ctx, Options{Socket: socket})
}

// DialOptions is Dial with options.
func DialOptions(ctx context.Context, opts Options) (*Client, error) {
	c := &Client{
		socket: opts.Socket,
		name:   opts.ClientName,
		conns:  make(map[*conn]struct{}),
	}
	if c.socket == "" {
		c.socket = os.Getenv(SocketEnv)
	}
	if c.socket == "" {
		c.socket = DefaultSocket
	}
	if c.name == "" {
		c.name = DefaultClientName
	}
	n := opts.Conns
	if n <= 0 {
		n = DefaultConns
	}
	c.slots = make([]slot, n)
	for i := range c.slots {
		c.slots[i].dialer = make(chan struct{}, 1)
		cn, err := c.dial(ctx)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.slots[i].cur.Store(cn)
	}
	return c, nil
}

// Close closes the client's connections and waits for its goroutines to
// end. Calls in flight fail with ErrClosed (a write among them may or may
// not have been applied), and so do later calls. Close is idempotent and
// always returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed.Store(true)
	conns := make([]*conn, 0, len(c.conns))
	for cn := range c.conns {
		conns = append(conns, cn)
	}
	c.mu.Unlock()
	for _, cn := range conns {
		cn.fail(ErrClosed)
	}
	c.wg.Wait()
	return nil
}

// Project returns the caller's project, as the daemon resolved it from the
// socket's peer credentials at the last (re)connection.
func (c *Client) Project() string { return c.hello.Load().Project }

// Limits are the daemon's limits; an alias, so the fields are documented in
// package protocol.
type Limits = protocol.Limits

// Limits returns the limits the daemon announced at the last (re)connection.
func (c *Client) Limits() Limits { return c.hello.Load().Limits }

// dial opens a connection and exchanges the hello. The connection is
// registered with the client from the start, so that Close can interrupt
// the hello.
func (c *Client) dial(ctx context.Context) (*conn, error) {
	cn, err := c.connect(ctx)
	if err != nil && !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("connect to %s: %w", c.socket, err)
	}
	return cn, err
}

func (c *Client) connect(ctx context.Context) (*conn, error) {
	cn, err := dialConn(ctx, c)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		cn.nc.Close()
		return nil, ErrClosed
	}
	c.conns[cn] = struct{}{}
	c.mu.Unlock()

	hello, err := cn.hello(ctx, c.name)
	if err != nil {
		cn.fail(err)
		if c.closed.Load() {
			return nil, ErrClosed
		}
		return nil, err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		// Close ran during the hello and has already failed cn.
		return nil, ErrClosed
	}
	c.hello.Store(&hello)
	cn.start(&hello.Limits)
	return cn, nil
}

// forget drops a broken connection from the client's set.
func (c *Client) forget(cn *conn) {
	c.mu.Lock()
	delete(c.conns, cn)
	c.mu.Unlock()
}

// conn returns a live connection, re-dialing its slot when the connection
// there broke.
func (c *Client) conn(ctx context.Context) (*conn, error) {
	s := &c.slots[0]
	if len(c.slots) > 1 {
		s = &c.slots[c.next.Add(1)%uint64(len(c.slots))]
	}
	if cn := s.cur.Load(); cn != nil && !cn.broken.Load() {
		return cn, nil
	}
	select {
	case s.dialer <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.dialer }()
	if cn := s.cur.Load(); cn != nil && !cn.broken.Load() {
		return cn, nil // another caller re-dialed while this one waited
	}
	cn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	s.cur.Store(cn)
	return cn, nil
}

// call is one request in flight. Whoever removes it from its connection's
// pending map (the reader, the writer failing the connection's calls, or the
// caller giving up) owns it from then on; the first two signal done exactly
// once. Calls are pooled: an operation takes one with newCall, fills req,
// runs do, reads resp and gives it back with putCall.
type call struct {
	req    protocol.Request
	resp   protocol.Response // the response; resp.Op is the request's op
	err    error             // set instead of resp when the connection broke
	unsent bool              // with err: the request never left, so it may be sent again
	cn     *conn             // the connection the request was queued on
	done   chan struct{}     // capacity 1: signalling never blocks
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

func newCall(op protocol.Op) *call {
	cl := callPool.Get().(*call)
	cl.req.Op = op
	return cl
}

func putCall(cl *call) {
	*cl = call{done: cl.done}
	callPool.Put(cl)
}

// sendRetries is how many times a request is sent again on a fresh
// connection when the one it was queued on broke before the request left:
// the daemon never saw it, so sending it again is safe. Once covers a call
// made just after a daemon restart, before the client noticed the drop.
const sendRetries = 1

// do sends cl.req and waits for its response in cl.resp. An error response
// is returned as the error. Errors are not yet wrapped with the operation.
func (c *Client) do(ctx context.Context, cl *call) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		cl.resp.Op = cl.req.Op
		cl.req.Timeout = timeoutFor(ctx)
		err := c.send(ctx, cl)
		if err == nil {
			err = c.wait(ctx, cl)
		}
		if err == nil {
			break
		}
		if !cl.unsent || attempt == sendRetries || ctx.Err() != nil {
			return err
		}
		cl.unsent, cl.err = false, nil
	}
	if cl.resp.Err != nil {
		return cl.resp.Err
	}
	return nil
}

// send queues cl.req on a live connection.
func (c *Client) send(ctx context.Context, cl *call) error {
	cn, err := c.conn(ctx)
	if err != nil {
		return err
	}
	cl.cn = cn
	return cn.send(cl)
}

// wait waits for the response of a sent call, or for ctx to end. When no
// one is reading the connection, the caller reads it itself (conn.lead).
func (c *Client) wait(ctx context.Context, cl *call) error {
	if cl.cn.takeRead(cl) {
		cl.cn.lead(ctx, cl)
	}
	if done := ctx.Done(); done != nil {
		select {
		case <-cl.done:
		case <-done:
			if cl.cn.abandon(cl) {
				return ctx.Err()
			}
			// The response is being delivered right now; take it.
			<-cl.done
		}
	} else {
		<-cl.done
	}
	return cl.err
}

// timeoutFor is the timeout a request carries: what is left of ctx's
// deadline, less a margin for the answer's trip back, so the daemon gives
// up first and says why (unavailable) instead of the call ending with a
// bare deadline error. 0 when ctx has no deadline.
func timeoutFor(ctx context.Context) int64 {
	deadline, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	left := time.Until(deadline)
	left -= min(left/10, 50*time.Millisecond)
	return max(left.Milliseconds(), 1)
}
