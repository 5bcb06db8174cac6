package client_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
)

// benchCallers is the number of concurrent callers of the parallel
// benchmarks: the load of the product's throughput targets.
const benchCallers = 64

// benchValue is a ~100-byte JSON value, the size of the throughput targets.
type benchValue struct {
	Name  string   `json:"name"`
	Email string   `json:"email"`
	Roles []string `json:"roles"`
	Seen  int64    `json:"seen"`
}

var benchVal = benchValue{Name: "John Smith", Email: "john.smith@example.com", Roles: []string{"admin", "editor"}, Seen: 1712345678}

// benchClient starts a daemon and dials it with conns connections.
func benchClient(b *testing.B, conns int) *client.Client {
	b.Helper()
	d := sidecartest.Start(b, sidecartest.Options{})
	c, err := client.DialOptions(context.Background(), client.Options{Socket: d.Socket, Conns: conns})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// runParallel runs op from benchCallers goroutines.
func runParallel(b *testing.B, op func(ctx context.Context, i int64) error) {
	var n atomic.Int64
	b.SetParallelism(max(1, benchCallers/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := op(ctx, n.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkClientSetParallel(b *testing.B) {
	for _, conns := range []int{1, 4} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			c := benchClient(b, conns)
			runParallel(b, func(ctx context.Context, i int64) error {
				return c.Set(ctx, fmt.Sprint("user:", i%10000), benchVal, 0)
			})
		})
	}
}

func BenchmarkClientGetParallel(b *testing.B) {
	for _, conns := range []int{1, 4} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			c := benchClient(b, conns)
			const keys = 1000
			items := make([]client.Item, keys)
			for i := range items {
				items[i] = client.Item{Key: fmt.Sprint("user:", i), Value: benchVal}
			}
			if err := c.SetMany(context.Background(), items); err != nil {
				b.Fatal(err)
			}
			runParallel(b, func(ctx context.Context, i int64) error {
				var v benchValue
				found, err := c.Get(ctx, items[i%keys].Key, &v)
				if err == nil && !found {
					err = fmt.Errorf("%s not found", items[i%keys].Key)
				}
				return err
			})
		})
	}
}

// BenchmarkClientSequential is one caller's round trip: the latency a
// function sees at low load.
func BenchmarkClientSequential(b *testing.B) {
	c := benchClient(b, 1)
	ctx := context.Background()
	if err := c.Set(ctx, "user:1", benchVal, 0); err != nil {
		b.Fatal(err)
	}
	b.Run("get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v benchValue
			if _, err := c.Get(ctx, "user:1", &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("set", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Set(ctx, "user:1", benchVal, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ping", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Ping(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
