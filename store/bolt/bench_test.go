package bolt_test

import (
	"bytes"
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/bolt"
)

// benchValue is about the size of a small JSON object, the typical value.
var benchValue = bytes.Repeat([]byte("x"), 100)

// BenchmarkSetParallel measures durable sets from concurrent callers, the
// load group commit exists for. Run with -cpu or -benchtime to vary it; the
// writes/commit metric shows how many sets share one fsync.
func BenchmarkSetParallel(b *testing.B) {
	var commits, writes atomic.Int64
	s := open(b, bolt.Config{
		SweepInterval: -1,
		ObserveBatch: func(n int) {
			commits.Add(1)
			writes.Add(int64(n))
		},
	})
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(32) // 32 callers per CPU: many clients, few cores
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := "key:" + strconv.FormatInt(next.Add(1)%10000, 10)
			if err := s.Set(ctx, "bench", k, benchValue, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if c := commits.Load(); c > 0 {
		b.ReportMetric(float64(writes.Load())/float64(c), "writes/commit")
	}
}

// BenchmarkGet measures concurrent strongly consistent reads of existing
// keys.
func BenchmarkGet(b *testing.B) {
	s := open(b, bolt.Config{SweepInterval: -1})
	ctx := context.Background()
	const keys = 10000
	for i := 0; i < keys; i += 1000 {
		items := make([]store.Item, 0, 1000)
		for j := i; j < i+1000; j++ {
			items = append(items, store.Item{Key: "key:" + strconv.Itoa(j), Value: benchValue})
		}
		if err := s.SetMany(ctx, "bench", items); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := "key:" + strconv.FormatInt(next.Add(1)%keys, 10)
			if _, found, err := s.Get(ctx, "bench", k); err != nil || !found {
				b.Errorf("Get(%s) = %v, %v", k, found, err)
				return
			}
		}
	})
}
