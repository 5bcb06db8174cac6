package batch

import (
	"context"
	"testing"
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
