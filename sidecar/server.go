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

// Timeouts of the server's own housekeeping; a request's are in Config.
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
	// refuseTimeout bounds each step of refusing a caller: writing the
	// forbidden frame, then reading what the caller still sends. A refused
	// caller cannot hold a connection slot longer than twice this.
	refuseTimeout = time.Second
	// resolveTimeout bounds resolving a caller's project at accept. The
	// resolvers read memory or local files; a resolver that must ask
	// another service gets this long before the caller is refused.
	resolveTimeout = 5 * time.Second
)

// Server serves one Unix socket. Create it with NewServer, then Listen and
// Serve.
type Server struct {
	cfg     Config
	store   store.Store
	ident   identity.Resolver
	metrics *Metrics
	log     *zap.Logger

	bytes *semaphore.Weighted // request bytes held across connections (MaxInflightBytes)
	slots chan struct{}       // open connections (MaxConns)

	ln       *net.UnixListener
	lnFile   os.FileInfo // the socket file Listen created, so RemoveSocket removes only that one
	draining atomic.Bool

	// stopReading is cancelled when a stop begins: connections stop reading
	// new requests. kill is cancelled when the stop's grace period ends:
	// requests still running are cancelled.
	stopReading, kill      context.Context
	stopCancel, killCancel context.CancelFunc

	mu    sync.Mutex
	conns map[*conn]struct{}
	wg    sync.WaitGroup // one per connection goroutine
}

// NewServer returns a server for cfg, which must have its defaults applied
// (Config.WithDefaults) and be valid (Config.Validate).
func NewServer(cfg Config, st store.Store, ident identity.Resolver, m *Metrics, log *zap.Logger) *Server {
	s := &Server{
		cfg:     cfg,
		store:   st,
		ident:   ident,
		metrics: m,
		log:     log,
		bytes:   semaphore.NewWeighted(cfg.MaxInflightBytes),
		slots:   make(chan struct{}, cfg.MaxConns),
		conns:   make(map[*conn]struct{}),
	}
	s.stopReading, s.stopCancel = context.WithCancel(context.Background())
	s.kill, s.killCancel = context.WithCancel(context.Background())
	return s
}

// Listen creates the socket. A socket file left by a daemon that is gone is
// replaced; one on which a daemon still answers is an error, and so is a
// path that is not a socket.
func (s *Server) Listen() error {
	path := s.cfg.Socket
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
		s.log.Info("removing stale socket", zap.String("socket", path))
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	// The file stays when the listener closes: RemoveSocket removes it once
	// the daemon has finished with its store, the last step of a stop.
	ln.SetUnlinkOnClose(false)
	fi, err := os.Lstat(path)
	if err == nil {
		err = os.Chmod(path, s.cfg.SocketMode)
	}
	if err != nil {
		ln.Close()
		os.Remove(path)
		return fmt.Errorf("set socket mode: %w", err)
	}
	s.ln, s.lnFile = ln, fi
	return nil
}

// RemoveSocket closes the listener if Serve has not, and removes the socket
// file Listen created. A file another daemon has put in its place since is
// left alone. Calling it again, or without Listen, does nothing.
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

func (s *Server) acceptLoop() error {
	for {
		// Take a connection slot before accepting, so that past MaxConns
		// callers wait in the kernel's backlog instead of in our memory.
		select {
		case s.slots <- struct{}{}:
		case <-s.stopReading.Done():
			return nil
		}
		nc, err := s.ln.AcceptUnix()
		if err != nil {
			<-s.slots
			if s.draining.Load() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				s.log.Error("accept: out of file descriptors; pausing", zap.Error(err))
				time.Sleep(acceptRetryPause)
				continue
			}
			return err
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			s.serveConn(nc)
		}()
	}
}

// serveConn resolves the caller and runs the connection until it ends.
func (s *Server) serveConn(nc *net.UnixConn) {
	peer, err := identity.PeerOf(nc)
	if err != nil {
		s.log.Warn("refusing connection: cannot read peer credentials", zap.Error(err))
		s.refuse(nc, "the daemon could not read the caller's credentials")
		return
	}
	ctx, cancel := context.WithTimeout(s.stopReading, resolveTimeout)
	project, err := s.ident.Resolve(ctx, peer)
	cancel()
	if err == nil && project == s.cfg.SystemProject {
		err = fmt.Errorf("project %q is the system project, which has no key-value access", project)
	}
	if err == nil {
		err = store.CheckProject(project)
	}
	if err != nil {
		s.log.Info("refusing connection", zap.Int32("pid", peer.PID), zap.Uint32("uid", peer.UID), zap.Uint32("gid", peer.GID), zap.Error(err))
		s.refuse(nc, fmt.Sprintf("forbidden: %s (%s)", err, peer))
		return
	}
	c := newConn(s, nc, peer, project)
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.metrics.conns.WithLabelValues("accepted").Inc()
	s.metrics.connsOpen.Inc()
	c.run()
	s.metrics.connsOpen.Dec()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// refuse sends a forbidden error frame and closes the connection.
func (s *Server) refuse(nc *net.UnixConn, msg string) {
	s.metrics.conns.WithLabelValues("refused").Inc()
	s.metrics.closed.WithLabelValues(string(closeForbidden)).Inc()
	frame, err := protocol.NewEncoder().Response(&protocol.Response{Err: protocol.NewError(protocol.CodeForbidden, msg)})
	if err == nil {
		nc.SetWriteDeadline(time.Now().Add(refuseTimeout))
		nc.Write(frame)
	}
	// Half-close and read what the peer sends (its hello) until it closes or
	// refuseTimeout passes: closing with unread input would make the kernel reset
	// the connection, and some clients then lose the error frame.
	nc.CloseWrite()
	nc.SetReadDeadline(time.Now().Add(refuseTimeout))
	io.Copy(io.Discard, io.LimitReader(nc, 1<<20))
	nc.Close()
}
