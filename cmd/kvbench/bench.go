package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
)

// row is one line of the table: a workload at a concurrency, on the daemon
// and, when asked, on the baseline and on Redis.
type row struct {
	workload Workload
	callers  int
	daemon   *result
	baseline *result // nil without --baseline
	redis    *result // nil without --redis
}

// noisyRow is one line of the noisy workload's table: project B's op at a
// concurrency, alone and during the flood.
type noisyRow struct {
	op           Workload // get or set
	callers      int
	quiet, flood *result
	floodStats   *floodReport // A's flood over both ops' runs at this concurrency
}

// report is everything the tables show.
type report struct {
	cfg          *Config
	socket       string
	project      string
	pid          int   // the daemon's pid; <= 0 when unknown
	idleRSS      int64 // bytes, before any load; 0 when unknown
	redisPID     int   // Redis's pid; <= 0 when unknown
	pgCPU        bool  // PostgreSQL's CPU is measured
	floodProject string
	floodBatch   int
	rows         []row
	noisy        []noisyRow
}

// bench runs cfg and writes the tables to out, progress to progress.
func bench(ctx context.Context, cfg *Config, out, progress io.Writer) error {
	// The flood child writes its errors to progress too, from a goroutine
	// of os/exec.
	progress = &lockedWriter{w: progress}
	logf := func(format string, args ...any) { fmt.Fprintf(progress, "kvbench: "+format+"\n", args...) }
	socket := socketPath(cfg.Socket)
	if slices.Contains(cfg.Workloads, WorkloadNoisy) {
		if err := canFlood(cfg); err != nil {
			return fmt.Errorf("noisy workload: %w", err)
		}
	}

	d, err := dialDaemon(ctx, socket, cfg.Clients)
	if err != nil {
		return err
	}
	defer d.close()
	rep := &report{cfg: cfg, socket: socket, project: d.clients[0].Project(), pid: cfg.DaemonPID}
	if cfg.Baseline != "" && rep.project == cfg.BaselineProject {
		return fmt.Errorf("--baseline-project %q is the daemon's project: the baseline's rows would corrupt its usage accounting; choose another", cfg.BaselineProject)
	}
	if lim := d.clients[0].Limits().MaxValue; lim > 0 && int64(cfg.ValueSize) > lim {
		return fmt.Errorf("--value-size %d: the daemon accepts values of at most %d bytes", cfg.ValueSize, lim)
	}

	if rep.pid == 0 {
		rep.pid, err = peerPID(ctx, socket)
		switch {
		case err != nil:
			logf("cannot learn the daemon's pid from the socket (%v); RSS and CPU not measured (give --daemon-pid)", err)
			rep.pid = -1
		case rep.pid == 0:
			logf("the daemon runs in a pid namespace this process cannot see; RSS and CPU not measured (give --daemon-pid)")
		}
	}
	if rep.pid > 0 {
		if rep.idleRSS, err = readRSS(rep.pid); err != nil {
			logf("cannot read the daemon's RSS (%v); RSS and CPU not measured", err)
			rep.pid = -1
		}
	}
	var pg *pgProcs
	if cfg.Baseline != "" {
		if pg, err = openPGProcs(ctx, cfg.Baseline); err != nil {
			logf("PostgreSQL's CPU not measured: %v", err)
		} else {
			defer pg.close()
			rep.pgCPU = true
		}
	}
	if cfg.Redis != "" {
		if rep.redisPID, err = redisPeerPID(ctx, cfg.Redis); err != nil || rep.redisPID == 0 {
			logf("Redis's CPU not measured: its pid is unknown (%v)", err)
			rep.redisPID = -1
		}
	}
	meters := meterSet{daemonPID: rep.pid, redisPID: rep.redisPID, pg: pg}

	l := newLoad(cfg)
	if err := prepare(ctx, cfg, l, d, logf); err != nil {
		return err
	}

	// Runs go by concurrency first, so that the low-load runs see the
	// daemon as it started; the table is by workload.
	for _, c := range cfg.Concurrency {
		if err := runConcurrency(ctx, cfg, l, d, meters, c, rep, logf); err != nil {
			return err
		}
	}
	// The flood last: its big writes must not change the store the other
	// runs measure.
	if slices.Contains(cfg.Workloads, WorkloadNoisy) {
		for _, c := range cfg.Concurrency {
			if err := runNoisy(ctx, cfg, l, d, meters, c, rep, progress, logf); err != nil {
				return fmt.Errorf("noisy c=%d: %w", c, err)
			}
		}
	}

	if !cfg.Keep {
		if err := cleanup(ctx, cfg, l, d, logf); err != nil {
			return err
		}
	}
	slices.SortStableFunc(rep.rows, func(a, b row) int {
		return slices.Index(cfg.Workloads, a.workload) - slices.Index(cfg.Workloads, b.workload)
	})
	slices.SortStableFunc(rep.noisy, func(a, b noisyRow) int {
		return strings.Compare(string(a.op), string(b.op))
	})
	if cfg.JSON != "" {
		if err := rep.writeJSON(cfg.JSON); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	rep.write(out)
	return nil
}

// meterSet makes the CPU meter of each kind of run.
type meterSet struct {
	daemonPID, redisPID int
	pg                  *pgProcs
}

// daemon measures a run on the daemon: the daemon, PostgreSQL behind it
// (when measured) and kvbench.
func (m meterSet) daemon() *cpuMeter { return &cpuMeter{daemonPID: m.daemonPID, pg: m.pg} }

// baseline measures a run on the baseline: PostgreSQL and kvbench.
func (m meterSet) baseline() *cpuMeter { return &cpuMeter{pg: m.pg} }

// redis measures a run on Redis: Redis and kvbench.
func (m meterSet) redis() *cpuMeter { return &cpuMeter{redisPID: m.redisPID} }

// runConcurrency runs every workload but noisy at c callers, on the daemon,
// then the baseline, then Redis.
func runConcurrency(ctx context.Context, cfg *Config, l *load, d *daemonTarget, m meterSet, c int, rep *report, logf func(string, ...any)) error {
	var err error
	var b *baseline
	if cfg.Baseline != "" {
		if b, err = openBaseline(ctx, cfg.Baseline, cfg.BaselineProject, c); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		defer b.close()
	}
	var r *redisTarget
	if cfg.Redis != "" {
		if r, err = openRedis(ctx, cfg.Redis, c); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		defer r.close()
	}
	for _, w := range cfg.Workloads {
		if w == WorkloadNoisy {
			continue
		}
		row := row{workload: w, callers: c}
		spec := runSpec{workload: w, callers: c, warmup: cfg.Warmup, duration: cfg.Duration, opTimeout: cfg.OpTimeout,
			callerTarget: d.caller, meter: m.daemon()}
		if row.daemon, err = runOne(ctx, l, spec, rep.pid, logf); err != nil {
			return err
		}
		if b != nil {
			spec.callerTarget, spec.meter = func(int) target { return b }, m.baseline()
			if row.baseline, err = runOne(ctx, l, spec, -1, logf); err != nil {
				return err
			}
		}
		if r != nil {
			spec.callerTarget, spec.meter = func(int) target { return r }, m.redis()
			if row.redis, err = runOne(ctx, l, spec, -1, logf); err != nil {
				return err
			}
		}
		rep.rows = append(rep.rows, row)
	}
	return nil
}

// runNoisy runs project B's get and set at c callers alone, then again
// while project A floods the daemon.
func runNoisy(ctx context.Context, cfg *Config, l *load, d *daemonTarget, m meterSet, c int, rep *report, progress io.Writer, logf func(string, ...any)) error {
	ops := []Workload{WorkloadGet, WorkloadSet}
	rows := make([]noisyRow, len(ops))
	for i, op := range ops {
		rows[i] = noisyRow{op: op, callers: c}
		spec := runSpec{workload: op, callers: c, warmup: cfg.Warmup, duration: cfg.Duration, opTimeout: cfg.OpTimeout,
			callerTarget: d.caller, meter: m.daemon()}
		var err error
		if rows[i].quiet, err = runOne(ctx, l, spec, rep.pid, logf); err != nil {
			return fmt.Errorf("quiet: %w", err)
		}
	}
	f, err := startFlood(ctx, cfg, rep.socket, rep.project, progress)
	if err != nil {
		return err
	}
	rep.floodProject, rep.floodBatch = f.ready.Project, f.ready.Batch
	logf("flood: project %q, %d connections of setMany/getMany of %d values of %d bytes, as uid %d", f.ready.Project, cfg.Flood.Conns, f.ready.Batch, cfg.Flood.ValueSize, cfg.Flood.UID)
	for i, op := range ops {
		// The CPU of the daemon and PostgreSQL during the flood is mostly
		// the flood's: per operation of B it would mean nothing.
		spec := runSpec{workload: op, callers: c, warmup: cfg.Warmup, duration: cfg.Duration, opTimeout: cfg.OpTimeout,
			callerTarget: d.caller}
		if rows[i].flood, err = runOne(ctx, l, spec, rep.pid, logf); err != nil {
			f.kill()
			return fmt.Errorf("during the flood: %w", err)
		}
	}
	st, err := f.stop(ctx)
	if err != nil {
		return err
	}
	if st.Error != "" {
		logf("flood: %s", st.Error)
	}
	logf("flood: %.0f requests/s answered, %d refused or failed (first: %q)", float64(st.Requests)/st.Seconds, st.Failed, st.FirstError)
	for i := range rows {
		rows[i].floodStats = &st
	}
	rep.noisy = append(rep.noisy, rows...)
	return nil
}

// socketPath resolves the socket as the client does.
func socketPath(s string) string {
	if s == "" {
		s = os.Getenv(client.SocketEnv)
	}
	if s == "" {
		s = client.DefaultSocket
	}
	return s
}

// prepare writes every key, on the daemon and on the baseline, so that
// gets find them and sets overwrite, as in a warm store.
func prepare(ctx context.Context, cfg *Config, l *load, d *daemonTarget, logf func(string, ...any)) error {
	t := time.Now()
	if err := d.populate(ctx, l.keys, l.values[0]); err != nil {
		return fmt.Errorf("write the keys before the runs: %w", err)
	}
	logf("wrote %d keys to the daemon in %v", len(l.keys), time.Since(t).Round(time.Millisecond))
	if cfg.Redis != "" {
		r, err := openRedis(ctx, cfg.Redis, 1)
		if err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		defer r.close()
		t = time.Now()
		if err := r.populate(ctx, l.keys, l.values[0]); err != nil {
			return fmt.Errorf("redis: write the keys before the runs: %w", err)
		}
		logf("wrote %d keys to Redis in %v", len(l.keys), time.Since(t).Round(time.Millisecond))
	}
	if cfg.Baseline == "" {
		return nil
	}
	b, err := openBaseline(ctx, cfg.Baseline, cfg.BaselineProject, 1)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	defer b.close()
	t = time.Now()
	if err := b.populate(ctx, l.keys, l.values[0]); err != nil {
		return fmt.Errorf("baseline: write the keys before the runs: %w", err)
	}
	logf("wrote %d keys to the baseline in %v", len(l.keys), time.Since(t).Round(time.Millisecond))
	return nil
}

// cleanup deletes what prepare and the runs wrote.
func cleanup(ctx context.Context, cfg *Config, l *load, d *daemonTarget, logf func(string, ...any)) error {
	if err := d.remove(ctx, l.keys); err != nil {
		return fmt.Errorf("delete the keys written (--keep skips this): %w", err)
	}
	if cfg.Redis != "" {
		r, err := openRedis(ctx, cfg.Redis, 1)
		if err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		defer r.close()
		if err := r.remove(ctx, l.keys); err != nil {
			return fmt.Errorf("redis: delete the keys written (--keep skips this): %w", err)
		}
	}
	if cfg.Baseline == "" {
		logf("deleted the keys written")
		return nil
	}
	b, err := openBaseline(ctx, cfg.Baseline, cfg.BaselineProject, 1)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	defer b.close()
	if err := b.remove(ctx); err != nil {
		return fmt.Errorf("baseline: delete the rows written (--keep skips this): %w", err)
	}
	logf("deleted the keys written")
	return nil
}

// runOne runs spec, sampling the RSS of pid (when > 0) meanwhile.
func runOne(ctx context.Context, l *load, spec runSpec, pid int, logf func(string, ...any)) (*result, error) {
	who := spec.callerTarget(0).name()
	rss := startRSSSampler(pid)
	r, err := l.run(ctx, spec)
	peak := rss.stop()
	if err != nil {
		return nil, fmt.Errorf("%s c=%d on the %s: %w", spec.workload, spec.callers, who, err)
	}
	r.peakRSS = peak
	logf("%-5s c=%-4d %-8s %9.0f ops/s  p50 %-8s p99 %s", spec.workload, spec.callers, who, r.opsPerSec(), fmtLatency(r.hist.percentile(0.50)), fmtLatency(r.hist.percentile(0.99)))
	return r, nil
}

// lockedWriter serializes the writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
