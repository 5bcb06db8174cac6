package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// spinEnv makes the test binary a process that burns the CPU time it
// names, reports what getrusage says it used, and waits for its stdin to
// end: a process whose CPU use is known, to check readings from /proc.
const spinEnv = "KVBENCH_TEST_SPIN"

func TestMain(m *testing.M) {
	if spec := os.Getenv(floodEnv); spec != "" {
		os.Exit(floodMain(os.Stdin, os.Stdout, os.Stderr, spec))
	}
	if d := os.Getenv(spinEnv); d != "" {
		os.Exit(spin(d))
	}
	os.Exit(m.Run())
}

func spin(arg string) int {
	want, err := time.ParseDuration(arg)
	if err != nil {
		return 2
	}
	x := 0
	for selfCPU() < want {
		for i := range 100_000 {
			x += i
		}
	}
	fmt.Printf("%d %d\n", selfCPU(), x&1)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

func TestParseProcStat(t *testing.T) {
	// 52 fields, as Linux 6.x writes them; utime 1234, stime 56, starttime 777.
	rest := "S 1 1 1 0 -1 4194560 100 0 0 0 1234 56 7 8 20 0 4 0 777 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0"
	tests := []struct {
		name, stat string
		want       procTimes
		wantErr    string
	}{
		{"plain", "42 (kvsidecar) " + rest, procTimes{cpu: 1290 * clockTick, start: 777}, ""},
		{"name with spaces and parentheses", "42 (a b) (c)) " + rest, procTimes{cpu: 1290 * clockTick, start: 777}, ""},
		{"no name", "42 kvsidecar " + rest, procTimes{}, "no command name"},
		{"cut short", "42 (kvsidecar) S 1 1 1 0 -1 4194560 100 0 0 0 1234 56", procTimes{}, "fields after the command name"},
		{"not a number", "42 (kvsidecar) " + strings.Replace(rest, "1234", "x", 1), procTimes{}, "field 14"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat(42, []byte(tt.stat))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestProcCPUMatchesTheProcessOwnCount reads, from /proc, the CPU time of a
// process that burnt a known amount and says how much (getrusage), and
// expects the same within the tick of /proc/<pid>/stat.
func TestProcCPUMatchesTheProcessOwnCount(t *testing.T) {
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), spinEnv+"=300ms")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var own time.Duration
	var parity int
	if _, err := fmt.Sscan(line, &own, &parity); err != nil {
		t.Fatalf("spinner said %q: %v", line, err)
	}
	got, err := readProcTimes(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// The child now waits on its stdin: what it used is what it said, plus
	// printing a line; /proc counts in ticks.
	if d := got.cpu - own; d < -2*clockTick || d > 2*clockTick {
		t.Errorf("/proc says %v of CPU, the process itself %v", got.cpu, own)
	}
	if again, err := readProcTimes(cmd.Process.Pid); err != nil || again.start != got.start || again.start == 0 {
		t.Errorf("start time %d then %d (%v): not the same process", got.start, again.start, err)
	}
}

// TestPostgresCPUCountsTheDatabasesBackends burns CPU in a backend of
// another database (not counted), then in a backend of the measured one
// opened after the first reading (counted whole), and compares with
// what /proc says of each backend alone.
func TestPostgresCPUCountsTheDatabasesBackends(t *testing.T) {
	ctx := t.Context()
	measured, other := pgtest.Database(t), pgtest.Database(t)
	p, err := openPGProcs(ctx, measured)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	backend := func(dsn string) (*pgx.Conn, int) {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		var pid int
		if err := c.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return c, pid
	}
	// burn runs a query of a few hundred ms of CPU in one process.
	burn := func(c *pgx.Conn) {
		if _, err := c.Exec(ctx, `SET max_parallel_workers_per_gather = 0`); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `SELECT count(*) FROM generate_series(1, 3000000)`); err != nil {
			t.Fatal(err)
		}
	}
	sample := func() procSet {
		pids, err := p.pids(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return readProcSet(pids)
	}
	cpuOf := func(pid int) time.Duration {
		pt, err := readProcTimes(pid)
		if err != nil {
			t.Fatal(err)
		}
		return pt.cpu
	}

	oc, opid := backend(other)
	s0, o0 := sample(), cpuOf(opid)
	burn(oc)
	s1, o1 := sample(), cpuOf(opid)
	if o1-o0 < 100*time.Millisecond {
		t.Fatalf("the query used %v of CPU: too little to tell anything", o1-o0)
	}
	if got := s1.since(s0); got > (o1-o0)/4 {
		t.Errorf("while another database's backend used %v, the measured database's processes used %v: it was counted", o1-o0, got)
	}

	s2 := sample()
	mc, mpid := backend(measured) // opened after the reading
	burn(mc)
	s3, m := sample(), cpuOf(mpid)
	if got := s3.since(s2); got < m {
		t.Errorf("the measured database's processes used %v, less than its new backend alone (%v)", got, m)
	}
}

// TestRunWritesJSON runs every kind of row of the embedded daemon and
// checks the --json file: one object per run, with the fields and types
// the documentation gives, the CPU of the processes that took part and
// null for the others.
func TestRunWritesJSON(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	path := filepath.Join(t.TempDir(), "rows.json")
	runBench(t, "--socket", d.Socket, "--concurrency", "1,3", "--keys", "100", "--workloads", "get,mixed", "--json", path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(b, &rows); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4:\n%s", len(rows), b)
	}
	wantOrder := [][2]any{{"get", 1.0}, {"get", 3.0}, {"mixed", 1.0}, {"mixed", 3.0}}
	for i, r := range rows {
		keys := slices.Sorted(mapKeys(r))
		if want := []string{"callers", "cpu_us_per_op", "ops_per_s", "p50_us", "p99_us", "target", "workload"}; !slices.Equal(keys, want) {
			t.Errorf("row %d has keys %v, want %v", i, keys, want)
		}
		if r["workload"] != wantOrder[i][0] || r["callers"] != wantOrder[i][1] || r["target"] != "daemon" {
			t.Errorf("row %d: %v %v %v, want %v on the daemon", i, r["workload"], r["callers"], r["target"], wantOrder[i])
		}
		for _, k := range []string{"ops_per_s", "p50_us", "p99_us"} {
			if v, ok := r[k].(float64); !ok || v <= 0 {
				t.Errorf("row %d: %s = %v, want a positive number", i, k, r[k])
			}
		}
		if p50, p99 := r["p50_us"].(float64), r["p99_us"].(float64); p50 > p99 {
			t.Errorf("row %d: p50 %v > p99 %v", i, p50, p99)
		}
		cpu, ok := r["cpu_us_per_op"].(map[string]any)
		if !ok {
			t.Fatalf("row %d: cpu_us_per_op = %v", i, r["cpu_us_per_op"])
		}
		if keys := slices.Sorted(mapKeys(cpu)); !slices.Equal(keys, []string{"daemon", "loadgen", "postgres", "redis"}) {
			t.Errorf("row %d: cpu_us_per_op has keys %v", i, keys)
		}
		// The daemon runs in this test process: it and the load generator
		// are measured (the same process, read two ways); PostgreSQL and
		// Redis took no part.
		for _, k := range []string{"daemon", "loadgen"} {
			if v, ok := cpu[k].(float64); !ok || v <= 0 {
				t.Errorf("row %d: cpu %s = %v, want a positive number", i, k, cpu[k])
			}
		}
		for _, k := range []string{"postgres", "redis"} {
			if cpu[k] != nil {
				t.Errorf("row %d: cpu %s = %v, want null", i, k, cpu[k])
			}
		}
	}
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// startRedis starts a redis-server on a Unix socket in a temporary
// directory, durable as make bench starts it, and returns the socket. It
// skips the test where redis-server is not installed, unless in CI.
func startRedis(t *testing.T) (socket string, pid int) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server is needed in CI: %v", err)
		}
		t.Skipf("redis-server not installed: %v", err)
	}
	dir, err := os.MkdirTemp("", "kvbr") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket = filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", socket, "--unixsocketperm", "700", "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	// The socket file appears at bind, before redis-server listens and
	// loads its append-only file: wait until a dial is answered.
	for range 100 {
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			return socket, cmd.Process.Pid
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
	t.Fatalf("redis-server did not open %s within 5s:\n%s", socket, log)
	return "", 0
}

// TestRunWithRedis drives a real redis-server next to the daemon and
// checks the Redis rows against what the server itself counted, Redis's
// CPU, and that the keys are gone at the end.
func TestRunWithRedis(t *testing.T) {
	socket, pid := startRedis(t)
	if got, err := redisPeerPID(t.Context(), "unix://"+socket); err != nil || got != pid {
		t.Fatalf("Redis's pid from the socket: %d, %v; want %d", got, err, pid)
	}
	d := sidecartest.Start(t, sidecartest.Options{})
	path := filepath.Join(t.TempDir(), "rows.json")
	out := runBench(t, "--socket", d.Socket, "--redis", "unix://"+socket, "--concurrency", "1,4", "--keys", "100",
		"--workloads", "set,get", "--json", path)

	rows := table(out, "workload", "callers", "ops/s")
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4:\n%s", len(rows), out)
	}
	for _, r := range rows {
		// workload callers ops/s p50 p99 redis-ops/s redis-p50 redis-p99 ÷redis RSS(2)
		if len(r) != 11 || !strings.HasSuffix(r[8], "×") {
			t.Errorf("row %v: want 11 fields with the ratio to Redis ninth", r)
		}
	}
	cpuRows := table(out, "workload", "callers", "target")
	if len(cpuRows) != 8 {
		t.Errorf("%d rows in the CPU table, want 8 (4 runs on the daemon, 4 on Redis):\n%s", len(cpuRows), out)
	}

	var js []jsonRow
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	var redisGets, redisCPU float64
	for _, r := range js {
		if r.Target != "redis" {
			continue
		}
		if r.CPU.Redis == nil || r.CPU.Loadgen == nil || r.CPU.Daemon != nil || r.CPU.Postgres != nil {
			t.Errorf("redis row %s c=%d: cpu %s", r.Workload, r.Callers, fmtShares(r.CPU))
			continue
		}
		// /proc counts in 10 ms ticks: a short run of cheap gets may not
		// cross one, all of them together do (every SET is fsync-ed).
		redisCPU += *r.CPU.Redis * r.OpsPerS * 0.2 // runBench's --duration
		if r.Workload == "get" {
			redisGets += r.OpsPerS * 0.2
		}
	}
	if redisGets == 0 {
		t.Fatalf("no get rows on Redis:\n%s", b)
	}
	if redisCPU <= 0 {
		t.Errorf("Redis used no CPU in any run, by /proc:\n%s", b)
	}

	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: socket})
	defer rdb.Close()
	ctx := t.Context()
	stats, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if calls := commandCalls(stats, "get"); float64(calls) < redisGets {
		t.Errorf("Redis answered %d GETs; kvbench counted %.0f in its windows alone", calls, redisGets)
	}
	if n, err := rdb.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Errorf("Redis holds %d keys after the run (%v), want 0", n, err)
	}
}

// commandCalls returns the calls of cmd in the output of INFO commandstats.
func commandCalls(info, cmd string) int64 {
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
		return n
	}
	return 0
}

func fmtShares(c cpuShares) string {
	return fmt.Sprintf("daemon %s postgres %s loadgen %s redis %s", fmtCPU(c.Daemon), fmtCPU(c.Postgres), fmtCPU(c.Loadgen), fmtCPU(c.Redis))
}

// TestRunWithBaselineMeasuresPostgres checks that with --baseline the
// daemon's and the baseline's rows carry PostgreSQL's CPU.
func TestRunWithBaselineMeasuresPostgres(t *testing.T) {
	dsn := pgtest.Database(t)
	d := sidecartest.Start(t, sidecartest.Options{Postgres: dsn})
	path := filepath.Join(t.TempDir(), "rows.json")
	// Long enough for PostgreSQL's processes to use many ticks of /proc's
	// CPU times (10 ms each).
	runBench(t, "--socket", d.Socket, "--baseline", dsn, "--concurrency", "2", "--keys", "100", "--workloads", "set", "--json", path,
		"--duration", "1s", "--warmup", "100ms")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var js []jsonRow
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	if len(js) != 2 || js[0].Target != "daemon" || js[1].Target != "baseline" {
		t.Fatalf("rows:\n%s", b)
	}
	// Every set commits in PostgreSQL: its processes work for each.
	for _, r := range js {
		if r.CPU.Postgres == nil || *r.CPU.Postgres <= 0 {
			t.Errorf("%s row: cpu %s, want PostgreSQL's", r.Target, fmtShares(r.CPU))
		}
	}
	if js[0].CPU.Daemon == nil || js[1].CPU.Daemon != nil {
		t.Errorf("the daemon's CPU: %s on the daemon, %s on the baseline", fmtShares(js[0].CPU), fmtShares(js[1].CPU))
	}
}

// floodDaemon starts a daemon on PostgreSQL (dsn) whose uid map puts this
// process in project "quiet" and uid 65534 in project "loud", on a socket
// that uid can reach.
func floodDaemon(t *testing.T, dsn string) *sidecartest.Daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the flood runs under another uid: needs root")
	}
	dir, err := os.MkdirTemp("", "kvbn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	uids := filepath.Join(dir, "uids")
	if err := os.WriteFile(uids, fmt.Appendf(nil, "%d quiet\n%d loud\n", os.Getuid(), DefaultFloodUID), 0o644); err != nil {
		t.Fatal(err)
	}
	return sidecartest.Start(t, sidecartest.Options{UIDMap: uids, Socket: filepath.Join(dir, "kv.sock"), Postgres: dsn})
}

// TestNoisyNeighbour runs the noisy workload against a daemon that maps
// kvbench and the flood's uid to two projects, and checks the table and
// the JSON rows, and in the database that the flood wrote to the other
// project.
func TestNoisyNeighbour(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the flood runs under another uid: needs root")
	}
	dsn := pgtest.Database(t)
	ctx := t.Context()
	d := floodDaemon(t, dsn)
	path := filepath.Join(t.TempDir(), "rows.json")
	out := runBench(t, "--socket", d.Socket, "--workloads", "get,noisy", "--concurrency", "1,2", "--keys", "50",
		"--flood-conns", "3", "--flood-batch", "8", "--flood-value-size", "300", "--keep", "--json", path)

	if !strings.Contains(out, `project "quiet" (B, kvbench, uid 0) alone (quiet), then while project "loud" (A, a child process, uid 65534) floods`) {
		t.Errorf("the noisy table does not name both projects:\n%s", out)
	}
	rows := table(out, "op", "callers", "quiet")
	if len(rows) != 4 {
		t.Fatalf("%d noisy rows, want get and set at 1 and 2 callers:\n%s", len(rows), out)
	}
	for i, r := range rows {
		want := [][2]string{{"get", "1"}, {"get", "2"}, {"set", "1"}, {"set", "2"}}[i]
		if len(r) != 14 || r[0] != want[0] || r[1] != want[1] {
			t.Errorf("noisy row %d: %v, want %v with 14 fields", i, r, want)
			continue
		}
		// op callers q-ops q50 q99 f-ops f50 f99 ×50 ×99 RSS(2) A-req/s A-failed
		if !strings.HasSuffix(r[8], "×") || !strings.HasSuffix(r[9], "×") {
			t.Errorf("noisy row %v: no ratios", r)
		}
		if n, err := strconv.ParseFloat(r[12], 64); err != nil || n <= 0 {
			t.Errorf("noisy row %v: the flood made %q requests/s", r, r[12])
		}
		if r[13] != "0" {
			t.Errorf("noisy row %v: %s of the flood's requests failed", r, r[13])
		}
	}
	if got := len(table(out, "workload", "callers", "ops/s")); got != 2 {
		t.Errorf("%d rows in the main table, want the 2 get rows", got)
	}

	var js []jsonRow
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	var phases []string
	for _, r := range js {
		if r.Phase != "" {
			phases = append(phases, fmt.Sprintf("%s/%d/%s", r.Workload, r.Callers, r.Phase))
			if r.OpsPerS <= 0 || r.P99us <= 0 {
				t.Errorf("noisy row %+v", r)
			}
		}
	}
	want := []string{"noisy-get/1/quiet", "noisy-get/1/flood", "noisy-get/2/quiet", "noisy-get/2/flood",
		"noisy-set/1/quiet", "noisy-set/1/flood", "noisy-set/2/quiet", "noisy-set/2/flood"}
	if !slices.Equal(phases, want) {
		t.Errorf("noisy JSON rows %v, want %v", phases, want)
	}

	// --keep kept the flood's keys: every one in project loud.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	keyRows, err := conn.Query(ctx, `SELECT project, count(*), min(length(value)) FROM kv_entries
WHERE substring(key FROM 1 FOR $1) = $2 GROUP BY project`, len(floodKeyPrefix), []byte(floodKeyPrefix))
	if err != nil {
		t.Fatal(err)
	}
	type projectKeys struct {
		Project string
		Keys    int
		MinLen  int
	}
	got, err := pgx.CollectRows(keyRows, pgx.RowToStructByPos[projectKeys])
	if err != nil {
		t.Fatal(err)
	}
	if want := []projectKeys{{"loud", 3 * 8, 300}}; !slices.Equal(got, want) {
		t.Errorf("the flood's keys by project: %+v, want %+v", got, want)
	}
}

// TestNoisyRefusesOneProject checks that a flood the daemon puts in
// kvbench's own project is refused with a message saying what to change.
func TestNoisyRefusesOneProject(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the flood runs under another uid: needs root")
	}
	dir, err := os.MkdirTemp("", "kvbn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := sidecartest.Start(t, sidecartest.Options{Project: "everyone", Socket: filepath.Join(dir, "kv.sock")})
	var stderr bytes.Buffer
	code := run(t.Context(), []string{"--socket", d.Socket, "--workloads", "noisy", "--concurrency", "1", "--keys", "10",
		"--duration", "100ms", "--warmup", "0s", "--flood-conns", "1", "--flood-batch", "2"}, io.Discard, &stderr)
	want := `the daemon puts the flood (uid 65534) in project "everyone", kvbench's own: run it with a --uid-map that maps uid 65534 to another project`
	if code != 1 || !strings.Contains(stderr.String(), want) {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr.String(), want)
	}
}

// nopTarget answers every call at once: what is left is kvbench's own loop.
type nopTarget struct{}

func (nopTarget) name() string                              { return "nothing" }
func (nopTarget) set(context.Context, string, []byte) error { return nil }
func (nopTarget) get(context.Context, string) (bool, error) { return true, nil }

// BenchmarkLoadLoop measures what kvbench itself spends per operation
// besides the target's client (key choice, timing, histogram), which its
// CPU figure ("kvbench", "loadgen") includes:
//
//	go test ./cmd/kvbench -run '^$' -bench LoadLoop
func BenchmarkLoadLoop(b *testing.B) {
	cfg := Config{Keys: DefaultKeys, ValueSize: DefaultValueSize, Seed: DefaultSeed}
	l := newLoad(&cfg)
	for _, w := range []Workload{WorkloadGet, WorkloadMixed} {
		b.Run(string(w), func(b *testing.B) {
			var ops uint64
			var cpu time.Duration
			for b.Loop() {
				c0 := selfCPU()
				r, err := l.run(b.Context(), runSpec{workload: w, callers: 1, duration: 100 * time.Millisecond, opTimeout: time.Second,
					callerTarget: func(int) target { return nopTarget{} }})
				if err != nil {
					b.Fatal(err)
				}
				cpu += selfCPU() - c0
				ops += r.ops
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(ops), "cpu-ns/kvbench-op")
		})
	}
}

// TestNoisyRefusesItsOwnUID checks, before any run, that the flood cannot
// be this process's uid, which the daemon would put in its project.
func TestNoisyRefusesItsOwnUID(t *testing.T) {
	var stderr bytes.Buffer
	code := run(t.Context(), []string{"--socket", filepath.Join(t.TempDir(), "none.sock"), "--workloads", "get,noisy",
		"--flood-uid", strconv.Itoa(os.Getuid())}, io.Discard, &stderr)
	want := fmt.Sprintf("kvbench: noisy workload: --flood-uid %d is kvbench's own uid", os.Getuid())
	if code != 1 || !strings.HasPrefix(stderr.String(), want) {
		t.Errorf("exit %d, stderr %q; want exit 1 and %q", code, stderr.String(), want)
	}
}
