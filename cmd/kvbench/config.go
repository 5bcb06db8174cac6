package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Defaults of Config: the load of the product's performance targets.
const (
	// DefaultWorkloads are all the workloads, in the order they run.
	DefaultWorkloads = "set,get,mixed"
	// DefaultConcurrency is one sequential caller (latency) and 64
	// concurrent ones (throughput), the two loads the targets are set at.
	DefaultConcurrency = "1,64"
	// DefaultDuration is the measured time of one run: long enough for
	// tens of thousands of operations at c=64, short enough that the
	// standard set (3 workloads × 2 loads × daemon and baseline) takes
	// about a minute.
	DefaultDuration = 5 * time.Second
	// DefaultWarmup runs before each measured run and is not counted: the
	// baseline pool opens and prepares its statements, the daemon's
	// batches reach their steady size, the Go runtimes grow their heaps.
	DefaultWarmup = 1 * time.Second
	// DefaultValueSize is the size of the JSON values written: the ~100
	// bytes of the targets.
	DefaultValueSize = 100
	// DefaultKeys is the number of distinct keys: large enough that 64
	// callers rarely write the same key at once, small enough to be
	// written in well under a second before the runs.
	DefaultKeys = 10000
	// DefaultSeed makes key and operation choices repeatable.
	DefaultSeed = 1
	// DefaultClients is one client, which pipelines every caller's
	// requests over one connection: how a function process uses it.
	DefaultClients = 1
	// DefaultBaselineProject names the baseline's rows in kv_entries. It
	// must not be the daemon's project, whose usage row the baseline does
	// not maintain.
	DefaultBaselineProject = "kvbench-baseline"
	// DefaultOpTimeout is how long a run waits past its end for the answers
	// in flight; an operation unanswered by then fails the run instead of
	// hanging it. Far above any healthy latency, far below "forever".
	DefaultOpTimeout = 10 * time.Second
	// DefaultKeyPrefix starts every key the tool writes, so its keys are
	// easy to tell from a project's own.
	DefaultKeyPrefix = "kvbench:"

	// Defaults of the noisy workload's flood (project A).
	//
	// DefaultFloodUID is the uid the flood runs under: nobody's on Debian
	// and most distributions, a uid no service owns.
	DefaultFloodUID = 65534
	// DefaultFloodConns is the flood's number of connections, one caller
	// each: "many", an eighth of the daemon's default --max-conns, and
	// within the default per-project connection cap of a quarter.
	DefaultFloodConns = 32
	// DefaultFloodBatch is the number of keys of each setMany and getMany
	// of the flood.
	DefaultFloodBatch = 64
	// DefaultFloodValueSize is the size of the flood's values: with
	// DefaultFloodBatch, 256 KiB per request, a big batch but far from the
	// daemon's default frame limit (2 MiB).
	DefaultFloodValueSize = 4096

	// Bounds of the flags, so that every invocation ends by itself in a
	// known time and memory.
	maxDuration    = 10 * time.Minute
	maxConcurrency = 4096
	maxKeys        = 10_000_000
	maxClients     = 256
	maxFloodConns  = 1024
	// minValueSize is the smallest JSON value of a given size: "".
	minValueSize = 2
)

// Config is what one invocation of kvbench does. Flags fill it in
// parseFlags, the one place that reads them.
type Config struct {
	// Socket is the daemon's socket; "" means $KV_SOCKET, else the client's
	// default.
	Socket string
	// Workloads run in this order, each at every Concurrency.
	Workloads []Workload
	// Concurrency lists the numbers of concurrent callers.
	Concurrency []int
	// Duration is the measured time of each run; Warmup precedes it.
	Duration, Warmup time.Duration
	// ValueSize is the size in bytes of every value written.
	ValueSize int
	// Keys is the number of distinct keys; every key is written before the
	// first run, so gets always find their key.
	Keys int
	// Seed seeds the choice of keys and operations of every caller.
	Seed uint64
	// Clients is the number of clients (each with its own connection) the
	// callers share, round-robin.
	Clients int
	// Baseline is the DSN of the PostgreSQL database the daemon uses; ""
	// runs no baseline.
	Baseline string
	// BaselineProject is the project of the baseline's rows.
	BaselineProject string
	// DaemonPID is the pid whose RSS and CPU are measured; 0 asks the
	// kernel for the daemon's pid through the socket (SO_PEERCRED), -1
	// measures neither.
	DaemonPID int
	// OpTimeout is how long a run waits past its end for the answers in
	// flight.
	OpTimeout time.Duration
	// Keep leaves the keys written in place at the end instead of deleting
	// them.
	Keep bool
	// CPUProfile, if set, is the file that receives a CPU profile of
	// kvbench itself over all runs: to check that the load generator is not
	// what limits a result.
	CPUProfile string
	// Redis, if set, is the URL of a Redis server (unix:///path or
	// redis://host:port) that every run is repeated on, after the daemon
	// and the baseline.
	Redis string
	// JSON, if set, is the file that receives every row as JSON.
	JSON string
	// Flood is the flooding project A of the noisy workload.
	Flood FloodConfig
}

// FloodConfig is the load of the noisy workload's flooding project: a child
// process of kvbench under another uid, so that the daemon sees it as
// another project, with Conns connections each calling setMany and getMany
// of Batch keys of ValueSize bytes back to back, alternately.
type FloodConfig struct {
	// UID is the uid (and gid) of the child process. The daemon's uid map
	// must map it to a project other than kvbench's.
	UID int
	// Conns is the number of connections, one caller each.
	Conns int
	// Batch is the number of keys of each setMany and getMany.
	Batch int
	// ValueSize is the size of each value written.
	ValueSize int
}

// Workload is the mix of operations of a run.
type Workload string

// The workloads.
const (
	WorkloadSet   Workload = "set"
	WorkloadGet   Workload = "get"
	WorkloadMixed Workload = "mixed" // mixedGetPercent gets, the rest sets
	// WorkloadNoisy measures project B's (kvbench's) gets and sets alone,
	// then while project A (FloodConfig) floods the same daemon.
	WorkloadNoisy Workload = "noisy"
)

// mixedGetPercent is the share of gets in the mixed workload: reads
// dominate a typical cache-and-session KV.
const mixedGetPercent = 80

const usageText = `kvbench drives a running kvsidecar daemon through the Go client and reports
throughput, latency and CPU per operation, optionally next to a naive
baseline on the same PostgreSQL database and next to Redis.

Workloads: set (every operation writes), get (every operation reads a key
written before the run, so every get finds it), mixed (%d%% get, the rest
set), noisy (see below). Each workload runs at each --concurrency: that many
goroutines call sequentially, as fast as answers come, for --warmup (not
counted) and then --duration (measured); only operations that start and end
inside the measured window count. Keys are drawn uniformly from --keys keys
by a seeded generator per caller, so runs are repeatable. Values are JSON
objects of --value-size bytes sent as they are (SetBytes/GetBytes: no JSON
encoding in the load generator). Latency percentiles come from a histogram
precise to 1.6%%.

With --baseline DSN (the daemon's own PostgreSQL database) every run is
repeated right after, at the same concurrency, against the naive design: one
SQL statement per request through a pgx pool of one connection per caller,
on the daemon's schema (kv_entries), under the project --baseline-project:
  set: INSERT ... ON CONFLICT (project, key) DO UPDATE
  get: SELECT value FROM kv_entries WHERE project=$1 AND key=$2 AND
       (expires_at IS NULL OR expires_at > now())
The baseline keeps no usage row and checks no quota, so it does less work
than the daemon: the ratio is conservative.

With --redis URL every run is repeated once more on a Redis server (the
peer a user would pick instead): the same keys and values through go-redis,
SET and GET, a pool of one connection per caller. Start it durable to
compare like with like: redis-server --appendonly yes --appendfsync always.

CPU per operation: over each run's measured window, the user plus system
time of every process taking part, divided by the operations counted. The
daemon and Redis from /proc/<pid>/stat (their pids from the kernel through
their sockets, SO_PEERCRED); PostgreSQL (with --baseline) summed over the
backends of the --baseline database (pg_stat_activity, then /proc; the
server's background processes, shared by every database, are left out);
kvbench itself from getrusage. Kernel time spent for a process (socket I/O,
fsync) counts as its own.

The noisy workload measures fairness between projects. kvbench's own
project (B) runs get and then set alone ("quiet"), then again while a
child process of kvbench running as --flood-uid (project A) floods the same
daemon: --flood-conns connections, each calling setMany and getMany of
--flood-batch values of --flood-value-size bytes, alternately, back to back.
The daemon must map the two uids to two projects (--uid-map); switching
uid needs root. The table shows B's p50 and p99 in both phases and their
ratio (flood ÷ quiet), and the daemon's peak RSS during the flood. It runs
after every other workload, so that the flood's writes do not change the
store the others measure; CPU is measured in the quiet phase only (during
the flood it is mostly the flood's).

The daemon's resident memory (VmRSS) is read from /proc: idle before the
first run, and sampled during every run. Its pid comes from --daemon-pid, or
else from the kernel through the socket (SO_PEERCRED).

At the end the keys written are deleted (daemon, Redis) and the baseline's
rows removed, unless --keep. Output: tables on stdout (--json FILE also
writes every row as JSON); progress on stderr.

Usage: kvbench [flags]

`

// parseFlags turns the command line into a Config, or returns an error that
// names the flag at fault. --help prints the usage to out and returns
// flag.ErrHelp.
func parseFlags(args []string, out io.Writer) (Config, error) {
	cfg := Config{}
	fs := flag.NewFlagSet("kvbench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, usageText, mixedGetPercent)
		fs.PrintDefaults()
		fmt.Fprintf(out, "\nExample:\n  kvbench --socket /run/kvsidecar/kv.sock --baseline postgres://postgres@127.0.0.1/kv --concurrency 1,64\n")
	}
	var workloads, concurrency string
	fs.StringVar(&cfg.Socket, "socket", "", "path of the daemon's Unix socket (default $KV_SOCKET, else /run/kvsidecar/kv.sock)")
	fs.StringVar(&workloads, "workloads", DefaultWorkloads, "comma-separated workloads to run, in order: set, get, mixed, noisy (noisy runs last)")
	fs.StringVar(&concurrency, "concurrency", DefaultConcurrency, "comma-separated numbers of concurrent callers; each workload runs at each")
	fs.DurationVar(&cfg.Duration, "duration", DefaultDuration, "measured time of each run (at most "+maxDuration.String()+")")
	fs.DurationVar(&cfg.Warmup, "warmup", DefaultWarmup, "unmeasured time before each run")
	fs.IntVar(&cfg.ValueSize, "value-size", DefaultValueSize, "size of each value in bytes: a JSON object, or a JSON string when too small for one (at least 2)")
	fs.IntVar(&cfg.Keys, "keys", DefaultKeys, "number of distinct keys, all written before the first run")
	fs.Uint64Var(&cfg.Seed, "seed", DefaultSeed, "seed of the key and operation choices")
	fs.IntVar(&cfg.Clients, "clients", DefaultClients, "number of clients (one connection each) the callers share; one pipelines all callers")
	fs.StringVar(&cfg.Baseline, "baseline", "", "DSN of the daemon's PostgreSQL database: also run the naive one-statement-per-request baseline there")
	fs.StringVar(&cfg.BaselineProject, "baseline-project", DefaultBaselineProject, "project of the baseline's rows; must differ from the daemon's project")
	fs.IntVar(&cfg.DaemonPID, "daemon-pid", 0, "pid of the daemon, for its RSS and CPU; 0 asks the kernel through the socket, -1 measures neither")
	fs.DurationVar(&cfg.OpTimeout, "op-timeout", DefaultOpTimeout, "how long a run waits past its end for answers in flight; an operation still unanswered then fails the run")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the keys written (and the baseline's rows) at the end")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of kvbench itself (all runs) to this file")
	fs.StringVar(&cfg.Redis, "redis", "", "URL of a Redis server, unix:///path/to/redis.sock or redis://host:port: also run every workload there")
	fs.StringVar(&cfg.JSON, "json", "", "also write every row to this file as JSON: [{workload, callers, target, ops_per_s, p50_us, p99_us, cpu_us_per_op: {daemon, postgres, loadgen, redis}}], null where not measured; the noisy workload's rows are noisy-get and noisy-set with a phase, quiet or flood")
	fs.IntVar(&cfg.Flood.UID, "flood-uid", DefaultFloodUID, "noisy workload: uid (and gid) of the flooding child process; the daemon must map it to another project")
	fs.IntVar(&cfg.Flood.Conns, "flood-conns", DefaultFloodConns, "noisy workload: connections of the flood, one caller each")
	fs.IntVar(&cfg.Flood.Batch, "flood-batch", DefaultFloodBatch, "noisy workload: keys per setMany and getMany of the flood")
	fs.IntVar(&cfg.Flood.ValueSize, "flood-value-size", DefaultFloodValueSize, "noisy workload: size in bytes of the flood's values")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: kvbench takes only flags (see --help)", fs.Arg(0))
	}
	var err error
	if cfg.Workloads, err = parseWorkloads(workloads); err != nil {
		return cfg, fmt.Errorf("--workloads: %w", err)
	}
	if cfg.Concurrency, err = parseConcurrency(concurrency); err != nil {
		return cfg, fmt.Errorf("--concurrency: %w", err)
	}
	return cfg, cfg.validate()
}

// validate checks the bounds of every numeric field.
func (c *Config) validate() error {
	switch {
	case c.Duration <= 0 || c.Duration > maxDuration:
		return fmt.Errorf("--duration %v: must be above 0 and at most %v", c.Duration, maxDuration)
	case c.Warmup < 0 || c.Warmup > maxDuration:
		return fmt.Errorf("--warmup %v: must be at least 0 and at most %v", c.Warmup, maxDuration)
	case c.ValueSize < minValueSize:
		return fmt.Errorf("--value-size %d: must be at least %d (the JSON value \"\")", c.ValueSize, minValueSize)
	case c.Keys < 1 || c.Keys > maxKeys:
		return fmt.Errorf("--keys %d: must be from 1 to %d", c.Keys, maxKeys)
	case c.Clients < 1 || c.Clients > maxClients:
		return fmt.Errorf("--clients %d: must be from 1 to %d", c.Clients, maxClients)
	case c.OpTimeout <= 0:
		return fmt.Errorf("--op-timeout %v: must be above 0", c.OpTimeout)
	case c.DaemonPID < -1:
		return fmt.Errorf("--daemon-pid %d: must be a pid, 0 (ask the kernel) or -1 (neither RSS nor CPU)", c.DaemonPID)
	case c.Baseline != "" && c.BaselineProject == "":
		return errors.New("--baseline-project is empty")
	case c.Flood.UID < 0:
		return fmt.Errorf("--flood-uid %d: must be a uid", c.Flood.UID)
	case c.Flood.Conns < 1 || c.Flood.Conns > maxFloodConns:
		return fmt.Errorf("--flood-conns %d: must be from 1 to %d", c.Flood.Conns, maxFloodConns)
	case c.Flood.Batch < 1:
		return fmt.Errorf("--flood-batch %d: must be at least 1", c.Flood.Batch)
	case c.Flood.ValueSize < minValueSize:
		return fmt.Errorf("--flood-value-size %d: must be at least %d", c.Flood.ValueSize, minValueSize)
	}
	if c.Redis != "" {
		if _, err := parseRedisURL(c.Redis); err != nil {
			return err
		}
	}
	return nil
}

// parseWorkloads parses a comma-separated list of workload names.
func parseWorkloads(s string) ([]Workload, error) {
	var ws []Workload
	for f := range strings.SplitSeq(s, ",") {
		w := Workload(strings.TrimSpace(f))
		switch w {
		case WorkloadSet, WorkloadGet, WorkloadMixed, WorkloadNoisy:
		case "":
			return nil, fmt.Errorf("empty workload in %q", s)
		default:
			return nil, fmt.Errorf("unknown workload %q: want set, get, mixed or noisy", w)
		}
		for _, have := range ws {
			if have == w {
				return nil, fmt.Errorf("workload %q given twice", w)
			}
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// parseConcurrency parses a comma-separated list of caller counts.
func parseConcurrency(s string) ([]int, error) {
	var cs []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number of callers", f)
		}
		if n < 1 || n > maxConcurrency {
			return nil, fmt.Errorf("%d callers: must be from 1 to %d", n, maxConcurrency)
		}
		cs = append(cs, n)
	}
	return cs, nil
}
