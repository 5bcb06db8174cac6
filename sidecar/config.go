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
	DefaultListLimit    = 100
	DefaultWriteTimeout = 10 * time.Second
	DefaultHelloTimeout = 5 * time.Second
	// DefaultConnsPerProjectDivisor makes the default per-project
	// connection cap a quarter of MaxConns: four projects at their cap
	// fill the daemon, one cannot.
	DefaultConnsPerProjectDivisor = 4
	// DefaultProjectInflightShare is the share of MaxInflightBytes one
	// project may hold, for the same reason.
	DefaultProjectInflightShare = 0.25
	// DefaultConnInflightBytes bounds the bytes one connection holds:
	// room for about 30 gets of the largest value in flight, each of which
	// reserves a largest value before it runs.
	DefaultConnInflightBytes = 32 << 20

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

	// MaxConns bounds open connections; further callers are refused with
	// busy. Default DefaultMaxConns.
	MaxConns int
	// MaxInflight bounds the requests of one connection read ahead of their
	// responses. Default DefaultMaxInflight.
	MaxInflight int
	// MaxInflightBytes bounds the bytes held by all connections at once:
	// request frames and the responses reserved for them (see README,
	// Memory); a connection whose next frame does not fit waits. Default
	// DefaultMaxInflightBytes.
	MaxInflightBytes int64
	// MaxFrameBytes bounds one frame's payload. Default: the max value size
	// plus 64 KiB, and at least 2 MiB.
	MaxFrameBytes int
	// MaxResponseBytes bounds one response's payload, announced in hello as
	// max_response: a getMany whose values exceed it fails with
	// response_too_large, a list page ends early. Default MaxFrameBytes; at
	// least the max value size plus 64 KiB, so any one entry fits.
	MaxResponseBytes int
	// MaxConnInflightBytes bounds the bytes one connection holds: its
	// request frames and the responses reserved for them. Default
	// DefaultConnInflightBytes, or one largest frame and its reserve
	// (frameReserve) when that is more.
	MaxConnInflightBytes int64
	// ProjectInflightShare is the share (0 < share <= 1) of
	// MaxInflightBytes that the connections of one project may hold
	// together. Default DefaultProjectInflightShare.
	ProjectInflightShare float64
	// MaxConnsPerProject bounds the open connections of one project; its
	// further callers are refused with busy. Default MaxConns / 4 (at
	// least 1).
	MaxConnsPerProject int
	// WriteTimeout is how long a connection may take to accept its pending
	// responses, and to send the rest of a request frame whose header has
	// arrived; a peer that does not read, or trickles a frame, for that long
	// is disconnected and everything it held is released. Default 10s.
	WriteTimeout time.Duration
	// HelloTimeout is how long a new connection may take to send its hello.
	// Default 5s.
	HelloTimeout time.Duration
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
	if c.MaxResponseBytes <= 0 {
		c.MaxResponseBytes = max(c.MaxFrameBytes, c.Limits.MaxValueBytes+frameOverhead)
	}
	if c.MaxConnInflightBytes <= 0 {
		c.MaxConnInflightBytes = max(DefaultConnInflightBytes, c.frameReserve())
	}
	if c.ProjectInflightShare <= 0 {
		c.ProjectInflightShare = DefaultProjectInflightShare
	}
	if c.MaxConnsPerProject <= 0 {
		c.MaxConnsPerProject = max(1, c.MaxConns/DefaultConnsPerProjectDivisor)
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.HelloTimeout <= 0 {
		c.HelloTimeout = DefaultHelloTimeout
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
	case int64(c.MaxResponseBytes) > int64(math.MaxUint32):
		return errors.New("--max-response-bytes must fit in 32 bits")
	case c.MaxResponseBytes < c.Limits.MaxValueBytes+frameOverhead:
		return fmt.Errorf("--max-response-bytes (%d) is less than the max value size plus 64KiB (%d): a get of the largest value could not be answered", c.MaxResponseBytes, c.Limits.MaxValueBytes+frameOverhead)
	case c.MaxConnInflightBytes < c.frameReserve():
		return fmt.Errorf("--max-conn-inflight-bytes (%d) is less than one largest request frame plus twice --max-response-bytes (%d): no such request could be read", c.MaxConnInflightBytes, c.frameReserve())
	case c.ProjectInflightShare > 1:
		return fmt.Errorf("--project-inflight-share %g: want a share above 0 and at most 1", c.ProjectInflightShare)
	case c.projectInflightBytes() < c.frameReserve():
		return fmt.Errorf("--max-inflight-bytes (%d) times --project-inflight-share (%g) is %d bytes, less than one largest request frame plus twice --max-response-bytes (%d bytes): no such request could be read; raise --max-inflight-bytes",
			c.MaxInflightBytes, c.ProjectInflightShare, c.projectInflightBytes(), c.frameReserve())
	}
	return nil
}

// frameReserve is what the read loop reserves when it reads a frame header:
// the frame, and the most any response may hold while it is produced:
// twice MaxResponseBytes, a response and the slice of the store being read
// for it (getMany and list read in slices of at most MaxResponseBytes).
func (c Config) frameReserve() int64 {
	return int64(c.MaxFrameBytes) + 2*int64(c.MaxResponseBytes)
}

// projectInflightBytes is the share of MaxInflightBytes one project may hold.
func (c Config) projectInflightBytes() int64 {
	return int64(float64(c.MaxInflightBytes) * c.ProjectInflightShare)
}
