package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/internal/daemon"
	"github.com/kvsidecar/kvsidecar/sidecar"
)

// The benchmarks run a real daemon on the embedded store in a child process
// (this test binary, started again with benchDaemonEnv set), so that the
// CPU time of the benchmark's process is the client's alone. Each reports
// it as client-cpu-µs/op: the process's user and system time (getrusage)
// over the timed loop, divided by b.N. It includes the benchmark's own loop
// and the Go runtime (GC, scheduler), as a user's process would; and
// sleeps/op, its threads' voluntary context switches per operation.

// benchCallers is the number of concurrent callers of the parallel
// benchmarks: the load of the product's throughput targets.
const benchCallers = 64

// benchDaemonEnv names the directory of the benchmarks' daemon, for the
// child process that runs it.
const benchDaemonEnv = "KVSIDECAR_BENCH_DAEMON"

// benchDaemonStart bounds the wait for the child daemon's socket.
const benchDaemonStart = 30 * time.Second

// benchKeys is the number of distinct keys the benchmarks use.
const benchKeys = 1000

// benchValue is a ~100-byte JSON value, the size of the throughput targets.
type benchValue struct {
	Name  string   `json:"name"`
	Email string   `json:"email"`
	Roles []string `json:"roles"`
	Seen  int64    `json:"seen"`
}

var benchVal = benchValue{Name: "John Smith", Email: "john.smith@example.com", Roles: []string{"admin", "editor"}, Seen: 1712345678}

// serveBenchDaemon runs the benchmarks' daemon in dir until SIGTERM; it is
// the child process's whole life.
func serveBenchDaemon(dir string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d, err := daemon.New(ctx, daemon.Config{
		Server:  sidecar.Config{Socket: filepath.Join(dir, "kv.sock")},
		DataDir: filepath.Join(dir, "data"),
		Project: "bench",
	}, zap.NewNop())
	if err != nil {
		fmt.Fprintf(os.Stderr, "start the benchmarks' daemon: %v\n", err)
		return 1
	}
	if err := d.Run(ctx, nil); err != nil {
		fmt.Fprintf(os.Stderr, "the benchmarks' daemon: %v\n", err)
		return 1
	}
	return 0
}

// benchDaemon starts the benchmarks' daemon in a child process and returns
// its socket; the daemon is stopped when b ends.
func benchDaemon(b *testing.B) string {
	b.Helper()
	// Socket paths are limited to 108 bytes; test temp dirs can be long.
	dir, err := os.MkdirTemp("", "kvbench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), benchDaemonEnv+"="+dir)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the benchmark
	if err := cmd.Start(); err != nil {
		b.Fatalf("start the daemon: %v", err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			b.Errorf("the daemon stopped with: %v", err)
		}
	})
	socket := filepath.Join(dir, "kv.sock")
	ctx, cancel := context.WithTimeout(context.Background(), benchDaemonStart)
	defer cancel()
	for {
		c, err := client.Dial(ctx, socket)
		if err == nil {
			c.Close()
			return socket
		}
		if ctx.Err() != nil || !errors.Is(err, client.ErrUnavailable) {
			b.Fatalf("the daemon did not start: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchClient dials the daemon at socket with conns connections and fills
// the benchmarks' keys.
func benchClient(b *testing.B, socket string, conns int) (*client.Client, []string) {
	b.Helper()
	c, err := client.DialOptions(context.Background(), client.Options{Socket: socket, Conns: conns})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	items := make([]client.Item, benchKeys)
	keys := make([]string, benchKeys)
	for i := range items {
		keys[i] = fmt.Sprint("user:", i)
		items[i] = client.Item{Key: keys[i], Value: benchVal}
	}
	if err := c.SetMany(context.Background(), items); err != nil {
		b.Fatal(err)
	}
	return c, keys
}

// usage is the process's user and system CPU time so far, and how many
// times its threads went to sleep waiting (voluntary context switches:
// futex waits, epoll waits, blocking reads), each one a wake-up later.
func usage(b *testing.B) (cpu time.Duration, sleeps int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw
}

// measure runs loop as the timed part of b and reports, per operation, the
// process's CPU time and its threads' sleeps beside ns/op. The sleeps
// count the wake-ups the client's design costs, and vary far less than
// CPU time on a busy machine.
func measure(b *testing.B, loop func()) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, sleeps0 := usage(b)
	loop()
	cpu1, sleeps1 := usage(b)
	b.StopTimer()
	b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/1e3/float64(b.N), "client-cpu-µs/op")
	b.ReportMetric(float64(sleeps1-sleeps0)/float64(b.N), "sleeps/op")
}

// benchDeadline is the deadline of the callers' contexts in the benchmarks
// that give them one: far beyond any call, so that it is only carried.
const benchDeadline = time.Hour

// callerContext is the context a benchmark's caller passes to every call:
// context.Background, or with withDeadline one with a deadline, as kvbench
// and most callers pass; such a context can end, so a caller reading the
// socket must be able to stop.
func callerContext(withDeadline bool) (context.Context, context.CancelFunc) {
	if withDeadline {
		return context.WithTimeout(context.Background(), benchDeadline)
	}
	return context.Background(), func() {}
}

// runParallel runs op from benchCallers goroutines.
func runParallel(b *testing.B, op func(ctx context.Context, i int) error) {
	runParallelCtx(b, false, op)
}

// runParallelCtx is runParallel, each caller with its own context of
// callerContext(withDeadline).
func runParallelCtx(b *testing.B, withDeadline bool, op func(ctx context.Context, i int) error) {
	var n atomic.Int64
	b.SetParallelism(max(1, benchCallers/runtime.GOMAXPROCS(0)))
	measure(b, func() {
		b.RunParallel(func(pb *testing.PB) {
			ctx, cancel := callerContext(withDeadline)
			defer cancel()
			for pb.Next() {
				if err := op(ctx, int(n.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// runSequential runs op from one caller.
func runSequential(b *testing.B, op func(ctx context.Context, i int) error) {
	runSequentialCtx(b, false, op)
}

// runSequentialCtx is runSequential with a context of
// callerContext(withDeadline).
func runSequentialCtx(b *testing.B, withDeadline bool, op func(ctx context.Context, i int) error) {
	ctx, cancel := callerContext(withDeadline)
	defer cancel()
	measure(b, func() {
		for i := range b.N {
			if err := op(ctx, i); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchOps are the operations every benchmark runs: JSON values as most
// callers use them, and bytes, which shows the client's own cost without
// encoding/json's.
func benchOps(c *client.Client, keys []string) []struct {
	name string
	op   func(ctx context.Context, i int) error
} {
	raw := []byte(`{"name":"John Smith","email":"john.smith@example.com","roles":["admin","editor"],"seen":1712345678}`)
	return []struct {
		name string
		op   func(ctx context.Context, i int) error
	}{
		{"get", func(ctx context.Context, i int) error {
			var v benchValue
			found, err := c.Get(ctx, keys[i%len(keys)], &v)
			if err == nil && !found {
				err = fmt.Errorf("%s not found", keys[i%len(keys)])
			}
			return err
		}},
		{"set", func(ctx context.Context, i int) error {
			return c.Set(ctx, keys[i%len(keys)], &benchVal, 0)
		}},
		{"getbytes", func(ctx context.Context, i int) error {
			_, found, err := c.GetBytes(ctx, keys[i%len(keys)])
			if err == nil && !found {
				err = fmt.Errorf("%s not found", keys[i%len(keys)])
			}
			return err
		}},
		{"setbytes", func(ctx context.Context, i int) error {
			return c.SetBytes(ctx, keys[i%len(keys)], raw, 0)
		}},
		{"ping", func(ctx context.Context, i int) error { return c.Ping(ctx) }},
	}
}

// BenchmarkClientParallel is benchCallers concurrent callers: the load of
// the throughput targets.
func BenchmarkClientParallel(b *testing.B) {
	socket := benchDaemon(b)
	for _, conns := range []int{1, 4} {
		c, keys := benchClient(b, socket, conns)
		for _, o := range benchOps(c, keys) {
			b.Run(fmt.Sprintf("%s/conns=%d", o.name, conns), func(b *testing.B) {
				runParallel(b, o.op)
			})
		}
	}
}

// BenchmarkClientSequential is one caller's round trip: the latency a
// function sees at low load.
func BenchmarkClientSequential(b *testing.B) {
	socket := benchDaemon(b)
	c, keys := benchClient(b, socket, 1)
	for _, o := range benchOps(c, keys) {
		b.Run(o.name, func(b *testing.B) {
			runSequential(b, o.op)
		})
	}
}

// BenchmarkClientDeadline is getbytes and setbytes, at benchCallers
// callers and at one, with a context that has a deadline: what kvbench
// and most callers pass.
func BenchmarkClientDeadline(b *testing.B) {
	socket := benchDaemon(b)
	c, keys := benchClient(b, socket, 1)
	for _, o := range benchOps(c, keys) {
		if o.name != "getbytes" && o.name != "setbytes" {
			continue
		}
		b.Run(o.name+"/parallel", func(b *testing.B) { runParallelCtx(b, true, o.op) })
		b.Run(o.name+"/sequential", func(b *testing.B) { runSequentialCtx(b, true, o.op) })
	}
}
