package pebble_test

import (
	"bytes"
	"context"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
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

// sweepProjects is the number of projects of the sweep benchmarks: a
// sidecar serving many tenants.
const sweepProjects = 20000

// openSwept opens a store of sweepProjects projects of one entry each, on
// clock, with the background sweeper off, and sweeps it once.
func openSwept(b *testing.B, clock *storetest.Clock) *pebble.Store {
	s, err := pebble.Open(context.Background(), pebble.Config{
		Path: filepath.Join(b.TempDir(), "kv"), Now: clock.Now, SweepInterval: -1,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	seedSwept(b, s)
	if _, err := s.Sweep(context.Background()); err != nil {
		b.Fatal(err)
	}
	return s
}

// seedSwept writes one entry into each of sweepProjects projects.
func seedSwept(b *testing.B, s *pebble.Store) {
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range benchCallers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= sweepProjects; i = next.Add(1) {
				if err := s.Set(ctx, "p"+strconv.FormatInt(i, 10), "k", benchValue, 0); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkSweep measures one Sweep of a store of 20,000 projects, when
// nothing is due (due=0) and when 20 projects have an entry that expired
// (due=20, set beforehand, out of the timing). cpu-µs/sweep is the
// process's CPU time during the Sweep calls alone.
func BenchmarkSweep(b *testing.B) {
	for _, due := range []int{0, 20} {
		b.Run("projects=20000/due="+strconv.Itoa(due), func(b *testing.B) {
			clock := storetest.NewClock()
			s := openSwept(b, clock)
			ctx := context.Background()
			var cpu time.Duration
			b.ResetTimer()
			for i := range b.N {
				if due > 0 {
					b.StopTimer()
					for j := range due {
						p := "p" + strconv.Itoa(1+(i*due+j)%sweepProjects)
						if err := s.Set(ctx, p, "t", benchValue, time.Millisecond); err != nil {
							b.Fatal(err)
						}
					}
					clock.Advance(2 * time.Millisecond)
					b.StartTimer()
				}
				start := cpuTime(b)
				n, err := s.Sweep(ctx)
				cpu += cpuTime(b) - start
				if err != nil || n != int64(due) {
					b.Fatalf("Sweep = %d, %v; want %d", n, err, due)
				}
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/sweep")
		})
	}
}

// BenchmarkSetDuringSweep measures a lone caller's durable sets into one
// project of a store of 20,000 while another goroutine sweeps without
// pause, nothing being due: p50-µs, p99-µs and max-µs are the sets'
// latencies, which every sweep request that holds the committer adds to.
func BenchmarkSetDuringSweep(b *testing.B) {
	clock := storetest.NewClock()
	s := openSwept(b, clock)
	ctx := context.Background()
	stop := make(chan struct{})
	swept := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				swept <- nil
				return
			default:
			}
			if _, err := s.Sweep(ctx); err != nil {
				swept <- err
				return
			}
		}
	}()
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := s.Set(ctx, "p1", "k", benchValue, 0); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(start)
	}
	b.StopTimer()
	close(stop)
	if err := <-swept; err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(lat[len(lat)/2]), "p50-µs")
	b.ReportMetric(us(lat[len(lat)*99/100]), "p99-µs")
	b.ReportMetric(us(lat[len(lat)-1]), "max-µs")
}

// BenchmarkFirstSweepAfterOpen measures the first Sweep after the store of
// 20,000 projects is opened again (the reopening out of the timing), when
// what expires when is not known yet and every project is looked at;
// batches/sweep is how many commits it took, so ns/op over batches/sweep
// is how long each held the committer.
func BenchmarkFirstSweepAfterOpen(b *testing.B) {
	clock := storetest.NewClock()
	path := filepath.Join(b.TempDir(), "kv")
	var batches atomic.Int64
	cfg := pebble.Config{Path: path, Now: clock.Now, SweepInterval: -1,
		ObserveBatch: func(int) { batches.Add(1) }}
	s, err := pebble.Open(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	seedSwept(b, s)
	b.ResetTimer()
	var swept int64
	for range b.N {
		b.StopTimer()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		if s, err = pebble.Open(ctx, cfg); err != nil {
			b.Fatal(err)
		}
		before := batches.Load()
		b.StartTimer()
		if _, err := s.Sweep(ctx); err != nil {
			b.Fatal(err)
		}
		swept += batches.Load() - before
	}
	b.StopTimer()
	b.ReportMetric(float64(swept)/float64(b.N), "batches/sweep")
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}
