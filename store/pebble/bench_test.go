package pebble_test

import (
	"bytes"
	"context"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/pebble"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// benchValue is about the size of a small JSON object, the typical value.
var benchValue = bytes.Repeat([]byte("x"), 100)

// benchCallers is the number of concurrent callers: 64, as kvbench's
// c=64 runs.
const benchCallers = 64

// openBench opens a Pebble store in b.TempDir(), closed at the end of b.
func openBench(b *testing.B, observe func(int)) store.Store {
	s, err := pebble.Open(context.Background(), pebble.Config{
		Path: filepath.Join(b.TempDir(), "kv"), SweepInterval: -1, ObserveBatch: observe,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkSetParallel measures durable sets of 100-byte values from 64
// callers over 10,000 keys; compare two builds by alternating them, with
// -count, to see through the noise of a shared machine. cpu-µs/op is the
// process's CPU time (user and system, getrusage) per set, Pebble's
// background work and the kernel time of its syncs included;
// writes/commit how many sets shared one sync.
func BenchmarkSetParallel(b *testing.B) {
	var commits, writes atomic.Int64
	s := openBench(b, func(n int) {
		commits.Add(1)
		writes.Add(int64(n))
	})
	run(b, func(ctx context.Context, i int64) error {
		return s.Set(ctx, "bench", "key:"+strconv.FormatInt(i%10000, 10), benchValue, 0)
	})
	if c := commits.Load(); c > 0 {
		b.ReportMetric(float64(writes.Load())/float64(c), "writes/commit")
	}
}

// BenchmarkGetParallel measures gets of 100-byte values from 64 callers
// over 10,000 keys written ten times each beforehand (so that Pebble has
// flushed some of them to tables, as a store written steadily has).
func BenchmarkGetParallel(b *testing.B) {
	s := openBench(b, nil)
	ctx := context.Background()
	items := make([]store.Item, 0, 1000)
	for i := range 100000 {
		items = append(items, store.Item{Key: "key:" + strconv.Itoa(i%10000), Value: benchValue})
		if len(items) == cap(items) {
			if err := s.SetMany(ctx, "bench", items); err != nil {
				b.Fatal(err)
			}
			items = items[:0]
		}
	}
	run(b, func(ctx context.Context, i int64) error {
		_, found, err := s.Get(ctx, "bench", "key:"+strconv.FormatInt(i%10000, 10))
		if err == nil && !found {
			b.Error("a preloaded key is missing")
		}
		return err
	})
}

// run calls op b.N times from benchCallers goroutines and reports the
// process's CPU per call.
func run(b *testing.B, op func(ctx context.Context, i int64) error) {
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism((benchCallers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(ctx, next.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	cpu := cpuTime(b) - start
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
}

// cpuTime is the process's CPU time so far, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAdmin: the admin's reads of a project of 100k entries.
func BenchmarkAdmin(b *testing.B) {
	storetest.BenchmarkAdmin(b, openBench(b, nil))
}

// The Do benchmarks hand the store rounds of storetest.BenchRound ops from
// 64 callers, as the daemon's connections do; ns/op and allocs/op are per
// op.

func BenchmarkDoSetParallel(b *testing.B) {
	storetest.BenchDo(b, openBench(b, nil), store.OpSet, benchValue, 10000)
}

func BenchmarkDoGetParallel(b *testing.B) {
	s := openBench(b, nil)
	ctx := context.Background()
	for i := 0; i < 10000; i += 1000 {
		items := make([]store.Item, 0, 1000)
		for j := i; j < i+1000; j++ {
			items = append(items, store.Item{Key: "key:" + strconv.Itoa(j), Value: benchValue})
		}
		if err := s.SetMany(ctx, "bench", items); err != nil {
			b.Fatal(err)
		}
	}
	storetest.BenchDo(b, s, store.OpGet, nil, 10000)
}
