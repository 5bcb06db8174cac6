package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
)

// row is one line of the table: a workload at a concurrency, on the daemon
// and, when asked, on the baseline.
type row struct {
	workload Workload
	callers  int
	daemon   *result
	baseline *result // nil without --baseline
}

// report is everything the table shows.
type report struct {
	cfg     *Config
	socket  string
	project string
	pid     int   // the daemon's pid; <= 0 when unknown
	idleRSS int64 // bytes, before any load; 0 when unknown
	rows    []row
}

// bench runs cfg and writes the table to out, progress to progress.
func bench(ctx context.Context, cfg *Config, out, progress io.Writer) error {
	logf := func(format string, args ...any) { fmt.Fprintf(progress, "kvbench: "+format+"\n", args...) }
	socket := socketPath(cfg.Socket)

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
			logf("cannot learn the daemon's pid from the socket (%v); RSS not measured (give --daemon-pid)", err)
			rep.pid = -1
		case rep.pid == 0:
			logf("the daemon runs in a pid namespace this process cannot see; RSS not measured (give --daemon-pid)")
		}
	}
	if rep.pid > 0 {
		if rep.idleRSS, err = readRSS(rep.pid); err != nil {
			logf("cannot read the daemon's RSS (%v); RSS not measured", err)
			rep.pid = -1
		}
	}

	l := newLoad(cfg)
	if err := prepare(ctx, cfg, l, d, logf); err != nil {
		return err
	}

	// Runs go by concurrency first, so that the low-load runs see the
	// daemon as it started; the table is by workload.
	for _, c := range cfg.Concurrency {
		var b *baseline
		if cfg.Baseline != "" {
			if b, err = openBaseline(ctx, cfg.Baseline, cfg.BaselineProject, c); err != nil {
				return fmt.Errorf("baseline: %w", err)
			}
		}
		err := func() error {
			if b != nil {
				defer b.close()
			}
			for _, w := range cfg.Workloads {
				r := row{workload: w, callers: c}
				spec := runSpec{workload: w, callers: c, warmup: cfg.Warmup, duration: cfg.Duration, opTimeout: cfg.OpTimeout, callerTarget: d.caller}
				if r.daemon, err = runOne(ctx, l, spec, rep.pid, logf); err != nil {
					return err
				}
				if b != nil {
					spec.callerTarget = func(int) target { return b }
					if r.baseline, err = runOne(ctx, l, spec, -1, logf); err != nil {
						return err
					}
				}
				rep.rows = append(rep.rows, r)
			}
			return nil
		}()
		if err != nil {
			return err
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
	rep.write(out)
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
	if cfg.Baseline == "" {
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
