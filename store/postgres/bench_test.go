package postgres

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

const (
	// benchCallers is the number of concurrent callers the parallel
	// benchmarks aim for, as the daemon's performance targets are stated.
	benchCallers = 64
	// benchKeys is the key space the benchmarks spread over.
	benchKeys = 10000
)

// benchValue is a ~100-byte JSON value, the size the targets are stated for.
var benchValue = []byte(`{"user":"u-123456","name":"John Example","plan":"pro","visits":4711,"flags":["a","b"],"ok":true}`)

// benchStore opens a store on a fresh database and counts its transactions.
func benchStore(b *testing.B) (*Store, *atomic.Int64) {
	b.Helper()
	var batches atomic.Int64
	cfg := testConfig(pgtest.Database(b))
	cfg.ObserveBatch = func(int) { batches.Add(1) }
	return openStore(b, cfg), &batches
}

// setParallelism runs benchCallers goroutines in b.RunParallel.
func setParallelism(b *testing.B) {
	b.SetParallelism(max(benchCallers/runtime.GOMAXPROCS(0), 1))
}

// BenchmarkSetParallel measures durable Sets of ~100-byte values from 64
// concurrent callers. cpu-µs/op is the CPU time of this process (store and
// callers) per Set, pg-cpu-µs/op that of the database's backends (see
// BenchmarkSetSequential).
func BenchmarkSetParallel(b *testing.B) {
	benchmarkSetParallel(b, false)
}

// BenchmarkSetParallelLeases is BenchmarkSetParallel with quota leases
// (Config.Leases), so that the project's transactions overlap.
func BenchmarkSetParallelLeases(b *testing.B) {
	benchmarkSetParallel(b, true)
}

func benchmarkSetParallel(b *testing.B, leases bool) {
	var batches atomic.Int64
	cfg := testConfig(pgtest.Database(b))
	cfg.ObserveBatch = func(int) { batches.Add(1) }
	cfg.Leases = leases
	s := openStore(b, cfg)
	pg := dbConn(b, s.cfg.DSN)
	ctx := context.Background()
	setParallelism(b)
	var seed atomic.Uint64
	pgBefore, before := backendsCPU(b, pg), processCPU(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 1))
		for pb.Next() {
			if err := s.Set(ctx, "bench", "k"+strconv.Itoa(rng.IntN(benchKeys)), benchValue, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((processCPU(b)-before).Microseconds())/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64((backendsCPU(b, pg)-pgBefore).Microseconds())/float64(b.N), "pg-cpu-µs/op")
	if n := batches.Load(); n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "calls/txn")
	}
	if leases {
		b.ReportMetric(float64(s.grants.Load())/float64(b.N)*1000, "grants/kop")
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSetParallelTwoDaemons is BenchmarkSetParallel with the 64
// callers split over two stores on one database, as two daemons serving one
// project would be: their batches contend for the project's usage row.
func BenchmarkSetParallelTwoDaemons(b *testing.B) {
	dsn := pgtest.Database(b)
	var batches atomic.Int64
	stores := make([]*Store, 2)
	for i := range stores {
		cfg := testConfig(dsn)
		cfg.ObserveBatch = func(int) { batches.Add(1) }
		stores[i] = openStore(b, cfg)
	}
	ctx := context.Background()
	setParallelism(b)
	var seed atomic.Uint64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		n := seed.Add(1)
		s := stores[n%2]
		rng := rand.New(rand.NewPCG(n, 1))
		for pb.Next() {
			if err := s.Set(ctx, "bench", "k"+strconv.Itoa(rng.IntN(benchKeys)), benchValue, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if n := batches.Load(); n > 0 {
		b.ReportMetric(float64(b.N)/float64(n), "calls/txn")
	}
}

// BenchmarkGetParallel measures strongly consistent Gets of ~100-byte values
// from 64 concurrent callers.
func BenchmarkGetParallel(b *testing.B) {
	s, _ := benchStore(b)
	ctx := context.Background()
	items := make([]store.Item, 0, store.MaxBatchItems)
	for i := range benchKeys {
		items = append(items, store.Item{Key: "k" + strconv.Itoa(i), Value: benchValue})
		if len(items) == cap(items) || i == benchKeys-1 {
			if err := s.SetMany(ctx, "bench", items); err != nil {
				b.Fatal(err)
			}
			items = items[:0]
		}
	}
	setParallelism(b)
	var seed atomic.Uint64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 2))
		for pb.Next() {
			v, ok, err := s.Get(ctx, "bench", "k"+strconv.Itoa(rng.IntN(benchKeys)))
			if err != nil || !ok || len(v) != len(benchValue) {
				b.Errorf("Get = %d bytes, %v, %v", len(v), ok, err)
				return
			}
		}
	})
}

// BenchmarkSetSequential measures a lone caller's durable Sets of ~100-byte
// values: "store" through the store, "naive" as one autocommitted
// INSERT … ON CONFLICT through pgx, on the same database in the same
// process, which is what a function talking to PostgreSQL itself would run.
// The difference is what the store's statements and its queue add to a
// lone write. pg-cpu-µs/op is the CPU time of the database's backends per
// Set (from /proc, in clock ticks of 10 ms: run for a second or more).
func BenchmarkSetSequential(b *testing.B) {
	dsn := pgtest.Database(b)
	cfg := testConfig(dsn)
	s := openStore(b, cfg)
	ctx := context.Background()
	pg := dbConn(b, dsn)
	b.Run("store", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(1, 3))
		before := backendsCPU(b, pg)
		for b.Loop() {
			if err := s.Set(ctx, "bench", "k"+strconv.Itoa(rng.IntN(benchKeys)), benchValue, 0); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((backendsCPU(b, pg)-before).Microseconds())/float64(b.N), "pg-cpu-µs/op")
	})
	b.Run("do", func(b *testing.B) {
		// One op of Do at a time, as a connection's read loop hands over
		// a lone caller's set; cpu-µs/op is this process's CPU per Set.
		rng := rand.New(rand.NewPCG(1, 3))
		done := make(chan error, 1)
		keys := make([]string, benchKeys)
		for i := range keys {
			keys[i] = "k" + strconv.Itoa(i)
		}
		op := &store.Op{Kind: store.OpSet, Project: "bench", Value: benchValue, Done: func(o *store.Op) { done <- o.Err }}
		ops := []*store.Op{op}
		before, cpu := backendsCPU(b, pg), processCPU(b)
		b.ReportAllocs()
		for b.Loop() {
			op.Key, op.Deadline = keys[rng.IntN(benchKeys)], time.Now().Add(time.Minute)
			s.Do(ops)
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((processCPU(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
		b.ReportMetric(float64((backendsCPU(b, pg)-before).Microseconds())/float64(b.N), "pg-cpu-µs/op")
	})
	b.Run("naive", func(b *testing.B) {
		conn := dbConn(b, dsn)
		if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS naive_kv (key text PRIMARY KEY, value bytea NOT NULL)`); err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 3))
		before := backendsCPU(b, pg)
		for b.Loop() {
			_, err := conn.Exec(ctx, `INSERT INTO naive_kv (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value`, "k"+strconv.Itoa(rng.IntN(benchKeys)), benchValue)
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((backendsCPU(b, pg)-before).Microseconds())/float64(b.N), "pg-cpu-µs/op")
	})
}

// backendsCPU sums the user and system CPU time, so far, of the server
// processes working for conn's database (its backends, pg_stat_activity),
// read from /proc/<pid>/stat: the server must run on this machine.
func backendsCPU(b *testing.B, conn *pgx.Conn) time.Duration {
	b.Helper()
	rows, err := conn.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		b.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for _, pid := range pids {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue // ended since it was listed
		}
		// Fields 14 and 15 (utime, stime), counted after the command
		// name, which is in parentheses and may hold spaces.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		for _, n := range f[14-3 : 15-3+1] {
			ticks, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				b.Fatalf("/proc/%d/stat: %v", pid, err)
			}
			total += time.Duration(ticks) * (time.Second / 100) // USER_HZ
		}
	}
	return total
}
