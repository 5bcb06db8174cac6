// Package sidecar is the socket server of the kvsidecar daemon: it listens
// on a Unix socket, resolves each caller's project from the socket's peer
// credentials, reads msgpack-framed requests (package protocol) and serves
// them from a store.Store, with bounded memory, Prometheus metrics and an
// orderly stop. It imports no storage backend: the daemon's command
// (internal/daemon) opens the store and hands it to NewServer.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar/identity"
	"github.com/kvsidecar/kvsidecar/store"
)

// ServerName is sent to clients in the hello result.
const ServerName = "kvsidecar/0.1.0"

// Timeouts and bounds of the server's own housekeeping; a request's are in
// Config.
const (
	// staleSocketDialTimeout bounds Listen's check for a daemon still
	// serving an existing socket file. A live daemon accepts at once (the
	// kernel completes a Unix connection in the listen backlog), so a
	// second only passes when nothing answers.
	staleSocketDialTimeout = time.Second
	// acceptRetryPause is how long accepting pauses when the process is out
	// of file descriptors: long enough for connections to close and free
	// some, short enough that callers barely notice.
	acceptRetryPause = 100 * time.Millisecond
	// resolveTimeout bounds resolving a caller's project at accept. The
	// static and uid-map resolvers answer from memory; the k8s resolver
	// may wait a little for its watch to see a new pod. Past this the
	// caller is refused.
	resolveTimeout = 5 * time.Second
	// maxResolving bounds the callers of a resolver that may wait
	// (identity.Waiter) being resolved at once, each on a goroutine of its
	// own, off the accept loop; past it, callers are refused busy instead
	// of queueing without bound. 64 matches maxRefusing: a few dozen
	// goroutines at most under a flood.
	maxResolving = 64

	// maxRefusing bounds the refused connections that are being told why
	// at once. A refusal writes one frame and waits up to refuseLinger for
	// the peer's hello, so that closing does not reset the connection
	// before the peer has read the error; past this many, refused
	// connections are closed at once, so a flood costs the daemon a few
	// dozen goroutines and no more.
	maxRefusing = 64
	// refuseLinger is how long a refusal waits for the peer to close.
	refuseLinger = 500 * time.Millisecond
	// refuseWriteTimeout bounds the write of the refusal frame.
	refuseWriteTimeout = 100 * time.Millisecond
)

// refusal says why a connection was refused at accept: the reason label of
// kvsidecar_connections_refused_total.
type refusal string

// Refusal reasons.
const (
	refusedMaxConns     refusal = "max_conns"     // MaxConns connections are open
	refusedProjectConns refusal = "project_conns" // the project has MaxConnsPerProject open
	refusedUnmapped     refusal = "unmapped"      // the peer's credentials map to no project
	refusedForbidden    refusal = "forbidden"     // the project may not use KV, or credentials were unreadable
	refusedHelloTimeout refusal = "hello_timeout" // accepted, but no hello within HelloTimeout
	refusedResolving    refusal = "resolving"     // maxResolving callers are already being resolved
)

var refusals = []refusal{refusedMaxConns, refusedProjectConns, refusedUnmapped, refusedForbidden, refusedHelloTimeout, refusedResolving}

// Server serves one Unix socket. Create it with NewServer, then Listen and
// Serve.
type Server struct {
	cfg     Config
	store   store.Store
	async   store.Async // the store, when it implements store.Async: the round path (round.go)
	fast    [5]fastMetrics
	ident   identity.Resolver
	metrics *Metrics
	log     *zap.Logger
	limited *logLimiter // refusals, bad frames, slow readers: lines a peer can cause

	bytes     *semaphore.Weighted // bytes held across connections (MaxInflightBytes)
	refusing  chan struct{}       // refusals being written (maxRefusing)
	resolving chan struct{}       // callers being resolved (maxResolving)
	mayWait   bool                // ident may wait (identity.Waiter): resolve off the accept loop

	ln       *net.UnixListener
	lnFile   os.FileInfo // the socket file Listen created, so RemoveSocket removes only that one
	draining atomic.Bool

	// stopReading is cancelled when a stop begins: connections stop reading
	// new requests. kill is cancelled when the stop's grace period ends:
	// requests still running are cancelled.
	stopReading, kill      context.Context
	stopCancel, killCancel context.CancelFunc

	// revocations counts Revoke calls, so that admit sees one that ran
	// while it resolved a peer. Incremented under mu.
	revocations atomic.Uint64

	mu       sync.Mutex
	conns    map[*conn]struct{}
	projects map[string]*projectState // projects with open connections
	wg       sync.WaitGroup           // one per connection goroutine
}

// projectState is what the connections of one project share. It exists
// while the project has a connection open.
type projectState struct {
	name  string
	conns int                 // open connections (MaxConnsPerProject); under Server.mu
	bytes *semaphore.Weighted // bytes held by its connections (ProjectInflightShare)
	held  atomic.Int64        // the same, for metrics
}

// NewServer returns a server for cfg, which must have its defaults applied
// (Config.WithDefaults) and be valid (Config.Validate).
func NewServer(cfg Config, st store.Store, ident identity.Resolver, m *Metrics, log *zap.Logger) *Server {
	s := &Server{
		cfg:       cfg,
		store:     st,
		ident:     ident,
		metrics:   m,
		log:       log,
		limited:   newLogLimiter(log, time.Now),
		bytes:     semaphore.NewWeighted(cfg.MaxInflightBytes),
		refusing:  make(chan struct{}, maxRefusing),
		resolving: make(chan struct{}, maxResolving),
		conns:     make(map[*conn]struct{}),
		projects:  make(map[string]*projectState),
	}
	s.async, _ = st.(store.Async)
	s.initFastMetrics()
	s.stopReading, s.stopCancel = context.WithCancel(context.Background())
	s.kill, s.killCancel = context.WithCancel(context.Background())
	if w, ok := ident.(identity.Waiter); ok {
		s.mayWait = w.MayWait()
	}
	m.watchServer(s)
	return s
}

// Listen creates the socket. Its directory must not be writable by others
// unless it has the sticky bit: whoever can write it could replace the
// socket. The socket is bound in a private directory the daemon creates
// next to it, given its mode there, and renamed into place, so no path an
// attacker could swap is ever chmod-ed and a stale socket is replaced
// atomically. A socket file left by a daemon that is gone is replaced; one
// on which a daemon still answers is an error, and so is a path that is not
// a socket.
func (s *Server) Listen() error {
	path := s.cfg.Socket
	dir := filepath.Dir(path)
	di, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("listen on %s: socket directory: %w", path, err)
	}
	if m := di.Mode(); m&0o002 != 0 && m&os.ModeSticky == 0 {
		return fmt.Errorf("listen on %s: the directory %s is writable by every user and has no sticky bit, so anyone could replace the socket; remove write permission for others (chmod o-w) or set the sticky bit (chmod +t)", path, dir)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("listen on %s: the path exists and is not a socket; remove it or choose another --socket", path)
		}
		c, err := net.DialTimeout("unix", path, staleSocketDialTimeout)
		if err == nil {
			c.Close()
			return fmt.Errorf("listen on %s: another daemon is serving this socket", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("listen on %s: check for a running daemon: %w", path, err)
		}
		s.log.Info("replacing stale socket", zap.String("socket", path))
	}
	private, err := os.MkdirTemp(dir, ".kv")
	if err != nil {
		return fmt.Errorf("listen on %s: create a private directory beside it: %w", path, err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	// The bound name moves, and the file stays when the listener closes:
	// RemoveSocket removes it once the daemon has finished with its store,
	// the last step of a stop.
	ln.SetUnlinkOnClose(false)
	// Only this process can reach inside private (mode 0700), so this
	// chmod cannot be redirected.
	if err := os.Chmod(tmp, s.cfg.SocketMode); err != nil {
		ln.Close()
		return fmt.Errorf("set socket mode: %w", err)
	}
	fi, err := os.Lstat(tmp)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return fmt.Errorf("listen on %s: move the socket into place: %w", path, err)
	}
	s.ln, s.lnFile = ln, fi
	return nil
}

// RemoveSocket closes the listener if Serve has not, and removes the socket
// file Listen created. A file another daemon (or anyone) has put in its
// place since is left alone. Calling it again, or without Listen, does
// nothing.
func (s *Server) RemoveSocket() error {
	if s.ln == nil || s.lnFile == nil {
		return nil
	}
	s.draining.Store(true)
	s.ln.Close() // an error only says it was closed already
	fi, err := os.Lstat(s.cfg.Socket)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("remove socket: %w", err)
	case os.SameFile(fi, s.lnFile):
		if err := os.Remove(s.cfg.Socket); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove socket: %w", err)
		}
	}
	s.lnFile = nil
	return nil
}

// Serve accepts connections until ctx is cancelled, then stops: it stops
// accepting, lets every connection finish the requests it has read (up to
// ShutdownTimeout, after which they are cancelled), flushes their responses
// and closes them. It returns after every connection goroutine has ended.
// The store is the caller's to close afterwards, and then the socket file
// (RemoveSocket): until then new callers are refused by the kernel.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		return errors.New("serve: Listen was not called")
	}
	acceptDone := make(chan error, 1)
	go func() { acceptDone <- s.acceptLoop() }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-acceptDone:
		err = fmt.Errorf("accept: %w", err)
	}
	s.draining.Store(true)
	s.ln.Close() // ends acceptLoop; the file stays until RemoveSocket
	if err == nil {
		<-acceptDone
	}
	s.stopCancel()
	s.mu.Lock()
	for c := range s.conns {
		c.stopReading()
	}
	s.mu.Unlock()

	drained := make(chan struct{})
	go func() { s.wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(s.cfg.ShutdownTimeout):
		s.log.Warn("requests still running after the shutdown timeout; cancelling them",
			zap.Duration("shutdown_timeout", s.cfg.ShutdownTimeout))
		s.killCancel()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-drained
	}
	s.killCancel()
	return err
}

// Ready reports whether the server accepts connections.
func (s *Server) Ready() bool { return s.ln != nil && !s.draining.Load() }

// acceptLoop accepts connections and admits or refuses each: who the peer
// is, whether the daemon and the peer's project have room. For the static
// and uid-map resolvers that is a system call and a map lookup, done in
// the loop, so a flood of refused peers delays a mapped caller's accept by
// microseconds each. A resolver that may wait (identity.Waiter) is called
// on a goroutine per caller, at most maxResolving at once, so that its wait
// delays only its own caller.
func (s *Server) acceptLoop() error {
	for {
		nc, err := s.ln.AcceptUnix()
		if err != nil {
			if s.draining.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				s.limited.Error("accept: out of file descriptors; pausing", zap.Error(err))
				time.Sleep(acceptRetryPause)
				continue
			}
			return err
		}
		if !s.mayWait {
			s.admit(nc)
			continue
		}
		// Resolve off the accept loop: this resolver may wait (the k8s
		// resolver waits for a pod its watch has not seen yet), and that
		// wait must delay only its own caller, never the accept of others.
		select {
		case s.resolving <- struct{}{}:
		default:
			s.refuse(nc, refusedResolving, protocol.CodeBusy, func() (string, []zap.Field) {
				return fmt.Sprintf("busy: %d callers are waiting for their identity to be resolved; try again later", maxResolving), nil
			})
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.resolving }()
			s.admit(nc)
		}()
	}
}

// admit resolves the peer of a new connection and starts serving it, or
// refuses it.
func (s *Server) admit(nc *net.UnixConn) {
	peer, err := identity.PeerOf(nc)
	if err != nil {
		s.refuse(nc, refusedForbidden, protocol.CodeForbidden, func() (string, []zap.Field) {
			return "the daemon could not read the caller's credentials", []zap.Field{zap.Error(err)}
		})
		return
	}
	var project string
	for {
		// A revocation that runs between resolving and registering the
		// connection would not see it: resolve again under the new mapping.
		gen := s.revocations.Load()
		var why refusal
		project, why, err = s.resolve(peer)
		if err != nil {
			peer.Release()
			peer.PIDFD = nil
			s.refuse(nc, why, protocol.CodeForbidden, func() (string, []zap.Field) {
				return fmt.Sprintf("forbidden: %s (%s)", err, peer), peerFields(peer, zap.Error(err))
			})
			return
		}
		s.mu.Lock()
		if s.revocations.Load() == gen {
			break
		}
		s.mu.Unlock()
	}
	peer.Release()
	peer.PIDFD = nil // closed; the connection keeps the credentials for its logs
	if s.draining.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if len(s.conns) >= s.cfg.MaxConns {
		s.mu.Unlock()
		s.refuse(nc, refusedMaxConns, protocol.CodeBusy, func() (string, []zap.Field) {
			return fmt.Sprintf("busy: the daemon has %d connections open, its limit (--max-conns); try again later", s.cfg.MaxConns),
				peerFields(peer, zap.String("project", project))
		})
		return
	}
	ps := s.projects[project]
	if ps == nil {
		ps = &projectState{name: project, bytes: semaphore.NewWeighted(s.cfg.projectInflightBytes())}
		s.projects[project] = ps
	}
	if ps.conns >= s.cfg.MaxConnsPerProject {
		s.mu.Unlock()
		s.refuse(nc, refusedProjectConns, protocol.CodeBusy, func() (string, []zap.Field) {
			return fmt.Sprintf("busy: project %q has %d connections open, the limit per project (--max-conns-per-project); close some or try again later", project, s.cfg.MaxConnsPerProject),
				peerFields(peer, zap.String("project", project))
		})
		return
	}
	ps.conns++
	c := newConn(s, nc, peer, ps)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()

	s.metrics.conns.WithLabelValues("accepted").Inc()
	s.metrics.connsOpen.Inc()
	go func() {
		defer s.wg.Done()
		c.run()
		s.metrics.connsOpen.Dec()
		s.mu.Lock()
		delete(s.conns, c)
		if ps.conns--; ps.conns == 0 {
			delete(s.projects, project)
		}
		s.mu.Unlock()
	}()
}

// resolve returns the peer's project, or why it is refused.
func (s *Server) resolve(peer identity.Peer) (string, refusal, error) {
	ctx, cancel := context.WithTimeout(s.stopReading, resolveTimeout)
	project, err := s.ident.Resolve(ctx, peer)
	cancel()
	if err != nil {
		return "", refusedUnmapped, err
	}
	if project == s.cfg.SystemProject {
		return "", refusedForbidden, fmt.Errorf("project %q is the system project, which has no key-value access", project)
	}
	if err := store.CheckProject(project); err != nil {
		return "", refusedForbidden, err
	}
	return project, "", nil
}

func peerFields(p identity.Peer, more ...zap.Field) []zap.Field {
	return append([]zap.Field{zap.Int32("pid", p.PID), zap.Uint32("uid", p.UID), zap.Uint32("gid", p.GID)}, more...)
}

// refuse tells a peer why it is not served, in one error frame, and closes
// the connection; past maxRefusing refusals at once it closes at once.
// describe builds the message and the log fields, only when they are used:
// under a flood most refusals are a count and a close. The log line is
// rate-limited, since peers choose how often they are refused.
func (s *Server) refuse(nc *net.UnixConn, why refusal, code protocol.Code, describe func() (string, []zap.Field)) {
	s.metrics.refuse(why)
	var msg string
	described := false
	s.limited.InfoFunc("refusing connection", func() []zap.Field {
		m, fields := describe()
		msg, described = m, true
		return append(fields, zap.String("reason", string(why)))
	})
	select {
	case s.refusing <- struct{}{}:
	default:
		nc.Close()
		return
	}
	if !described {
		msg, _ = describe()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.refusing }()
		frame, err := protocol.NewEncoder().Response(&protocol.Response{Err: protocol.NewError(code, msg)})
		if err == nil {
			nc.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
			nc.Write(frame)
		}
		// Half-close and read what the peer sends (its hello) until it
		// closes or the linger passes: closing with unread input would make
		// the kernel reset the connection, and some clients then lose the
		// error frame.
		nc.CloseWrite()
		nc.SetReadDeadline(time.Now().Add(refuseLinger))
		io.Copy(io.Discard, io.LimitReader(nc, 64<<10))
		nc.Close()
	}()
}

// Revoke re-resolves the peer of every open connection, after the identity
// source has been reloaded. A connection whose peer no longer maps to the
// project it was admitted for gets a forbidden error frame and is closed
// (requests it has already read are answered first). It returns how many
// connections it revoked.
func (s *Server) Revoke(ctx context.Context) int {
	s.mu.Lock()
	s.revocations.Add(1)
	var revoked []*conn
	for c := range s.conns {
		project, err := s.ident.Resolve(ctx, c.peer)
		if err == nil && project != c.project {
			err = fmt.Errorf("it now maps to project %q", project)
		}
		if err != nil {
			c.revoke(fmt.Sprintf("forbidden: access revoked: %s (%s)", err, c.peer))
			revoked = append(revoked, c)
		}
	}
	s.mu.Unlock()
	for _, c := range revoked {
		s.limited.Info("revoking connection", peerFields(c.peer, zap.String("project", c.project))...)
	}
	return len(revoked)
}
