package daemon

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/kvsidecar/kvsidecar/admin"
	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/sidecar/identity"
	"github.com/kvsidecar/kvsidecar/store"
)

// Defaults of Config that are not the socket server's (those are
// sidecar.Default*) nor a backend's.
const (
	DefaultDataDir     = "/var/lib/kvsidecar"
	DefaultMetricsAddr = "127.0.0.1:9477" // loopback: metrics name projects, and are for this node's scraper, not every network peer
	DefaultLogLevel    = "info"
	DefaultLogFormat   = "json"
)

// The identity sources of --identity.
const (
	// IdentityStatic maps every caller to Config.Project: the pod-sidecar
	// shape.
	IdentityStatic = "static"
	// IdentityUIDMap maps callers' uids to projects through the file
	// Config.UIDMap, re-read on SIGHUP: one daemon per node.
	IdentityUIDMap = "uidmap"
	// IdentityK8s maps a caller's pid to its Kubernetes pod, found in a
	// watch of this node's pods, and the pod to its project label or
	// namespace: one daemon per node, serving every pod on it.
	IdentityK8s = "k8s"
)

// Config is the whole configuration of the daemon. LoadConfig fills it from
// flags and environment variables (the settings table); zero fields take
// the defaults (WithDefaults), except MetricsAddr, whose zero value turns
// the HTTP listener off.
type Config struct {
	// Server is the socket server's configuration: socket, limits,
	// timeouts.
	Server sidecar.Config

	// Identity chooses how callers are mapped to projects: IdentityStatic,
	// IdentityUIDMap or IdentityK8s. "" infers it: static when Project is
	// set, uidmap when UIDMap is.
	Identity string
	// Project is the project of every caller (static identity).
	Project string
	// UIDMap is the file mapping caller uids to projects (uidmap identity).
	UIDMap string
	// K8sNodeName is the node whose pods the k8s identity serves: NODE_NAME,
	// which the Downward API sets from spec.nodeName.
	K8sNodeName string
	// K8sProjectFrom is where the k8s identity takes a pod's project from:
	// identity.ProjectFromLabel (the default) or ProjectFromNamespace.
	K8sProjectFrom string
	// K8sProjectLabel is the pod label naming the project, with
	// ProjectFromLabel. Default identity.DefaultK8sProjectLabel.
	K8sProjectLabel string
	// Kubeconfig is a kubeconfig file for reaching the API server; "" uses
	// the pod's service account (in-cluster).
	Kubeconfig string

	// DataDir is the directory of the embedded store (kv/), used when
	// Postgres is empty. Default DefaultDataDir.
	DataDir string
	// Postgres is a PostgreSQL connection string; when set, the daemon uses
	// PostgreSQL instead of the embedded store. It may hold a password: it
	// is never logged.
	Postgres string
	// PostgresMaxConns is the size of the PostgreSQL connection pool; 0
	// takes pool_max_conns from the DSN, else the backend's default.
	PostgresMaxConns int
	// PostgresStatementTimeout bounds each SQL statement; 0 takes the
	// backend's default.
	PostgresStatementTimeout time.Duration
	// PostgresLeases lets the PostgreSQL store's committers take quota
	// leases (postgres.Config.Leases), so that a project's write
	// transactions overlap; off by default.
	PostgresLeases bool
	// PostgresSecondReadRound lets the PostgreSQL store send a second read
	// round while one is in flight once this many reads wait
	// (postgres.Config.SecondReadRound); 0, the default, keeps one.
	PostgresSecondReadRound int
	// DiskReserve is the space in bytes the embedded store keeps allocated
	// next to its directory so that deletes work on a full disk
	// (pebble.Config.DiskReserve): 0 means pebble.DefaultDiskReserve, < 0 keeps
	// none.
	DiskReserve int64
	// ProjectQueueShare is the share, in (0, 1], of the store's write
	// queue (and of PostgreSQL's read queue) that one project's waiting
	// calls may take (pebble.Config.ProjectQueueShare,
	// postgres.Config.ProjectQueueShare). 0 means the backend's default, a
	// quarter, or 1 with the static identity (WithDefaults).
	ProjectQueueShare float64
	// DefaultQuota, when > 0, sets the storage quota of projects without an
	// override, in bytes, and is stored so that every daemon sharing the
	// store agrees. 0 keeps the stored value (store.DefaultQuota, 1 GiB,
	// until someone sets another).
	DefaultQuota int64

	// NoSocket serves no function socket (--socket '' on the command
	// line; an empty KV_SOCKET means the default socket): an admin-only
	// instance, such as the one admin Deployment of a cluster on
	// PostgreSQL. It needs AdminAddr, and no identity source.
	NoSocket bool
	// AdminAddr is the address of the admin API and page (/admin/); ""
	// (the default) turns them off. Such an instance also exports the
	// per-project usage gauges.
	AdminAddr string
	// AdminTokens is the file of the admin API's tokens ("sha256:<hex>
	// ROLE" lines), re-read on SIGHUP. Required with AdminAddr.
	AdminTokens string
	// AdminUsageInterval is how often the per-project usage gauges are
	// refreshed. Default admin.DefaultUsageInterval.
	AdminUsageInterval time.Duration

	// MetricsAddr is the address of the HTTP server for /metrics, /healthz
	// and /readyz; "" disables it (LoadConfig defaults it to
	// DefaultMetricsAddr).
	MetricsAddr string
	// Pprof exposes net/http/pprof under /debug/pprof/ on MetricsAddr.
	Pprof bool

	// LogLevel is one of debug, info, warn, error. Default info.
	LogLevel string
	// LogFormat is json or console. Default json.
	LogFormat string
}

// WithDefaults returns c with zero fields set to their defaults. With the
// static identity every caller is one project, so that project's shares of
// the connections, of the in-flight budget and of the store's queues
// default to the whole.
func (c Config) WithDefaults() Config {
	if id, err := c.identity(); err == nil && id == IdentityStatic {
		if c.Server.ProjectInflightShare == 0 {
			c.Server.ProjectInflightShare = 1
		}
		if c.ProjectQueueShare == 0 {
			c.ProjectQueueShare = 1
		}
		if c.Server.MaxConnsPerProject == 0 {
			c.Server.MaxConnsPerProject = c.Server.WithDefaults().MaxConns
		}
	}
	c.Server = c.Server.WithDefaults()
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.LogFormat == "" {
		c.LogFormat = DefaultLogFormat
	}
	if c.AdminUsageInterval <= 0 {
		c.AdminUsageInterval = admin.DefaultUsageInterval
	}
	return c
}

// ErrNoIdentity is returned when no identity source is given.
var ErrNoIdentity = errors.New("no identity source: give --project NAME (every caller belongs to that project; env KV_PROJECT) or --uid-map FILE (callers' uids map to projects; env KV_UID_MAP)")

// Validate checks a Config that has its defaults applied.
func (c Config) Validate() error {
	switch {
	case c.NoSocket && c.AdminAddr == "":
		return errors.New("--socket '' serves no function socket, and without --admin-addr there is nothing to serve")
	case c.AdminAddr != "" && c.AdminTokens == "":
		return errors.New("--admin-addr needs --admin-tokens FILE (env KV_ADMIN_TOKENS): the admin API serves no one without tokens (kvctl token new ROLE makes one)")
	}
	if !c.NoSocket {
		if _, err := c.identity(); err != nil {
			return err
		}
	}
	switch {
	case c.Project != "" && c.Project == c.Server.SystemProject:
		return fmt.Errorf("--project %q is the system project, which has no key-value access", c.Project)
	case c.DefaultQuota < 0:
		return errors.New("--default-quota must not be negative")
	case c.PostgresMaxConns < 0:
		return errors.New("--postgres-max-conns must not be negative")
	case c.ProjectQueueShare < 0 || c.ProjectQueueShare > 1:
		return fmt.Errorf("--project-queue-share %g: want more than 0%% and at most 100%%", c.ProjectQueueShare*100)
	case c.LogFormat != "json" && c.LogFormat != "console":
		return fmt.Errorf("--log-format %q: want json or console", c.LogFormat)
	}
	if _, err := zapcore.ParseLevel(c.LogLevel); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.Project != "" {
		if err := store.CheckProject(c.Project); err != nil {
			return fmt.Errorf("--project: %w", err)
		}
	}
	return c.Server.Validate()
}

// identity returns the identity source in force: Identity, or the one
// Project or UIDMap implies. It refuses settings that contradict it.
func (c Config) identity() (string, error) {
	switch c.Identity {
	case "":
		switch {
		case c.Project != "" && c.UIDMap != "":
			return "", errors.New("both --project and --uid-map are given: choose one identity source")
		case c.Project != "":
			return IdentityStatic, nil
		case c.UIDMap != "":
			return IdentityUIDMap, nil
		}
		return "", ErrNoIdentity
	case IdentityStatic:
		if c.Project == "" {
			return "", errors.New("--identity static needs --project NAME (env KV_PROJECT): the project of every caller")
		}
		if c.UIDMap != "" {
			return "", errors.New("--identity static does not read --uid-map: give one of them")
		}
	case IdentityUIDMap:
		if c.UIDMap == "" {
			return "", errors.New("--identity uidmap needs --uid-map FILE (env KV_UID_MAP): the file mapping uids to projects")
		}
		if c.Project != "" {
			return "", errors.New("--identity uidmap does not read --project: give one of them")
		}
	case IdentityK8s:
		if c.Project != "" || c.UIDMap != "" {
			return "", errors.New("--identity k8s reads neither --project nor --uid-map: give one identity source")
		}
		if c.K8sNodeName == "" {
			return "", errors.New("--identity k8s needs the node's name: set NODE_NAME (in a pod, from the Downward API: fieldRef spec.nodeName) or --k8s-node-name")
		}
		if f := c.K8sProjectFrom; f != "" && f != identity.ProjectFromLabel && f != identity.ProjectFromNamespace {
			return "", fmt.Errorf("--k8s-project-from %q: want %s or %s", f, identity.ProjectFromLabel, identity.ProjectFromNamespace)
		}
	default:
		return "", fmt.Errorf("--identity %q: want %s, %s or %s", c.Identity, IdentityStatic, IdentityUIDMap, IdentityK8s)
	}
	return c.Identity, nil
}
