package batch

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSubmitParallel measures what the queue itself costs a call:
// enqueue, the drain, the handoff of the answer, with an apply that does
// nothing. It reports the mean batch size, which shows whether callers
// share batches at all.
func BenchmarkSubmitParallel(b *testing.B) {
	var batches, calls int
	q := New(Config[int, int]{
		Name:      "bench",
		Capacity:  1024,
		MaxWeight: 1024,
		Apply: func(cs []*Call[int, int]) {
			batches++
			calls += len(cs)
			for _, c := range cs {
				c.Answer(c.Item)
			}
		},
	})
	b.SetParallelism(32) // 32 callers a core, as many waiting writers
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for i := 0; pb.Next(); i++ {
			if r, err := q.Submit(ctx, i); err != nil || r != i {
				b.Errorf("Submit(%d) = %d, %v", i, r, err)
				return
			}
		}
	})
	b.StopTimer()
	q.Close() // batches and calls are the drain's; read them after it ended
	if batches > 0 {
		b.ReportMetric(float64(calls)/float64(batches), "calls/batch")
	}
}

// BenchmarkSubmitAllParallel is BenchmarkSubmitParallel through SubmitAll:
// each of 64 submitters hands over rounds of 16 calls and waits for the
// round's last answer, as a connection of the daemon does. It reports, per
// call, what the queue costs without a goroutine or a channel per call.
func BenchmarkSubmitAllParallel(b *testing.B) {
	const round = 16
	type waiter struct {
		left atomic.Int32
		done chan struct{}
	}
	var batches, calls int
	var q *Queue[*waiter, int]
	q = New(Config[*waiter, int]{
		Name:      "bench",
		Capacity:  4096,
		MaxWeight: 1024,
		Apply: func(cs []*Call[*waiter, int]) {
			batches++
			calls += len(cs)
			for _, c := range cs {
				c.Answer(1)
			}
		},
		Notify: func(w **waiter, _ int, err error) {
			if err != nil {
				b.Errorf("call failed: %v", err)
			}
			if (*w).left.Add(-1) == 0 {
				(*w).done <- struct{}{}
			}
		},
	})
	b.SetParallelism(32) // 64 submitters on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := &waiter{done: make(chan struct{}, 1)}
		cs := make([]*Call[*waiter, int], 0, round)
		for more := true; more; {
			cs = cs[:0]
			for len(cs) < round && pb.Next() {
				c := q.NewCall()
				c.Item = w
				cs = append(cs, c)
			}
			more = len(cs) == round
			if len(cs) == 0 {
				break
			}
			w.left.Store(int32(len(cs)))
			q.SubmitAll(cs)
			<-w.done
		}
	})
	b.StopTimer()
	q.Close()
	if batches > 0 {
		b.ReportMetric(float64(calls)/float64(batches), "calls/batch")
	}
}

// BenchmarkLoneCaller is one submitter handing over one call at a time and
// waiting for its answer, as a connection with a single caller does: with
// SubmitAll every call wakes the drain and waits to be woken back; with
// SubmitOrApply the submitter applies it itself. It reports the process's
// CPU per call beside ns/op, the figure the daemon's one-caller path cares
// about.
func BenchmarkLoneCaller(b *testing.B) {
	for _, tc := range []struct {
		name   string
		submit func(q *Queue[chan struct{}, int], cs []*Call[chan struct{}, int])
	}{
		{"SubmitAll", (*Queue[chan struct{}, int]).SubmitAll},
		{"SubmitOrApply", (*Queue[chan struct{}, int]).SubmitOrApply},
	} {
		b.Run(tc.name, func(b *testing.B) {
			q := New(Config[chan struct{}, int]{
				Name:      "bench",
				Capacity:  16,
				MaxWeight: 16,
				Apply: func(cs []*Call[chan struct{}, int]) {
					for _, c := range cs {
						c.Answer(1)
					}
				},
				Notify: func(done *chan struct{}, _ int, err error) {
					if err != nil {
						b.Errorf("call failed: %v", err)
					}
					*done <- struct{}{}
				},
			})
			defer q.Close()
			done := make(chan struct{}, 1)
			cs := make([]*Call[chan struct{}, int], 1)
			b.ReportAllocs()
			start := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				c := q.NewCall()
				c.Item = done
				cs[0] = c
				tc.submit(q, cs)
				<-done
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/1e3/float64(b.N), "µs-cpu/op")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
