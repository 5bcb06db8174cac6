// Package client is the Go client of kvsidecar: it gives a function process
// its project's persistent key-value store, served by the kvsidecar daemon
// over a Unix socket (see protocol/PROTOCOL.md for the wire format).
//
// The daemon learns the caller's project from the socket's peer credentials,
// so nothing here names a project: Dial, then use the store.
//
//	c, err := client.Dial(ctx, "") // $KV_SOCKET, else /run/kvsidecar/kv.sock
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//	err = c.Set(ctx, "user:123", User{Name: "John"}, time.Hour)
//	var u User
//	found, err := c.Get(ctx, "user:123", &u)
//
// Set, Get, GetMany, SetMany and Scan's Entry.Decode store and read JSON, so
// values round-trip with the other client libraries (the Node.js one stores
// JSON.stringify's text). The Bytes variants store values as they are.
//
// # Concurrency
//
// A Client is safe for concurrent use. Concurrent calls are pipelined on one
// connection (Options.Conns opens more): each caller encodes its request and
// queues it; whoever finds the socket free writes everything queued in one
// write (the caller itself, or a writer goroutine when the socket is full).
// A lone caller reads its own response from the socket; while several calls
// are in flight a reader goroutine reads and hands each response to its
// caller. Nothing waits on a timer: a lone call goes out at once, and under
// load many go out per write and come back per read.
//
// Most of what a call costs the calling process under load is the Go
// runtime's scheduling of the callers its answers wake. With many callers
// on a machine of few cores, a process whose own work fits in one core may
// run with GOMAXPROCS=1: measured on two cores, that halved the client's CPU
// per call with 64 callers on PostgreSQL gets, at the same rate
// (docs/PERFORMANCE.md, GOMAXPROCS and the scheduler).
//
// # Failures
//
// Errors match the package's sentinels with errors.Is: ErrQuotaExceeded,
// ErrKeyTooLarge, ErrNotInteger and the others are *protocol.Error values
// that match any error response of the same code, while the error's message
// is the daemon's (for example "quota exceeded: ...").
//
// A call whose context ends returns an error wrapping ctx.Err(). If the
// request had already been sent, the daemon may still apply it: a write's
// outcome is then unknown, and its late response is dropped.
//
// When the connection breaks (the daemon restarted, say), the calls in
// flight on it fail with an error matching ErrUnavailable; a write among
// them may or may not have been applied. A request the client knows never
// left (still queued, or refused by the socket's write) is instead sent once
// more on a new connection; so is the request of a call that finds its idle
// connection closed by the daemon meanwhile (nothing reads a connection with
// no call in flight, so that is noticed when the request is written). The
// next call dials again, so a client outlives daemon restarts without being
// rebuilt. After Close every call fails with ErrClosed.
package client
