// Command kvbench is the load generator of kvsidecar: it drives a running
// daemon through the Go client (set, get and mixed workloads at given
// numbers of concurrent callers), runs the same load against the naive
// design (one SQL statement per request) on the daemon's PostgreSQL
// database and against Redis for comparison, and prints throughput,
// latency percentiles, their ratios, the CPU each process spent per
// operation, and the daemon's memory. Its noisy workload measures one
// project's latency while another floods the daemon. See --help, and
// docs/PERFORMANCE.md for the numbers and how they were produced.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func main() {
	if spec := os.Getenv(floodEnv); spec != "" {
		// The flooding child of the noisy workload (see startFlood).
		os.Exit(floodMain(os.Stdin, os.Stdout, os.Stderr, spec))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole command: it returns the exit status, 2 for a bad
// command line and 1 for a failed benchmark.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "kvbench: %v\n", err)
		return 2
	}
	if cfg.CPUProfile != "" {
		stop, err := startCPUProfile(cfg.CPUProfile)
		if err != nil {
			fmt.Fprintf(stderr, "kvbench: --cpuprofile: %v\n", err)
			return 2
		}
		defer stop()
	}
	if err := bench(ctx, &cfg, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "kvbench: %v\n", err)
		return 1
	}
	return 0
}

// startCPUProfile starts profiling kvbench's CPU into path and returns the
// function that stops and writes it.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
