package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

func TestBucketsCoverEveryValueWithinPrecision(t *testing.T) {
	values := []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 12345, 1 << 20, 999_999_999, 1<<40 - 1}
	rng := mrand.New(mrand.NewPCG(1, 2))
	for range 10000 {
		values = append(values, rng.Uint64N(1<<40))
	}
	for _, v := range values {
		i := bucketOf(v)
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d [%d, %d]", v, i, lo, hi)
		}
		if hi-lo > lo/subBuckets {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/%d of its values", i, lo, hi, subBuckets)
		}
		if i > 0 {
			if _, prevHi := bucketRange(i - 1); prevHi+1 != lo {
				t.Fatalf("buckets %d and %d are not contiguous: %d then %d", i-1, i, prevHi, lo)
			}
		}
	}
	if got := bucketOf(math.MaxUint64); got != histBuckets-1 {
		t.Errorf("bucketOf(max) = %d, want the last bucket %d", got, histBuckets-1)
	}
}

func TestPercentile(t *testing.T) {
	us := func(n int) time.Duration { return time.Duration(n) * time.Microsecond }
	tests := []struct {
		name    string
		samples []time.Duration
		q       float64
		want    time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one sample", []time.Duration{us(250)}, 0.5, us(250)},
		{"one sample p99", []time.Duration{us(250)}, 0.99, us(250)},
		{"small exact values", []time.Duration{3, 1, 2}, 0.5, 2},
		{"p50 of 1..100", seq(1, 100, us), 0.5, us(50)},
		{"p99 of 1..100", seq(1, 100, us), 0.99, us(99)},
		{"p100 of 1..100", seq(1, 100, us), 1, us(100)},
		{"p50 of 1..1000", seq(1, 1000, us), 0.5, us(500)},
		{"outlier does not move p50", append(seq(1, 99, func(int) time.Duration { return us(100) }), time.Minute), 0.5, us(100)},
		{"outlier is p100", append(seq(1, 99, func(int) time.Duration { return us(100) }), time.Minute), 1, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h histogram
			for _, s := range tt.samples {
				h.record(s)
			}
			got := h.percentile(tt.q)
			if !within(got, tt.want, 1.0/subBuckets) {
				t.Errorf("percentile(%v) = %v, want %v within 1/%d", tt.q, got, tt.want, subBuckets)
			}
		})
	}
}

// TestPercentileMatchesSortedSamples checks the histogram against the
// exact percentile of sorted samples, on a long-tailed distribution like
// real latencies, merged from several callers as a run does.
func TestPercentileMatchesSortedSamples(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(3, 4))
	var all []time.Duration
	var merged histogram
	for range 8 {
		var h histogram
		for range 5000 {
			d := time.Duration(math.Exp(rng.NormFloat64()*1.2+math.Log(300e3)) * float64(time.Nanosecond))
			h.record(d)
			all = append(all, d)
		}
		merged.merge(&h)
	}
	slices.Sort(all)
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := int(math.Ceil(q * float64(len(all))))
		want := all[rank-1]
		if got := merged.percentile(q); !within(got, want, 1.0/subBuckets) {
			t.Errorf("p%v = %v, exact %v", q*100, got, want)
		}
	}
	if merged.total != uint64(len(all)) {
		t.Errorf("merged total %d, want %d", merged.total, len(all))
	}
}

func seq(from, to int, f func(int) time.Duration) []time.Duration {
	var s []time.Duration
	for i := from; i <= to; i++ {
		s = append(s, f(i))
	}
	return s
}

func within(got, want time.Duration, rel float64) bool {
	return math.Abs(float64(got-want)) <= rel*float64(want)
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string // "" for success
		check   func(t *testing.T, c Config)
	}{
		{args: nil, check: func(t *testing.T, c Config) {
			if !slices.Equal(c.Concurrency, []int{1, 64}) || len(c.Workloads) != 3 || c.Duration != DefaultDuration ||
				c.ValueSize != 100 || c.Keys != DefaultKeys || c.Clients != 1 || c.Baseline != "" {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{args: []string{"--concurrency", " 4, 16 ,256", "--workloads", "mixed,get", "--clients", "3", "--duration", "250ms"}, check: func(t *testing.T, c Config) {
			if !slices.Equal(c.Concurrency, []int{4, 16, 256}) || !slices.Equal(c.Workloads, []Workload{WorkloadMixed, WorkloadGet}) ||
				c.Clients != 3 || c.Duration != 250*time.Millisecond {
				t.Errorf("parsed: %+v", c)
			}
		}},
		{args: []string{"--concurrency", "0"}, wantErr: "--concurrency: 0 callers: must be from 1 to 4096"},
		{args: []string{"--concurrency", "1,x"}, wantErr: `--concurrency: "x" is not a number of callers`},
		{args: []string{"--concurrency", ""}, wantErr: `--concurrency: "" is not a number of callers`},
		{args: []string{"--workloads", "set,delete"}, wantErr: `--workloads: unknown workload "delete": want set, get, mixed or noisy`},
		{args: []string{"--workloads", "get,get"}, wantErr: `--workloads: workload "get" given twice`},
		{args: []string{"--workloads", "get,"}, wantErr: `--workloads: empty workload in "get,"`},
		{args: []string{"--duration", "0s"}, wantErr: "--duration 0s: must be above 0"},
		{args: []string{"--duration", "11m"}, wantErr: "--duration 11m0s: must be above 0 and at most 10m0s"},
		{args: []string{"--warmup", "-1s"}, wantErr: "--warmup -1s"},
		{args: []string{"--value-size", "1"}, wantErr: "--value-size 1: must be at least 2"},
		{args: []string{"--keys", "0"}, wantErr: "--keys 0: must be from 1"},
		{args: []string{"--clients", "0"}, wantErr: "--clients 0: must be from 1"},
		{args: []string{"--daemon-pid", "-2"}, wantErr: "--daemon-pid -2"},
		{args: []string{"--baseline", "postgres://x", "--baseline-project", ""}, wantErr: "--baseline-project is empty"},
		{args: []string{"--flood-conns", "0"}, wantErr: "--flood-conns 0: must be from 1 to 1024"},
		{args: []string{"--flood-batch", "0"}, wantErr: "--flood-batch 0: must be at least 1"},
		{args: []string{"--flood-value-size", "1"}, wantErr: "--flood-value-size 1: must be at least 2"},
		{args: []string{"--flood-uid", "-1"}, wantErr: "--flood-uid -1: must be a uid"},
		{args: []string{"--redis", "http://x"}, wantErr: `--redis "http://x": redis: invalid URL scheme: http`},
		{args: []string{"--redis", "unix:///run/redis.sock", "--workloads", "get,noisy", "--json", "out.json"}, check: func(t *testing.T, c Config) {
			if c.Redis != "unix:///run/redis.sock" || c.JSON != "out.json" || !slices.Equal(c.Workloads, []Workload{WorkloadGet, WorkloadNoisy}) ||
				c.Flood != (FloodConfig{UID: DefaultFloodUID, Conns: DefaultFloodConns, Batch: DefaultFloodBatch, ValueSize: DefaultFloodValueSize}) {
				t.Errorf("parsed: %+v", c)
			}
		}},
		{args: []string{"set"}, wantErr: `unexpected argument "set": kvbench takes only flags`},
		{args: []string{"--nope"}, wantErr: "flag provided but not defined: -nope"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			c, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestHelpExplainsAndExitsZero(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, &out); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"naive", "--baseline", "SO_PEERCRED", "-concurrency", "-duration"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "%!") {
		t.Errorf("--help has a formatting error:\n%s", out.String())
	}
	if _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v, want flag.ErrHelp", err)
	}
}

func TestBadCommandLineExitsTwo(t *testing.T) {
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"--concurrency", "0"}, io.Discard, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.HasPrefix(stderr.String(), "kvbench: --concurrency") {
		t.Errorf("stderr %q", stderr.String())
	}
}

func TestNoDaemonIsAClearError(t *testing.T) {
	var stderr bytes.Buffer
	sock := t.TempDir() + "/none.sock"
	if code := run(context.Background(), []string{"--socket", sock, "--duration", "1s"}, io.Discard, &stderr); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), sock) {
		t.Errorf("the error does not name the socket: %q", stderr.String())
	}
}

func TestJSONValueHasTheSizeAsked(t *testing.T) {
	for size := minValueSize; size <= 300; size++ {
		v := jsonValue(size, 1712345678)
		if len(v) != size || !json.Valid(v) {
			t.Fatalf("size %d: got %d bytes %q, valid %v", size, len(v), v, json.Valid(v))
		}
	}
	var rec map[string]any
	if err := json.Unmarshal(jsonValue(DefaultValueSize, 1), &rec); err != nil || rec["email"] == nil {
		t.Errorf("the default value is not a record: %v %v", rec, err)
	}
}

// TestRunAgainstDaemon runs a short load against a real daemon (embedded
// store) and checks the table: a row per workload and concurrency, each
// with operations, and the daemon's memory read through the pid the
// kernel gave for the socket (this test process, where the daemon runs).
func TestRunAgainstDaemon(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	prof := t.TempDir() + "/cpu.pprof"
	out := runBench(t, "--socket", d.Socket, "--concurrency", "1,4", "--keys", "200", "--cpuprofile", prof)
	rows := tableRows(t, out, false)
	checkRows(t, out, rows, []string{"set", "get", "mixed"}, []int{1, 4})
	if want := fmt.Sprintf("daemon RSS (pid %d): ", os.Getpid()); !strings.Contains(out, want) {
		t.Errorf("output has no %q: the pid from SO_PEERCRED should be this process:\n%s", want, out)
	}
	if fi, err := os.Stat(prof); err != nil || fi.Size() == 0 {
		t.Errorf("--cpuprofile wrote no profile: %v", err)
	}
}

// TestRunWithBaseline runs the baseline on a fresh PostgreSQL database next
// to a daemon on it, and checks that the ratio columns are filled and that
// the baseline's rows are removed at the end.
func TestRunWithBaseline(t *testing.T) {
	dsn := pgtest.Database(t)
	d := sidecartest.Start(t, sidecartest.Options{Postgres: dsn})
	out := runBench(t, "--socket", d.Socket, "--baseline", dsn, "--concurrency", "1,4", "--keys", "100", "--workloads", "set,get")
	rows := tableRows(t, out, true)
	checkRows(t, out, rows, []string{"set", "get"}, []int{1, 4})
	for _, r := range rows {
		if !strings.HasSuffix(r[8], "×") {
			t.Errorf("row %v has no ratio", r)
		}
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM kv_entries WHERE project = $1`, DefaultBaselineProject).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d baseline rows left behind", n)
	}
	t.Run("refuses the daemon's project", func(t *testing.T) {
		var stderr bytes.Buffer
		code := run(ctx, []string{"--socket", d.Socket, "--baseline", dsn, "--baseline-project", "test"}, io.Discard, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), `--baseline-project "test" is the daemon's project`) {
			t.Errorf("exit %d, stderr %q", code, stderr.String())
		}
	})
}

// runBench runs kvbench with short runs (unless args say how long) and
// returns its stdout.
func runBench(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if !slices.Contains(args, "--duration") {
		args = append(args, "--duration", "200ms", "--warmup", "50ms")
	}
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	t.Logf("stdout:\n%s", stdout.String())
	return stdout.String()
}

// tableRows returns the fields of the main table's data rows.
func tableRows(t *testing.T, out string, baseline bool) [][]string {
	t.Helper()
	want := 7 // workload callers ops/s p50 p99 RSS(2 fields)
	if baseline {
		want += 5 // base ops/s, base p50, base p99, ratio, Δp50 (c=1 only)
	}
	rows := table(out, "workload", "callers", "ops/s")
	for _, f := range rows {
		if len(f) != want && len(f) != want-1 {
			t.Fatalf("row %q has %d fields, want %d", f, len(f), want)
		}
	}
	return rows
}

// table returns the fields of the data rows of the table of out whose
// header starts with header: the lines after it, up to the first empty
// one or the first note ("word: ...").
func table(out string, header ...string) [][]string {
	var rows [][]string
	in := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case !in:
			in = len(f) >= len(header) && slices.Equal(f[:len(header)], header)
		case len(f) == 0 || strings.HasSuffix(f[0], ":"):
			return rows
		default:
			rows = append(rows, f)
		}
	}
	return rows
}

// checkRows checks that rows hold each workload at each concurrency, in
// that order, each with operations.
func checkRows(t *testing.T, out string, rows [][]string, workloads []string, callers []int) {
	t.Helper()
	if len(rows) != len(workloads)*len(callers) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(workloads)*len(callers), out)
	}
	i := 0
	for _, w := range workloads {
		for _, c := range callers {
			r := rows[i]
			i++
			if r[0] != w || r[1] != strconv.Itoa(c) {
				t.Errorf("row %d is %s c=%s, want %s c=%d", i, r[0], r[1], w, c)
			}
			if ops, err := strconv.ParseFloat(r[2], 64); err != nil || ops <= 0 {
				t.Errorf("row %v: ops/s %q", r, r[2])
			}
		}
	}
}
