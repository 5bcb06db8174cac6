package postgres

import (
	"context"
	"strconv"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
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
