package bolt_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/bolt"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// The Do benchmarks hand the store rounds of 16 ops from 64 callers, as
// the daemon's connections do; compare them with BenchmarkSetParallel and
// BenchmarkGet, the same load through the waiting methods. ns/op and
// allocs/op are per op.

func BenchmarkDoSetParallel(b *testing.B) {
	s := open(b, bolt.Config{SweepInterval: -1})
	storetest.BenchDo(b, s, store.OpSet, benchValue, 0)
}

func BenchmarkDoGetParallel(b *testing.B) {
	s := open(b, bolt.Config{SweepInterval: -1})
	fillBench(b, s)
	storetest.BenchDo(b, s, store.OpGet, nil, benchKeys)
}

// BenchmarkGetParallel is BenchmarkGet with 64 callers, the load of
// BenchmarkDoGetParallel.
func BenchmarkGetParallel(b *testing.B) {
	s := open(b, bolt.Config{SweepInterval: -1})
	fillBench(b, s)
	storetest.BenchSync(b, s, store.OpGet, nil, benchKeys)
}

const benchKeys = 10000

func fillBench(b *testing.B, s store.Store) {
	ctx := context.Background()
	for i := 0; i < benchKeys; i += 1000 {
		items := make([]store.Item, 0, 1000)
		for j := i; j < i+1000; j++ {
			items = append(items, store.Item{Key: "key:" + strconv.Itoa(j), Value: benchValue})
		}
		if err := s.SetMany(ctx, "bench", items); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSetIfParallel is BenchmarkSetParallel through SetIf with the
// callers of BenchmarkDoSetParallel's load.
func BenchmarkSetIfParallel(b *testing.B) {
	s := open(b, bolt.Config{SweepInterval: -1})
	storetest.BenchSync(b, s, store.OpSet, benchValue, 0)
}
