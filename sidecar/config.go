package sidecar

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// Defaults of Config. The socket path is shared with every client library.
const (
	DefaultSocket           = "/run/kvsidecar/kv.sock"
	DefaultSocketMode       = 0o666 // callers are told apart by peer credentials, not by file permissions
	DefaultDataDir          = "/var/lib/kvsidecar"
	DefaultSystemProject    = "system"
	DefaultMaxConns         = 1024
	DefaultMaxInflight      = 128 // per connection: enough to keep a pipelining client busy, small enough to bound memory
	DefaultMaxInflightBytes = 256 << 20
	DefaultRequestTimeout   = 10 * time.Second
	DefaultShutdownTimeout  = 30 * time.Second
	DefaultMetricsAddr      = ":9477"
	DefaultListLimit        = 100

	// minMaxFrame is the smallest default frame limit: room for a setMany of
	// several small values even when values are limited to a few bytes.
	minMaxFrame = 2 << 20
	// frameOverhead is what a frame needs beyond one value: the key, the
	// field names and the msgpack headers.
	frameOverhead = 64 << 10
)

// Config is the whole configuration of the daemon. LoadConfig fills it from
// flags and environment variables; zero fields take the defaults above.
type Config struct {
	// Socket is the path of the Unix socket to listen on.
	// Default DefaultSocket; env KV_SOCKET.
	Socket string
	// SocketMode is the permission of the socket file. Default 0666: every
	// local process may connect, and is then confined to its own project.
	SocketMode os.FileMode

	// DataDir is the directory of the embedded store (kv.db), used when
	// Postgres is empty. Default DefaultDataDir; env KV_DATA_DIR.
	DataDir string
	// Postgres is a PostgreSQL connection string; when set, the daemon uses
	// PostgreSQL instead of the embedded store. Env KV_POSTGRES_DSN.
	Postgres string
	// PostgresMaxConns is the size of the PostgreSQL connection pool; 0
	// takes the backend's default.
	PostgresMaxConns int
	// PostgresStatementTimeout bounds each SQL statement; 0 takes the
	// backend's default.
	PostgresStatementTimeout time.Duration

	// Project, when set, is the project of every caller (static identity).
	Project string
	// UIDMap, when set, is a file mapping caller uids to projects.
	// Exactly one of Project and UIDMap must be set.
	UIDMap string
	// SystemProject is refused key-value access. Default "system".
	SystemProject string

	// DefaultQuota, when > 0, sets the storage quota of projects without an
	// override, in bytes, and is stored so that every daemon sharing the
	// store agrees. 0 keeps the stored value (store.DefaultQuota, 1 GiB,
	// until someone sets another).
	DefaultQuota int64
	// Limits are the key and value size limits.
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

	// MetricsAddr is the address of the HTTP server for /metrics, /healthz
	// and /readyz; "" disables it (LoadConfig defaults it to DefaultMetricsAddr).
	MetricsAddr string
	// Pprof exposes net/http/pprof under /debug/pprof/ on MetricsAddr.
	Pprof bool

	// LogLevel is one of debug, info, warn, error. Default info.
	LogLevel string
	// LogFormat is json or console. Default json.
	LogFormat string
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.SocketMode == 0 {
		c.SocketMode = DefaultSocketMode
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
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
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.LogFormat == "" {
		c.LogFormat = "json"
	}
	return c
}

// ErrNoIdentity is returned when neither --project nor --uid-map is given.
var ErrNoIdentity = errors.New("no identity source: give --project NAME (every caller belongs to that project; env KV_PROJECT) or --uid-map FILE (callers' uids map to projects; env KV_UID_MAP)")

// Validate checks a Config that has its defaults applied.
func (c Config) Validate() error {
	switch {
	case c.Project == "" && c.UIDMap == "":
		return ErrNoIdentity
	case c.Project != "" && c.UIDMap != "":
		return errors.New("both --project and --uid-map are given: choose one identity source")
	case c.Project != "" && c.Project == c.SystemProject:
		return fmt.Errorf("--project %q is the system project, which has no key-value access", c.Project)
	case c.DefaultQuota < 0:
		return errors.New("--default-quota must not be negative")
	case int64(c.MaxFrameBytes) > int64(math.MaxUint32):
		return errors.New("--max-frame-bytes must fit in 32 bits")
	case int64(c.MaxFrameBytes) > c.MaxInflightBytes:
		return fmt.Errorf("--max-frame-bytes (%d) is larger than --max-inflight-bytes (%d): no frame of that size could be read", c.MaxFrameBytes, c.MaxInflightBytes)
	case c.LogFormat != "json" && c.LogFormat != "console":
		return fmt.Errorf("--log-format %q: want json or console", c.LogFormat)
	}
	if c.Project != "" {
		if err := store.CheckProject(c.Project); err != nil {
			return fmt.Errorf("--project: %w", err)
		}
	}
	return nil
}

// LoadConfig builds a Config from command-line arguments and environment
// variables (each flag's variable is named in its help; a flag given on the
// command line wins). It returns flag.ErrHelp after printing help to out
// when -h or --help is given.
func LoadConfig(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("kvsidecar", flag.ContinueOnError)
	fs.SetOutput(out)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var envErr error
	envSize := func(name string, def int64) int64 {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := ParseSize(v)
		if err != nil && envErr == nil {
			envErr = fmt.Errorf("$%s: %w", name, err)
		}
		return n
	}
	envInt := func(name string, def int) int { return int(envSize(name, int64(def))) }
	envDur := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil && envErr == nil {
			envErr = fmt.Errorf("$%s: %w", name, err)
		}
		return d
	}
	mode := modeValue(DefaultSocketMode)
	if v := getenv("KV_SOCKET_MODE"); v != "" {
		if err := mode.Set(v); err != nil {
			envErr = fmt.Errorf("$KV_SOCKET_MODE: %w", err)
		}
	}

	fs.StringVar(&c.Socket, "socket", env("KV_SOCKET", DefaultSocket), "path of the Unix socket to serve (env KV_SOCKET)")
	fs.Var(&mode, "socket-mode", "permissions of the socket file, octal (env KV_SOCKET_MODE); callers are confined by their credentials, not by this")
	fs.StringVar(&c.DataDir, "data-dir", env("KV_DATA_DIR", DefaultDataDir), "directory of the embedded store, used when --postgres is not given (env KV_DATA_DIR)")
	fs.StringVar(&c.Postgres, "postgres", env("KV_POSTGRES_DSN", ""), "PostgreSQL connection string; when given, data is stored there instead of the embedded store (env KV_POSTGRES_DSN)")
	fs.IntVar(&c.PostgresMaxConns, "postgres-max-conns", envInt("KV_POSTGRES_MAX_CONNS", 0), "size of the PostgreSQL connection pool; 0 takes the backend's default (env KV_POSTGRES_MAX_CONNS)")
	fs.DurationVar(&c.PostgresStatementTimeout, "postgres-statement-timeout", envDur("KV_POSTGRES_STATEMENT_TIMEOUT", 0), "limit on each SQL statement; 0 takes the backend's default (env KV_POSTGRES_STATEMENT_TIMEOUT)")
	fs.StringVar(&c.Project, "project", env("KV_PROJECT", ""), "static identity: every caller belongs to this project (env KV_PROJECT)")
	fs.StringVar(&c.UIDMap, "uid-map", env("KV_UID_MAP", ""), "uid identity: file of \"UID PROJECT\" or \"FROM-TO PROJECT\" lines, # comments; re-read on SIGHUP (env KV_UID_MAP)")
	fs.StringVar(&c.SystemProject, "system-project", env("KV_SYSTEM_PROJECT", DefaultSystemProject), "project that is refused key-value access (env KV_SYSTEM_PROJECT)")
	quota := sizeValue(envSize("KV_DEFAULT_QUOTA", 0))
	fs.Var(&quota, "default-quota", "storage quota of a project without an override: bytes, or a size such as 512MiB or 1GB. It is stored, so every daemon sharing the store agrees; when not given, the stored value stays in force (1GiB until set) (env KV_DEFAULT_QUOTA)")
	fs.IntVar(&c.Limits.MaxKeyBytes, "max-key-bytes", envInt("KV_MAX_KEY_BYTES", store.DefaultMaxKeyBytes), "longest key in bytes (env KV_MAX_KEY_BYTES)")
	fs.IntVar(&c.Limits.MaxValueBytes, "max-value-bytes", envInt("KV_MAX_VALUE_BYTES", store.DefaultMaxValueBytes), "largest value in bytes (env KV_MAX_VALUE_BYTES)")
	fs.IntVar(&c.MaxConns, "max-conns", envInt("KV_MAX_CONNS", DefaultMaxConns), "most open connections; more callers wait to be accepted (env KV_MAX_CONNS)")
	fs.IntVar(&c.MaxInflight, "max-inflight", envInt("KV_MAX_INFLIGHT", DefaultMaxInflight), "requests of one connection read ahead of their responses (env KV_MAX_INFLIGHT)")
	inflightBytes := sizeValue(envSize("KV_MAX_INFLIGHT_BYTES", DefaultMaxInflightBytes))
	fs.Var(&inflightBytes, "max-inflight-bytes", "request bytes held across all connections before reading pauses (env KV_MAX_INFLIGHT_BYTES)")
	fs.IntVar(&c.MaxFrameBytes, "max-frame-bytes", envInt("KV_MAX_FRAME_BYTES", 0), "largest frame payload; 0 means the max value size plus 64KiB, at least 2MiB (env KV_MAX_FRAME_BYTES)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", envDur("KV_REQUEST_TIMEOUT", DefaultRequestTimeout), "limit on the work for one request (env KV_REQUEST_TIMEOUT)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", envDur("KV_SHUTDOWN_TIMEOUT", DefaultShutdownTimeout), "how long a stop waits for requests in flight (env KV_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", env("KV_METRICS_ADDR", DefaultMetricsAddr), "address for /metrics, /healthz and /readyz; empty disables (env KV_METRICS_ADDR)")
	fs.BoolVar(&c.Pprof, "pprof", getenv("KV_PPROF") == "true" || getenv("KV_PPROF") == "1", "serve net/http/pprof under /debug/pprof/ on the metrics address (env KV_PPROF)")
	fs.StringVar(&c.LogLevel, "log-level", env("KV_LOG_LEVEL", "info"), "debug, info, warn or error (env KV_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", env("KV_LOG_FORMAT", "json"), "json or console (env KV_LOG_FORMAT)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (all settings are flags; see --help)", fs.Arg(0))
	}
	if envErr != nil {
		return Config{}, envErr
	}
	c.SocketMode = os.FileMode(mode)
	c.DefaultQuota = int64(quota)
	c.MaxInflightBytes = int64(inflightBytes)
	c = c.WithDefaults()
	return c, c.Validate()
}

const usageHeader = `kvsidecar serves a project-scoped, persistent key-value store to the
processes on this machine over a Unix socket. Each caller's project is
resolved from the socket's peer credentials: give --project for one project
(the pod-sidecar shape) or --uid-map to map uids to projects (one daemon per
node). Data lives in PostgreSQL with --postgres, else in an embedded store
under --data-dir.

Signals: SIGTERM or SIGINT stop it after requests in flight finish; SIGHUP
re-reads the --uid-map file.

Every flag can also be set by the environment variable named in its help.

Usage: kvsidecar [flags]

`

// ParseSize parses a byte count: a plain number of bytes, or a number with
// a unit B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers
// of 1024), case-insensitive.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]float64{
		"": 1, "b": 1,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
		"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
	}[unit]
	if num == "" || mult == 0 {
		return 0, fmt.Errorf("bad size %q: want bytes, or a number with a unit such as 512MiB or 1GB", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q: %w", s, err)
	}
	v := f * mult
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("bad size %q: too large", s)
	}
	return int64(v), nil
}

// sizeValue is a flag.Value for sizes.
type sizeValue int64

func (v *sizeValue) String() string { return strconv.FormatInt(int64(*v), 10) }
func (v *sizeValue) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	*v = sizeValue(n)
	return nil
}

// modeValue is a flag.Value for octal file modes.
type modeValue os.FileMode

func (v *modeValue) String() string { return fmt.Sprintf("%04o", uint32(*v)) }
func (v *modeValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return fmt.Errorf("bad mode %q: want octal permissions such as 0660", s)
	}
	*v = modeValue(n)
	return nil
}
