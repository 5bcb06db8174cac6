package postgres

import (
	"context"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

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
// concurrent callers.
func BenchmarkSetParallel(b *testing.B) {
	s, batches := benchStore(b)
	ctx := context.Background()
	setParallelism(b)
	var seed atomic.Uint64
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
