package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// write prints the tables and the daemon's memory.
func (rep *report) write(w io.Writer) {
	cfg := rep.cfg
	clients := "1 client (pipelined)"
	if cfg.Clients > 1 {
		clients = fmt.Sprintf("%d clients", cfg.Clients)
	}
	fmt.Fprintf(w, "machine: %d CPUs, shared by the daemon, PostgreSQL, Redis and kvbench when all run here\n", runtime.NumCPU())
	fmt.Fprintf(w, "daemon: socket %s, project %q, %s\n", rep.socket, rep.project, clients)
	fmt.Fprintf(w, "load:   %d keys, %d-byte JSON values, seed %d; each run %v warmup + %v measured\n",
		cfg.Keys, cfg.ValueSize, cfg.Seed, cfg.Warmup, cfg.Duration)
	if cfg.Baseline != "" {
		fmt.Fprintf(w, "baseline: one SQL statement per request, pgx pool of one connection per caller, project %q\n", cfg.BaselineProject)
	}
	if cfg.Redis != "" {
		fmt.Fprintf(w, "redis: %s, go-redis pool of one connection per caller, SET and GET\n", cfg.Redis)
	}
	if len(rep.rows) > 0 {
		rep.writeMain(w)
		rep.writeCPU(w)
	}
	if len(rep.noisy) > 0 {
		rep.writeNoisy(w)
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
	if len(rep.rows) == 0 {
		fmt.Fprintf(w, "daemon RSS (pid %d): %s idle before the runs\n", rep.pid, fmtMiB(rep.idleRSS))
		return
	}
	fmt.Fprintf(w, "daemon RSS (pid %d): %s idle before the runs, %s peak during the c=%d runs\n",
		rep.pid, fmtMiB(rep.idleRSS), fmtMiB(peak), top)
}

// writeMain prints the main table: a line per workload and concurrency,
// with the ratios to the baseline and to Redis.
func (rep *report) writeMain(w io.Writer) {
	cfg := rep.cfg
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "workload\tcallers\tops/s\tp50\tp99\t")
	if cfg.Baseline != "" {
		fmt.Fprint(tw, "base ops/s\tbase p50\tbase p99\tratio\tΔp50\t")
	}
	if cfg.Redis != "" {
		fmt.Fprint(tw, "redis ops/s\tredis p50\tredis p99\t÷redis\t")
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
		if x := r.redis; x != nil {
			fmt.Fprintf(tw, "%.0f\t%s\t%s\t%s\t", x.opsPerSec(),
				fmtLatency(x.hist.percentile(0.50)), fmtLatency(x.hist.percentile(0.99)),
				fmtRatio(r.daemon.opsPerSec(), x.opsPerSec()))
		}
		fmt.Fprintf(tw, "%s\t\n", fmtMiB(r.daemon.peakRSS))
	}
	tw.Flush()
	fmt.Fprintln(w)

	if cfg.Baseline != "" {
		fmt.Fprintln(w, "ratio: daemon ops/s ÷ baseline ops/s, same workload and callers, run back to back; Δp50: daemon p50 − baseline p50 (1 caller)")
	}
	if cfg.Redis != "" {
		fmt.Fprintln(w, "÷redis: daemon ops/s ÷ Redis ops/s, same workload and callers, run back to back")
	}
}

// writeCPU prints the CPU table: a line per run.
func (rep *report) writeCPU(w io.Writer) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU µs per operation (user+system time over each measured window ÷ operations; kernel work for a process counts as its own):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "workload\tcallers\ttarget\tdaemon\tpostgres\tkvbench\tredis\ttotal\t\n")
	line := func(r row, target string, res *result) {
		if res == nil {
			return
		}
		c := res.cpu
		total := "-"
		if t, ok := c.total(); ok {
			total = fmtCPU(&t)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.workload, r.callers, target,
			fmtCPU(c.Daemon), fmtCPU(c.Postgres), fmtCPU(c.Loadgen), fmtCPU(c.Redis), total)
	}
	for _, r := range rep.rows {
		line(r, "daemon", r.daemon)
		line(r, "baseline", r.baseline)
		line(r, "redis", r.redis)
	}
	tw.Flush()
	var notes []string
	if rep.pid <= 0 {
		notes = append(notes, "the daemon's is not measured (its pid is unknown)")
	}
	if rep.cfg.Baseline == "" {
		notes = append(notes, "PostgreSQL's is measured only with --baseline")
	} else if !rep.pgCPU {
		notes = append(notes, "PostgreSQL's is not measured (not on this machine)")
	}
	if rep.pgCPU {
		notes = append(notes, "postgres: the backends of the benchmark's database, not the server's shared background processes")
	}
	if rep.cfg.Redis != "" && rep.redisPID <= 0 {
		notes = append(notes, "Redis's is not measured (its pid is unknown)")
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "CPU: %s\n", strings.Join(notes, "; "))
	}
}

// writeNoisy prints the noisy workload's table.
func (rep *report) writeNoisy(w io.Writer) {
	cfg := rep.cfg
	fmt.Fprintln(w)
	fmt.Fprintf(w, "noisy neighbour: project %q (B, kvbench, uid %d) alone (quiet), then while project %q (A, a child process, uid %d) floods the daemon:\n",
		rep.project, os.Getuid(), rep.floodProject, cfg.Flood.UID)
	fmt.Fprintf(w, "%d connections, each calling setMany and getMany of %d values of %d bytes, alternately, back to back\n",
		cfg.Flood.Conns, rep.floodBatch, cfg.Flood.ValueSize)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "op\tcallers\tquiet ops/s\tquiet p50\tquiet p99\tflood ops/s\tflood p50\tflood p99\tp50 ×\tp99 ×\tRSS peak\tA req/s\tA failed\t\n")
	for _, r := range rep.noisy {
		q, f := r.quiet, r.flood
		qp50, qp99 := q.hist.percentile(0.50), q.hist.percentile(0.99)
		fp50, fp99 := f.hist.percentile(0.50), f.hist.percentile(0.99)
		aRate, aFailed := "-", "-"
		if st := r.floodStats; st != nil && st.Seconds > 0 {
			aRate = strconv.FormatFloat(float64(st.Requests)/st.Seconds, 'f', 0, 64)
			aFailed = strconv.FormatUint(st.Failed, 10)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.op, r.callers,
			q.opsPerSec(), fmtLatency(qp50), fmtLatency(qp99),
			f.opsPerSec(), fmtLatency(fp50), fmtLatency(fp99),
			fmtRatio(float64(fp50), float64(qp50)), fmtRatio(float64(fp99), float64(qp99)),
			fmtMiB(f.peakRSS), aRate, aFailed)
	}
	tw.Flush()
	fmt.Fprintln(w, "noisy: p50 ×, p99 × are B's latency during the flood ÷ alone; RSS peak the daemon's during the flood; A req/s, A failed the flood's requests answered per second, and refused or failed, over both runs at that concurrency")
}

// fmtCPU prints µs per operation with 3 significant digits; nil is "-".
func fmtCPU(v *float64) string {
	if v == nil {
		return "-"
	}
	switch {
	case *v < 10:
		return strconv.FormatFloat(*v, 'f', 2, 64)
	case *v < 100:
		return strconv.FormatFloat(*v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(*v, 'f', 0, 64)
	}
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

// jsonRow is one row of --json: one run.
type jsonRow struct {
	Workload string    `json:"workload"`
	Callers  int       `json:"callers"`
	Target   string    `json:"target"`          // daemon, baseline or redis
	Phase    string    `json:"phase,omitempty"` // noisy workload only: quiet or flood
	OpsPerS  float64   `json:"ops_per_s"`
	P50us    float64   `json:"p50_us"`
	P99us    float64   `json:"p99_us"`
	CPU      cpuShares `json:"cpu_us_per_op"`
}

// jsonRows returns every run of rep as a row, in the order of the tables.
func (rep *report) jsonRows() []jsonRow {
	out := []jsonRow{}
	add := func(workload string, callers int, target, phase string, r *result) {
		if r == nil {
			return
		}
		us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
		out = append(out, jsonRow{Workload: workload, Callers: callers, Target: target, Phase: phase,
			OpsPerS: r.opsPerSec(), P50us: us(r.hist.percentile(0.50)), P99us: us(r.hist.percentile(0.99)), CPU: r.cpu})
	}
	for _, r := range rep.rows {
		add(string(r.workload), r.callers, "daemon", "", r.daemon)
		add(string(r.workload), r.callers, "baseline", "", r.baseline)
		add(string(r.workload), r.callers, "redis", "", r.redis)
	}
	for _, r := range rep.noisy {
		add("noisy-"+string(r.op), r.callers, "daemon", "quiet", r.quiet)
		add("noisy-"+string(r.op), r.callers, "daemon", "flood", r.flood)
	}
	return out
}

// writeJSON writes every row to path.
func (rep *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(rep.jsonRows(), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
