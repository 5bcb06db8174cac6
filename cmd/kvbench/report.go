package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"
)

// write prints the table and the daemon's memory.
func (rep *report) write(w io.Writer) {
	cfg := rep.cfg
	clients := "1 client (pipelined)"
	if cfg.Clients > 1 {
		clients = fmt.Sprintf("%d clients", cfg.Clients)
	}
	fmt.Fprintf(w, "machine: %d CPUs, shared by the daemon, PostgreSQL and kvbench when all run here\n", runtime.NumCPU())
	fmt.Fprintf(w, "daemon: socket %s, project %q, %s\n", rep.socket, rep.project, clients)
	fmt.Fprintf(w, "load:   %d keys, %d-byte JSON values, seed %d; each run %v warmup + %v measured\n",
		cfg.Keys, cfg.ValueSize, cfg.Seed, cfg.Warmup, cfg.Duration)
	if cfg.Baseline != "" {
		fmt.Fprintf(w, "baseline: one SQL statement per request, pgx pool of one connection per caller, project %q\n", cfg.BaselineProject)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "workload\tcallers\tops/s\tp50\tp99\t")
	if cfg.Baseline != "" {
		fmt.Fprint(tw, "base ops/s\tbase p50\tbase p99\tratio\tΔp50\t")
	}
	fmt.Fprint(tw, "RSS peak\t\n")
	for _, r := range rep.rows {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t", r.workload, r.callers, r.daemon.opsPerSec(),
			fmtLatency(r.daemon.hist.percentile(0.50)), fmtLatency(r.daemon.hist.percentile(0.99)))
		if b := r.baseline; b != nil {
			delta := ""
			if r.callers == 1 {
				d := r.daemon.hist.percentile(0.50) - b.hist.percentile(0.50)
				delta = fmt.Sprintf("%+dµs", d.Microseconds())
			}
			fmt.Fprintf(tw, "%.0f\t%s\t%s\t%s\t%s\t", b.opsPerSec(),
				fmtLatency(b.hist.percentile(0.50)), fmtLatency(b.hist.percentile(0.99)),
				fmtRatio(r.daemon.opsPerSec(), b.opsPerSec()), delta)
		}
		fmt.Fprintf(tw, "%s\t\n", fmtMiB(r.daemon.peakRSS))
	}
	tw.Flush()
	fmt.Fprintln(w)

	if cfg.Baseline != "" {
		fmt.Fprintln(w, "ratio: daemon ops/s ÷ baseline ops/s, same workload and callers, run back to back; Δp50: daemon p50 − baseline p50 (1 caller)")
	}
	if rep.pid <= 0 {
		fmt.Fprintln(w, "daemon RSS: not measured")
		return
	}
	top := slices.Max(cfg.Concurrency)
	var peak int64
	for _, r := range rep.rows {
		if r.callers == top {
			peak = max(peak, r.daemon.peakRSS)
		}
	}
	fmt.Fprintf(w, "daemon RSS (pid %d): %s idle before the runs, %s peak during the c=%d runs\n",
		rep.pid, fmtMiB(rep.idleRSS), fmtMiB(peak), top)
}

// fmtLatency prints d in whole µs below 1ms, in ms with 3 significant
// digits above.
func fmtLatency(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	switch {
	case us < 1000:
		return strconv.FormatFloat(us, 'f', 0, 64) + "µs"
	case us < 10_000:
		return strconv.FormatFloat(us/1000, 'f', 2, 64) + "ms"
	case us < 100_000:
		return strconv.FormatFloat(us/1000, 'f', 1, 64) + "ms"
	default:
		return strconv.FormatFloat(us/1000, 'f', 0, 64) + "ms"
	}
}

// fmtRatio prints a/b as "2.35×".
func fmtRatio(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64) + "×"
}

// fmtMiB prints a byte count in MiB; 0 is unknown.
func fmtMiB(n int64) string {
	if n <= 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
}
