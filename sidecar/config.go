package sidecar

import (
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/store"
)

// Defaults of Config. The socket path is shared with every client library.
const (
	DefaultSocket           = protocol.DefaultSocket
	DefaultSocketMode       = 0o666 // callers are told apart by peer credentials, not by file permissions
	DefaultSystemProject    = "system"
	DefaultMaxConns         = 1024
	DefaultMaxInflight      = 128 // per connection: enough to keep a pipelining client busy, small enough to bound memory
	DefaultMaxInflightBytes = 256 << 20
	DefaultRequestTimeout   = 10 * time.Second
	DefaultShutdownTimeout  = 30 * time.Second
	// DefaultListLimit is the page size of a list request that gives none.
	DefaultListLimit = 100

	// minMaxFrame is the smallest default frame limit: room for a setMany of
	// several small values even when values are limited to a few bytes.
	minMaxFrame = 2 << 20
	// frameOverhead is what a frame needs beyond one value: the key, the
	// field names and the msgpack headers.
	frameOverhead = 64 << 10
)

// Config is the configuration of the socket server; zero fields take the
// defaults above (WithDefaults). The daemon's command fills it from its
// settings, with the store's and the identity's.
type Config struct {
	// Socket is the path of the Unix socket to listen on. Default
	// DefaultSocket.
	Socket string
	// SocketMode is the permission of the socket file. Default 0666: every
	// local process may connect, and is then confined to its own project.
	SocketMode os.FileMode

	// SystemProject is refused key-value access. Default "system".
	SystemProject string

	// Limits are the key and value size limits, announced to clients in the
	// hello result; the store enforces them.
	Limits store.Limits

	// MaxConns bounds open connections; further callers wait in the
	// listen backlog. Default DefaultMaxConns.
	MaxConns int
	// MaxInflight bounds the requests of one connection read ahead of their
	// responses. Default DefaultMaxInflight.
	MaxInflight int
	// MaxInflightBytes bounds the request bytes held by all connections at
	// once; a connection whose next frame does not fit waits. Default
	// DefaultMaxInflightBytes.
	MaxInflightBytes int64
	// MaxFrameBytes bounds one frame's payload. Default: the max value size
	// plus 64 KiB, and at least 2 MiB.
	MaxFrameBytes int
	// RequestTimeout bounds the work on one request. Default 10s.
	RequestTimeout time.Duration
	// ShutdownTimeout bounds how long a stop waits for in-flight requests.
	// Default 30s.
	ShutdownTimeout time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.SocketMode == 0 {
		c.SocketMode = DefaultSocketMode
	}
	if c.SystemProject == "" {
		c.SystemProject = DefaultSystemProject
	}
	c.Limits = c.Limits.WithDefaults()
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxInflightBytes <= 0 {
		c.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = max(minMaxFrame, c.Limits.MaxValueBytes+frameOverhead)
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	return c
}

// Validate checks a Config that has its defaults applied. Its errors name
// the daemon's flags, which is how operators set these fields.
func (c Config) Validate() error {
	switch {
	case int64(c.MaxFrameBytes) > int64(math.MaxUint32):
		return errors.New("--max-frame-bytes must fit in 32 bits")
	case int64(c.MaxFrameBytes) > c.MaxInflightBytes:
		return fmt.Errorf("--max-frame-bytes (%d) is larger than --max-inflight-bytes (%d): no frame of that size could be read", c.MaxFrameBytes, c.MaxInflightBytes)
	}
	return nil
}
