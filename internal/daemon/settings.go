package daemon

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

	"github.com/kvsidecar/kvsidecar/admin"
	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/sidecar/identity"
	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/pebble"
	"github.com/kvsidecar/kvsidecar/store/postgres"
)

// A setting is one daemon setting, defined once: its flag, its environment
// variable, its default and its help. The flag, the variable and the
// default all go through set, so they accept the same text. README.md's
// settings table lists the same rows (TestREADMEListsEverySetting).
type setting struct {
	flag string // the flag's name, without dashes
	env  string // the environment variable
	// def is applied before the environment and the flags, and shown as
	// the default. "" means none: the field's zero value stands, which
	// Config gives the meaning defDoc describes.
	def    string
	defDoc string // the default when def is "", as the README writes it
	arg    string // the value's name in --help; "" for a switch (--pprof)
	help   string
	set    func(c *Config, v string) error
}

// settings is every setting of the daemon, in the order of --help and the
// README. A new setting is one entry here and one row in the README.
func settings() []setting {
	return []setting{
		{flag: "socket", env: protocol.SocketEnv, def: protocol.DefaultSocket, arg: "PATH",
			help: "path of the Unix socket to serve; --socket '' on the command line serves none (an admin-only instance, with --admin-addr)",
			set:  text(func(c *Config) *string { return &c.Server.Socket })},
		{flag: "socket-mode", env: "KV_SOCKET_MODE", def: fmt.Sprintf("%04o", sidecar.DefaultSocketMode), arg: "MODE",
			help: "permissions of the socket file, octal; callers are confined by their credentials, not by this",
			set:  fileMode(func(c *Config) *os.FileMode { return &c.Server.SocketMode })},
		{flag: "data-dir", env: "KV_DATA_DIR", def: DefaultDataDir, arg: "DIR",
			help: "directory of the embedded store, used when --postgres is not given",
			set:  text(func(c *Config) *string { return &c.DataDir })},
		{flag: "postgres", env: "KV_POSTGRES_DSN", arg: "DSN",
			help: "PostgreSQL connection string; when given, data is stored there instead of the embedded store",
			set:  text(func(c *Config) *string { return &c.Postgres })},
		{flag: "postgres-max-conns", env: "KV_POSTGRES_MAX_CONNS", arg: "N",
			defDoc: fmt.Sprintf("`pool_max_conns` of the DSN, else `%d`", postgres.DefaultMaxConns),
			help:   "size of the PostgreSQL connection pool; 0 takes pool_max_conns from the DSN, else the backend's default",
			set:    count(func(c *Config) *int { return &c.PostgresMaxConns })},
		{flag: "postgres-statement-timeout", env: "KV_POSTGRES_STATEMENT_TIMEOUT", arg: "DURATION",
			defDoc: fmt.Sprintf("the backend's, `%s`", postgres.DefaultStatementTimeout),
			help:   "limit on each SQL statement; 0 takes the backend's default",
			set:    duration(func(c *Config) *time.Duration { return &c.PostgresStatementTimeout })},
		{flag: "postgres-leases", env: "KV_POSTGRES_LEASES", def: "false",
			help: "let a project's write transactions overlap under quota leases (quotas stay exact); off by default, as on two shared cores it cost PostgreSQL more CPU per write than it saved",
			set:  boolean(func(c *Config) *bool { return &c.PostgresLeases })},
		{flag: "postgres-second-read-round", env: "KV_POSTGRES_SECOND_READ_ROUND", def: "0", arg: "N",
			help: "send a second read round on another connection while one is in flight, once N reads wait behind it; 0 keeps one round in flight, as on two shared cores a second measured no better",
			set:  count(func(c *Config) *int { return &c.PostgresSecondReadRound })},
		{flag: "disk-reserve", env: "KV_DISK_RESERVE", def: formatSize(pebble.DefaultDiskReserve), arg: "SIZE",
			help: "embedded store: space kept allocated next to its directory (kv.reserve) so that deletes work on a full disk; 0 keeps none",
			set:  reserveSize(func(c *Config) *int64 { return &c.DiskReserve })},
		{flag: "project-queue-share", env: "KV_PROJECT_QUEUE_SHARE", arg: "SHARE",
			defDoc: "`" + strconv.FormatFloat(pebble.DefaultProjectQueueShare, 'g', -1, 64) + "`; `1` with `--identity static`",
			help:   "share of the store's write queue (and of PostgreSQL's read queue) one project's waiting calls may take, above 0 and at most 1 (or a percentage such as 25%); its calls beyond it wait, then fail busy, while other projects' still enter. Unset, it is " + strconv.FormatFloat(pebble.DefaultProjectQueueShare, 'g', -1, 64) + ", or 1 with --identity static (one project is every caller)",
			set:    share(func(c *Config) *float64 { return &c.ProjectQueueShare })},
		{flag: "identity", env: "KV_IDENTITY", arg: "SOURCE",
			defDoc: "`static` with `--project`, `uidmap` with `--uid-map`",
			help:   "how callers are mapped to projects: static (--project), uidmap (--uid-map) or k8s (the caller's Kubernetes pod)",
			set:    text(func(c *Config) *string { return &c.Identity })},
		{flag: "project", env: "KV_PROJECT", arg: "NAME",
			help: "static identity: every caller belongs to this project",
			set:  text(func(c *Config) *string { return &c.Project })},
		{flag: "uid-map", env: "KV_UID_MAP", arg: "FILE",
			help: "uid identity: file of \"UID PROJECT\" or \"FROM-TO PROJECT\" lines, # comments; re-read on SIGHUP",
			set:  text(func(c *Config) *string { return &c.UIDMap })},
		{flag: "k8s-node-name", env: "NODE_NAME", arg: "NODE",
			help: "k8s identity: the node this daemon runs on; only its pods are served (in a pod, from the Downward API: fieldRef spec.nodeName)",
			set:  text(func(c *Config) *string { return &c.K8sNodeName })},
		{flag: "k8s-project-from", env: "KV_K8S_PROJECT_FROM", def: identity.ProjectFromLabel, arg: "SOURCE",
			help: "k8s identity: where a pod's project comes from: label (--k8s-project-label) or namespace",
			set:  text(func(c *Config) *string { return &c.K8sProjectFrom })},
		{flag: "k8s-project-label", env: "KV_K8S_PROJECT_LABEL", def: identity.DefaultK8sProjectLabel, arg: "LABEL",
			help: "k8s identity: the pod label naming the project; a pod without it is refused",
			set:  text(func(c *Config) *string { return &c.K8sProjectLabel })},
		{flag: "kubeconfig", env: "KV_KUBECONFIG", arg: "FILE",
			defDoc: "the pod's service account",
			help:   "k8s identity: kubeconfig file for the API server; when not given, the pod's service account (in-cluster)",
			set:    text(func(c *Config) *string { return &c.Kubeconfig })},
		{flag: "system-project", env: "KV_SYSTEM_PROJECT", def: sidecar.DefaultSystemProject, arg: "NAME",
			help: "project that is refused key-value access",
			set:  text(func(c *Config) *string { return &c.Server.SystemProject })},
		{flag: "default-quota", env: "KV_DEFAULT_QUOTA", arg: "SIZE",
			defDoc: "stored value, `" + formatSize(store.DefaultQuota) + "` until set",
			help:   "storage quota of a project without an override: bytes, or a size such as 512MiB or 1GB. It is stored, so every daemon sharing the store agrees; when not given, the stored value stays in force (" + formatSize(store.DefaultQuota) + " until set)",
			set:    size(func(c *Config) *int64 { return &c.DefaultQuota })},
		{flag: "max-key-bytes", env: "KV_MAX_KEY_BYTES", def: formatSize(store.DefaultMaxKeyBytes), arg: "SIZE",
			help: fmt.Sprintf("longest key (at most %d with PostgreSQL)", postgres.MaxKeyBytes),
			set:  sizeInt(func(c *Config) *int { return &c.Server.Limits.MaxKeyBytes })},
		{flag: "max-value-bytes", env: "KV_MAX_VALUE_BYTES", def: formatSize(store.DefaultMaxValueBytes), arg: "SIZE",
			help: "largest value",
			set:  sizeInt(func(c *Config) *int { return &c.Server.Limits.MaxValueBytes })},
		{flag: "max-conns", env: "KV_MAX_CONNS", def: strconv.Itoa(sidecar.DefaultMaxConns), arg: "N",
			help: "most open connections; further callers are refused with busy",
			set:  count(func(c *Config) *int { return &c.Server.MaxConns })},
		{flag: "max-conns-per-project", env: "KV_MAX_CONNS_PER_PROJECT", arg: "N",
			defDoc: "`--max-conns` / 4; `--max-conns` with `--identity static`",
			help:   "most open connections of one project; its further callers are refused with busy; 0 means a quarter of --max-conns, or all of them with --identity static (one project is every caller)",
			set:    count(func(c *Config) *int { return &c.Server.MaxConnsPerProject })},
		{flag: "hello-timeout", env: "KV_HELLO_TIMEOUT", def: sidecar.DefaultHelloTimeout.String(), arg: "DURATION",
			help: "a connection that has not sent its hello after this long is closed",
			set:  duration(func(c *Config) *time.Duration { return &c.Server.HelloTimeout })},
		{flag: "write-timeout", env: "KV_WRITE_TIMEOUT", def: sidecar.DefaultWriteTimeout.String(), arg: "DURATION",
			help: "a connection whose peer does not take its responses for this long, or takes longer to send a frame it has begun, is closed, and what it held released",
			set:  duration(func(c *Config) *time.Duration { return &c.Server.WriteTimeout })},
		{flag: "max-inflight", env: "KV_MAX_INFLIGHT", def: strconv.Itoa(sidecar.DefaultMaxInflight), arg: "N",
			help: "requests of one connection read ahead of their responses",
			set:  count(func(c *Config) *int { return &c.Server.MaxInflight })},
		{flag: "max-inflight-bytes", env: "KV_MAX_INFLIGHT_BYTES", def: formatSize(sidecar.DefaultMaxInflightBytes), arg: "SIZE",
			help: "bytes of requests and of the responses reserved for them, held across all connections before reading pauses",
			set:  size(func(c *Config) *int64 { return &c.Server.MaxInflightBytes })},
		{flag: "project-inflight-share", env: "KV_PROJECT_INFLIGHT_SHARE", arg: "SHARE",
			defDoc: "`" + strconv.FormatFloat(sidecar.DefaultProjectInflightShare, 'g', -1, 64) + "`; `1` with `--identity static`",
			help:   "share of --max-inflight-bytes the connections of one project may hold together, above 0 and at most 1; 0 means " + strconv.FormatFloat(sidecar.DefaultProjectInflightShare, 'g', -1, 64) + ", or 1 with --identity static (one project is every caller)",
			set:    share(func(c *Config) *float64 { return &c.Server.ProjectInflightShare })},
		{flag: "max-conn-inflight-bytes", env: "KV_MAX_CONN_INFLIGHT_BYTES", arg: "SIZE",
			defDoc: "`" + formatSize(sidecar.DefaultConnInflightBytes) + "`, or more to hold one largest frame and twice `--max-response-bytes`",
			help:   "bytes of requests and reserved responses one connection may hold before its reading pauses; 0 means " + formatSize(sidecar.DefaultConnInflightBytes) + ", or one largest frame plus twice --max-response-bytes when that is more",
			set:    size(func(c *Config) *int64 { return &c.Server.MaxConnInflightBytes })},
		{flag: "max-frame-bytes", env: "KV_MAX_FRAME_BYTES", arg: "SIZE",
			defDoc: "max value + 64KiB, ≥ 2MiB",
			help:   "largest request frame; 0 means the max value size plus 64KiB, at least 2MiB",
			set:    sizeInt(func(c *Config) *int { return &c.Server.MaxFrameBytes })},
		{flag: "max-response-bytes", env: "KV_MAX_RESPONSE_BYTES", arg: "SIZE",
			defDoc: "`--max-frame-bytes`",
			help:   "largest response payload, announced to clients as max_response: a getMany over it fails with response_too_large (the clients split it), a list page ends early; 0 means --max-frame-bytes",
			set:    sizeInt(func(c *Config) *int { return &c.Server.MaxResponseBytes })},
		{flag: "request-timeout", env: "KV_REQUEST_TIMEOUT", def: sidecar.DefaultRequestTimeout.String(), arg: "DURATION",
			help: "limit on the work for one request",
			set:  duration(func(c *Config) *time.Duration { return &c.Server.RequestTimeout })},
		{flag: "shutdown-timeout", env: "KV_SHUTDOWN_TIMEOUT", def: sidecar.DefaultShutdownTimeout.String(), arg: "DURATION",
			help: "how long a stop waits for requests in flight",
			set:  duration(func(c *Config) *time.Duration { return &c.Server.ShutdownTimeout })},
		{flag: "admin-addr", env: "KV_ADMIN_ADDR", arg: "ADDR", defDoc: "off",
			help: "address of the admin API and page (/admin/), such as 127.0.0.1:9480; needs --admin-tokens; empty: off",
			set:  text(func(c *Config) *string { return &c.AdminAddr })},
		{flag: "admin-tokens", env: "KV_ADMIN_TOKENS", arg: "FILE",
			help: "the admin API's tokens: lines \"sha256:<hex> ROLE\", ROLE admin or project:NAME (kvctl token new ROLE prints one); re-read on SIGHUP",
			set:  text(func(c *Config) *string { return &c.AdminTokens })},
		{flag: "admin-usage-interval", env: "KV_ADMIN_USAGE_INTERVAL", def: admin.DefaultUsageInterval.String(), arg: "DURATION",
			help: "how often an instance with --admin-addr refreshes the per-project usage gauges on /metrics",
			set:  duration(func(c *Config) *time.Duration { return &c.AdminUsageInterval })},
		{flag: "metrics-addr", env: "KV_METRICS_ADDR", def: DefaultMetricsAddr, arg: "ADDR",
			help: "address for /metrics, /healthz and /readyz; empty disables",
			set:  text(func(c *Config) *string { return &c.MetricsAddr })},
		{flag: "pprof", env: "KV_PPROF", def: "false",
			help: "serve net/http/pprof under /debug/pprof/ on the metrics address",
			set:  boolean(func(c *Config) *bool { return &c.Pprof })},
		{flag: "log-level", env: "KV_LOG_LEVEL", def: DefaultLogLevel, arg: "LEVEL",
			help: "debug, info, warn or error",
			set:  text(func(c *Config) *string { return &c.LogLevel })},
		{flag: "log-format", env: "KV_LOG_FORMAT", def: DefaultLogFormat, arg: "FORMAT",
			help: "json or console",
			set:  text(func(c *Config) *string { return &c.LogFormat })},
	}
}

// ErrVersion is returned by LoadConfig when --version is given: the
// command prints its version and exits.
var ErrVersion = errors.New("version requested")

// LoadConfig builds a Config from command-line arguments and environment
// variables (lookupEnv is os.LookupEnv in production): each setting takes
// its default, then its variable if set (even to ""), then its flag if
// given. It returns flag.ErrHelp after printing help to out when -h or
// --help is given, and ErrVersion for --version. Any other error is
// returned, not printed: it is one line for the caller to show.
func LoadConfig(args []string, lookupEnv func(string) (string, bool), out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("kvsidecar", flag.ContinueOnError)
	// The flag package prints a parse error and the whole help; the error
	// is returned instead, and the help printed only when asked for.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var envErr error
	for _, s := range settings() {
		if s.def != "" {
			if err := s.set(&c, s.def); err != nil {
				return Config{}, fmt.Errorf("the default of --%s, %q: %w", s.flag, s.def, err) // a bug in the table
			}
		}
		if v, ok := lookupEnv(s.env); ok && envErr == nil {
			if err := s.set(&c, v); err != nil {
				envErr = fmt.Errorf("$%s: %w", s.env, err)
			}
		}
		set := func(v string) error { return s.set(&c, v) }
		if s.arg == "" {
			fs.BoolFunc(s.flag, s.help, set)
		} else {
			fs.Func(s.flag, s.help, set)
		}
	}
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(out)
			return Config{}, err
		}
		return Config{}, fmt.Errorf("%w (see --help)", err)
	}
	if *version {
		return Config{}, ErrVersion
	}
	// --socket '' asks for no socket. Only the flag does: an empty
	// KV_SOCKET, easily left empty by accident, means the default.
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "socket" && c.Server.Socket == "" {
			c.NoSocket = true
		}
	})
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (all settings are flags; see --help)", fs.Arg(0))
	}
	if envErr != nil {
		return Config{}, envErr
	}
	c = c.WithDefaults()
	return c, c.Validate()
}

const usageHeader = `kvsidecar serves a project-scoped, persistent key-value store to the
processes on this machine over a Unix socket. Each caller's project is
resolved from the socket's peer credentials: give --project for one project
(the pod-sidecar shape) or --uid-map to map uids to projects (one daemon per
node). Data lives in PostgreSQL with --postgres, else in an embedded store
under --data-dir.

Signals: SIGTERM or SIGINT stop it after requests in flight finish (a
second one stops it at once); SIGHUP re-reads the --uid-map file and the
--admin-tokens file.

Every flag can also be set by the environment variable named in its help;
a flag on the command line wins.

Usage: kvsidecar [flags]

`

// printUsage writes --help: the header, then every setting with its
// variable and default.
func printUsage(w io.Writer) {
	fmt.Fprint(w, usageHeader)
	for _, s := range settings() {
		name := "--" + s.flag
		if s.arg != "" {
			name += " " + s.arg
		}
		def := s.def
		if def == "" {
			def = strings.ReplaceAll(s.defDoc, "`", "")
		}
		fmt.Fprintf(w, "  %s\n    \t%s\n    \t(env %s", name, s.help, s.env)
		if def != "" {
			fmt.Fprintf(w, "; default %s", def)
		}
		fmt.Fprint(w, ")\n")
	}
	fmt.Fprint(w, "  --version\n    \tprint the version and exit\n  --help\n    \tprint this help and exit\n")
}

// The parsers of the settings, shared by their flags, variables and
// defaults. Each takes a function that picks its field of a Config. An
// empty value sets the zero value, which stands for the field's default
// (for --metrics-addr, "off").

func text(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		*field(c) = v
		return nil
	}
}

// count parses a number of things (connections, requests).
func count(field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "" {
			*field(c) = 0
			return nil
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return fmt.Errorf("bad number %q: want a whole number, 0 or more", v)
		}
		*field(c) = n
		return nil
	}
}

// size parses a byte count (ParseSize).
func size(field func(*Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "" {
			*field(c) = 0
			return nil
		}
		n, err := ParseSize(v)
		if err != nil {
			return err
		}
		*field(c) = n
		return nil
	}
}

// sizeInt parses a byte count that a Config holds as an int.
func sizeInt(field func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		var n int64
		if err := size(func(*Config) *int64 { return &n })(c, v); err != nil {
			return err
		}
		if n > math.MaxInt32 {
			return fmt.Errorf("bad size %q: at most %s", v, formatSize(math.MaxInt32))
		}
		*field(c) = int(n)
		return nil
	}
}

// reserveSize parses a size of which 0 means none, held as a negative
// number in Config (whose zero value means the default).
func reserveSize(field func(*Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		var n int64
		if err := size(func(*Config) *int64 { return &n })(c, v); err != nil {
			return err
		}
		if n == 0 && strings.TrimSpace(v) != "" {
			n = -1
		}
		*field(c) = n
		return nil
	}
}

// share parses a share of something: a fraction above 0 and at most 1,
// such as 0.25, or a percentage such as 25%.
func share(field func(*Config) *float64) func(*Config, string) error {
	return func(c *Config, v string) error {
		t := strings.TrimSpace(v)
		if t == "" {
			*field(c) = 0
			return nil
		}
		pct := strings.HasSuffix(t, "%")
		f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(t, "%")), 64)
		if pct {
			f /= 100
		}
		if err != nil || !(f > 0 && f <= 1) {
			return fmt.Errorf("bad share %q: want a number above 0 and at most 1, such as 0.25, or a percentage such as 25%%", v)
		}
		*field(c) = f
		return nil
	}
}

func duration(field func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "" {
			*field(c) = 0
			return nil
		}
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 {
			return fmt.Errorf("bad duration %q: want a duration such as 500ms, 10s or 1m", v)
		}
		*field(c) = d
		return nil
	}
}

func boolean(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "" {
			*field(c) = false
			return nil
		}
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("bad switch %q: want true or false", v)
		}
		*field(c) = b
		return nil
	}
}

func fileMode(field func(*Config) *os.FileMode) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "" {
			*field(c) = 0
			return nil
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
		if err != nil || n > 0o777 {
			return fmt.Errorf("bad mode %q: want octal permissions such as 0660", v)
		}
		*field(c) = os.FileMode(n)
		return nil
	}
}

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

// formatSize writes n in the largest binary unit that divides it exactly,
// as ParseSize reads it back: 1GiB, 64KiB, 1000.
func formatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}
