package storetest

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// BenchRound is how many ops a caller of BenchDo hands over in one Do: the
// requests a connection of the daemon reads in one buffer under load.
const BenchRound = 16

// BenchInFlight is how many ops the benchmarks keep in flight: 64 callers,
// the c=64 load of kvbench. BenchSync runs that many goroutines; BenchDo
// runs BenchInFlight/BenchRound of them, each with a round in flight.
const BenchInFlight = 64

// parallelism returns what b.SetParallelism needs for n goroutines.
func parallelism(n int) int { return max(n/runtime.GOMAXPROCS(0), 1) }

// cpuClock reads the process's CPU time (user and system), so that a
// benchmark reports CPU per op, steadier than time per op on a shared
// machine.
type cpuClock struct{ start time.Duration }

func startCPU() cpuClock { return cpuClock{start: processCPU()} }

func (c cpuClock) report(b *testing.B) {
	if b.N > 0 {
		b.ReportMetric(float64(processCPU()-c.start)/float64(time.Microsecond)/float64(b.N), "µs-cpu/op")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchKeyNames returns the keys the benchmarks touch: "key:0" to "key:<n-1>",
// made once so that the loop allocates none.
func benchKeyNames(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
	}
	return keys
}

// BenchDo measures ops of kind on project "bench" through s's Do from
// BenchInFlight/BenchRound callers, each handing over rounds of BenchRound
// ops and waiting for the round's last Done. Gets read keys "key:0" to
// "key:<keys-1>", which must exist; sets write value under 10000 keys.
// ns/op and allocs/op are per op, and the "µs-cpu/op" metric is the
// process's CPU time per op (the database server's is not in it).
func BenchDo(b *testing.B, s store.Store, kind store.OpKind, value []byte, keys int) {
	a, ok := s.(store.Async)
	if !ok {
		b.Fatalf("%T does not implement store.Async", s)
	}
	if keys == 0 {
		keys = 10000
	}
	names := benchKeyNames(keys)
	var next atomic.Int64
	type caller struct {
		ops  [BenchRound]store.Op
		ptrs [BenchRound]*store.Op
		left atomic.Int32
		done chan struct{}
	}
	b.SetParallelism(parallelism(BenchInFlight / BenchRound))
	b.ReportAllocs()
	cpu := startCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := &caller{done: make(chan struct{}, 1)}
		doneFn := func(op *store.Op) {
			if op.Err != nil || (kind == store.OpGet && !op.Found) {
				b.Errorf("op %d %q = found %v, %v", op.Kind, op.Key, op.Found, op.Err)
			}
			if c.left.Add(-1) == 0 {
				c.done <- struct{}{}
			}
		}
		for i := range c.ops {
			c.ops[i] = store.Op{Kind: kind, Project: "bench", Value: value, Done: doneFn}
			c.ptrs[i] = &c.ops[i]
		}
		for {
			n := 0
			for n < BenchRound && pb.Next() {
				c.ops[n].Key = names[next.Add(1)%int64(keys)]
				n++
			}
			if n == 0 {
				return
			}
			c.left.Store(int32(n))
			a.Do(c.ptrs[:n])
			<-c.done
			if n < BenchRound {
				return
			}
		}
	})
	b.StopTimer()
	cpu.report(b)
}

// BenchSync is BenchDo through the Store's waiting methods (GetVersioned,
// SetIf), one op a call, from BenchInFlight callers.
func BenchSync(b *testing.B, s store.Store, kind store.OpKind, value []byte, keys int) {
	if keys == 0 {
		keys = 10000
	}
	names := benchKeyNames(keys)
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(parallelism(BenchInFlight))
	b.ReportAllocs()
	cpu := startCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			k := names[next.Add(1)%int64(keys)]
			var err error
			switch kind {
			case store.OpGet:
				var found bool
				_, found, err = s.GetVersioned(ctx, "bench", k)
				if err == nil && !found {
					b.Errorf("GetVersioned(%q): not found", k)
				}
			case store.OpSet:
				_, err = s.SetIf(ctx, "bench", k, value, 0, store.Cond{})
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	cpu.report(b)
}
