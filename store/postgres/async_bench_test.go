package postgres

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// The Do benchmarks hand the store rounds of storetest.BenchRound ops from
// callers that keep 64 ops in flight, as the daemon's connections do; the
// Sync ones are the same load through the waiting methods, one op a call
// from 64 callers. ns/op, allocs/op and µs-cpu/op (this process only, not
// the server's) are per op.

func BenchmarkDoSetParallel(b *testing.B) {
	s, batches := benchStore(b)
	storetest.BenchDo(b, s, store.OpSet, benchValue, benchKeys)
	reportTxns(b, batches.Load())
}

func BenchmarkSyncSetParallel(b *testing.B) {
	s, batches := benchStore(b)
	storetest.BenchSync(b, s, store.OpSet, benchValue, benchKeys)
	reportTxns(b, batches.Load())
}

func BenchmarkDoGetParallel(b *testing.B) {
	s, _ := benchStore(b)
	fillAsyncBench(b, s)
	storetest.BenchDo(b, s, store.OpGet, nil, benchKeys)
}

func BenchmarkSyncGetParallel(b *testing.B) {
	s, _ := benchStore(b)
	fillAsyncBench(b, s)
	storetest.BenchSync(b, s, store.OpGet, nil, benchKeys)
}

func reportTxns(b *testing.B, txns int64) {
	if txns > 0 {
		b.ReportMetric(float64(b.N)/float64(txns), "calls/txn")
	}
}

// fillAsyncBench writes the keys the storetest benchmarks read.
func fillAsyncBench(b *testing.B, s *Store) {
	ctx := context.Background()
	items := make([]store.Item, 0, store.MaxBatchItems)
	for i := range benchKeys {
		items = append(items, store.Item{Key: "key:" + strconv.Itoa(i), Value: benchValue})
		if len(items) == cap(items) || i == benchKeys-1 {
			if err := s.SetMany(ctx, "bench", items); err != nil {
				b.Fatal(err)
			}
			items = items[:0]
		}
	}
}

// BenchmarkDoGetLone measures a lone caller's gets through Do, one op at a
// time, each answered before the next is handed over: the round the daemon's
// read loop runs itself at an idle reader. "naive" is the same read as one
// prepared SELECT through pgx on the same database, what a function talking
// to PostgreSQL itself would run. µs-cpu/op is this process's CPU per get,
// pg-cpu-µs/op the database's backends' (see BenchmarkSetSequential).
func BenchmarkDoGetLone(b *testing.B) {
	dsn := pgtest.Database(b)
	s := openStore(b, testConfig(dsn))
	fillAsyncBench(b, s)
	pg := dbConn(b, dsn)
	b.Run("store", func(b *testing.B) {
		op := &store.Op{Kind: store.OpGet, Project: "bench"}
		op.Done = func(o *store.Op) {
			if o.Err != nil || !o.Found {
				b.Errorf("get %q = found %v, %v", o.Key, o.Found, o.Err)
			}
		}
		ops := []*store.Op{op}
		i := 0
		b.ReportAllocs()
		before, cpu := backendsCPU(b, pg), processCPU(b)
		for b.Loop() {
			op.Key = benchKeyNames[i%benchKeys]
			op.Deadline = time.Now().Add(time.Minute)
			i++
			s.Do(ops)
		}
		reportLoneCPU(b, pg, before, cpu)
	})
	b.Run("naive", func(b *testing.B) {
		conn := dbConn(b, dsn)
		ctx := context.Background()
		i := 0
		var v []byte
		b.ReportAllocs()
		before, cpu := backendsCPU(b, pg), processCPU(b)
		for b.Loop() {
			err := conn.QueryRow(ctx, `SELECT value FROM kv_entries WHERE project = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > now())`,
				"bench", []byte(benchKeyNames[i%benchKeys])).Scan(&v)
			if err != nil {
				b.Fatal(err)
			}
			i++
		}
		reportLoneCPU(b, pg, before, cpu)
	})
}

// benchKeyNames are the keys fillAsyncBench writes, made once.
var benchKeyNames = func() []string {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
	}
	return keys
}()

func reportLoneCPU(b *testing.B, pg *pgx.Conn, pgBefore, before time.Duration) {
	b.ReportMetric(float64((backendsCPU(b, pg)-pgBefore).Microseconds())/float64(b.N), "pg-cpu-µs/op")
	b.ReportMetric(float64((processCPU(b)-before).Microseconds())/float64(b.N), "µs-cpu/op")
}
