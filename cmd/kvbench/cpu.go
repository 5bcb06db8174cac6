package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// clockTick is the unit of the CPU times in /proc/<pid>/stat: USER_HZ,
// which Linux fixes at 100 per second for user space on every architecture
// it still supports, whatever the kernel's own tick rate.
const clockTick = time.Second / 100

// procTimes is what /proc/<pid>/stat says about a process's CPU.
type procTimes struct {
	// cpu is the user plus system time of every thread of the process,
	// those that have ended included.
	cpu time.Duration
	// start is when the process started, in clock ticks after boot: with
	// the pid, it tells a process from a later one that reused its pid.
	start uint64
}

// readProcTimes reads the CPU time of pid from /proc/<pid>/stat.
func readProcTimes(pid int) (procTimes, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procTimes{}, err
	}
	return parseProcStat(pid, b)
}

// parseProcStat parses the contents of /proc/<pid>/stat (proc(5)). The
// second field, the command name, is in parentheses and may itself hold
// spaces and parentheses, so fields are counted from the last ')'.
func parseProcStat(pid int, b []byte) (procTimes, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procTimes{}, fmt.Errorf("/proc/%d/stat: no command name in %q", pid, b)
	}
	// f[0] is field 3 (state): field n of proc(5) is f[n-3].
	f := bytes.Fields(b[i+1:])
	const utime, stime, starttime = 14 - 3, 15 - 3, 22 - 3
	if len(f) <= starttime {
		return procTimes{}, fmt.Errorf("/proc/%d/stat: %d fields after the command name, want more than %d", pid, len(f), starttime)
	}
	var n [3]uint64
	for j, field := range []int{utime, stime, starttime} {
		v, err := strconv.ParseUint(string(f[field]), 10, 64)
		if err != nil {
			return procTimes{}, fmt.Errorf("/proc/%d/stat: field %d: %w", pid, field+3, err)
		}
		n[j] = v
	}
	return procTimes{cpu: time.Duration(n[0]+n[1]) * clockTick, start: n[2]}, nil
}

// selfCPU returns the user plus system time kvbench has used so far, to
// the microsecond (getrusage).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0 // cannot fail for RUSAGE_SELF with a valid pointer
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pgProcs finds the PostgreSQL server processes that work for one
// database: its backends (the daemon's pool and the baseline's) and its
// autovacuum and parallel workers. The server's background processes (WAL
// writer, checkpointer, background writer) have no database and are left
// out: on a shared server they work for every database at once. A
// committing backend flushes the WAL itself (synchronous_commit=on), so
// the work of a commit is its backend's. pgProcs asks the server
// (pg_stat_activity) over a connection of its own, which is itself a
// backend of the database and so is counted too (one query before a run
// and one after: well under a millisecond of CPU).
type pgProcs struct {
	conn *pgx.Conn
}

// sqlPGProcs lists the pids of the processes pgProcs counts.
const sqlPGProcs = `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`

// openPGProcs connects to dsn and checks that the server's processes are
// visible in this machine's /proc: PostgreSQL on another host (or in a pid
// namespace this one cannot see) cannot be measured from here.
func openPGProcs(ctx context.Context, dsn string) (*pgProcs, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	p := &pgProcs{conn: conn}
	var pid int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		p.close()
		return nil, err
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil || string(bytes.TrimSpace(comm)) != "postgres" {
		p.close()
		return nil, fmt.Errorf("the server's backend (pid %d) is not a postgres process on this machine (PostgreSQL on another host?)", pid)
	}
	return p, nil
}

func (p *pgProcs) close() { p.conn.Close(context.Background()) }

// pids returns the pids of the processes to count now.
func (p *pgProcs) pids(ctx context.Context) ([]int, error) {
	rows, err := p.conn.Query(ctx, sqlPGProcs)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// procKey names one process over time: a pid and its start time.
type procKey struct {
	pid   int
	start uint64
}

// procSet is the CPU time of a set of processes at one moment.
type procSet map[procKey]time.Duration

// readProcSet reads the CPU time of pids; a process that has ended since
// it was listed is left out.
func readProcSet(pids []int) procSet {
	s := make(procSet, len(pids))
	for _, pid := range pids {
		if t, err := readProcTimes(pid); err == nil {
			s[procKey{pid, t.start}] = t.cpu
		}
	}
	return s
}

// since returns the CPU the processes of s used after base was read: a
// process in s but not in base started in between and counts whole. A
// process of base that ended before s was read is lost, with the CPU it
// used in between; the runs keep their PostgreSQL connections open, so
// that is only a connection the daemon's pool replaced mid-run.
func (s procSet) since(base procSet) time.Duration {
	var d time.Duration
	for k, t := range s {
		d += t - base[k]
	}
	return d
}

// cpuShares are the CPU µs per operation of each process of a run; nil is
// not measured (the process took no part in the run, or could not be
// read).
type cpuShares struct {
	Daemon   *float64 `json:"daemon"`
	Postgres *float64 `json:"postgres"`
	Loadgen  *float64 `json:"loadgen"`
	Redis    *float64 `json:"redis"`
}

// cpuMeter measures the CPU of the processes taking part in one run over
// its measured window. Which processes those are depends on the target:
// the daemon (and PostgreSQL behind it), or PostgreSQL alone (the
// baseline), or Redis; kvbench itself always.
type cpuMeter struct {
	daemonPID int      // > 0: measure this process
	redisPID  int      // > 0: measure this process
	pg        *pgProcs // non-nil: measure PostgreSQL

	// Set by measure.
	ok                  bool
	daemon, redis, self time.Duration
	postgres            time.Duration
}

// cpuSnapshot is one reading of every process a meter measures.
type cpuSnapshot struct {
	daemon, redis procTimes
	self          time.Duration
	postgres      procSet
}

// snapshot reads the CPU of every process m measures, PostgreSQL's among
// pgPIDs. It only reads /proc, so that every reading is taken within
// microseconds of the others.
func (m *cpuMeter) snapshot(pgPIDs []int) (cpuSnapshot, error) {
	var s cpuSnapshot
	var err error
	s.self = selfCPU()
	if m.daemonPID > 0 {
		if s.daemon, err = readProcTimes(m.daemonPID); err != nil {
			return s, fmt.Errorf("the daemon's CPU: %w", err)
		}
	}
	if m.redisPID > 0 {
		if s.redis, err = readProcTimes(m.redisPID); err != nil {
			return s, fmt.Errorf("Redis's CPU: %w", err)
		}
	}
	if m.pg != nil {
		s.postgres = readProcSet(pgPIDs)
	}
	return s, nil
}

// measure reads the CPU of every process at start and at end, sleeping
// in between, and keeps the differences. PostgreSQL's processes are
// listed before start (the query could take a while on a loaded machine
// and must not shift the readings) and again after end, for those that
// started meanwhile. It returns early, measuring nothing, when ctx ends
// first.
func (m *cpuMeter) measure(ctx context.Context, start, end time.Time) error {
	var pre []int
	if m.pg != nil {
		var err error
		if pre, err = m.pg.pids(ctx); err != nil {
			return fmt.Errorf("list PostgreSQL's processes: %w", err)
		}
	}
	if !sleepUntil(ctx, start) {
		return nil
	}
	s0, err := m.snapshot(pre)
	if err != nil {
		return err
	}
	if !sleepUntil(ctx, end) {
		return nil
	}
	s1, err := m.snapshot(pre)
	if err != nil {
		return err
	}
	if m.pg != nil {
		post, err := m.pg.pids(ctx)
		if err != nil {
			return fmt.Errorf("list PostgreSQL's processes: %w", err)
		}
		for k, t := range readProcSet(slices.DeleteFunc(post, func(pid int) bool { return slices.Contains(pre, pid) })) {
			s1.postgres[k] = t
		}
	}
	m.self = s1.self - s0.self
	if m.daemonPID > 0 {
		if s1.daemon.start != s0.daemon.start {
			return fmt.Errorf("the daemon (pid %d) restarted during the run", m.daemonPID)
		}
		m.daemon = s1.daemon.cpu - s0.daemon.cpu
	}
	if m.redisPID > 0 {
		if s1.redis.start != s0.redis.start {
			return fmt.Errorf("Redis (pid %d) restarted during the run", m.redisPID)
		}
		m.redis = s1.redis.cpu - s0.redis.cpu
	}
	if m.pg != nil {
		m.postgres = s1.postgres.since(s0.postgres)
	}
	m.ok = true
	return nil
}

// perOp returns what m measured, in µs per operation of ops; all nil when
// m measured nothing.
func (m *cpuMeter) perOp(ops uint64) cpuShares {
	var c cpuShares
	if m == nil || !m.ok || ops == 0 {
		return c
	}
	us := func(d time.Duration) *float64 {
		v := float64(d) / float64(time.Microsecond) / float64(ops)
		return &v
	}
	c.Loadgen = us(m.self)
	if m.daemonPID > 0 {
		c.Daemon = us(m.daemon)
	}
	if m.redisPID > 0 {
		c.Redis = us(m.redis)
	}
	if m.pg != nil {
		c.Postgres = us(m.postgres)
	}
	return c
}

// total is the sum of the shares measured; ok is false when none was.
func (c cpuShares) total() (sum float64, ok bool) {
	for _, v := range []*float64{c.Daemon, c.Postgres, c.Loadgen, c.Redis} {
		if v != nil {
			sum += *v
			ok = true
		}
	}
	return sum, ok
}

// sleepUntil sleeps until t and reports whether it got there before ctx
// ended.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
