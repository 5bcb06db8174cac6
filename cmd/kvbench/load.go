package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"
)

// valueVariants is how many distinct values the callers choose from, so
// that consecutive writes of a key usually change it.
const valueVariants = 16

// load is what every run shares: the keys and the values.
type load struct {
	keys   []string
	values [][]byte
	seed   uint64
}

func newLoad(cfg *Config) *load {
	l := &load{keys: make([]string, cfg.Keys), seed: cfg.Seed}
	width := len(strconv.Itoa(cfg.Keys - 1))
	for i := range l.keys {
		l.keys[i] = fmt.Sprintf("%s%0*d", DefaultKeyPrefix, width, i)
	}
	for i := range valueVariants {
		l.values = append(l.values, jsonValue(cfg.ValueSize, int64(1712345678+i)))
	}
	return l
}

// jsonValue returns a JSON object of exactly size bytes, shaped like a
// small user record and padded with a "pad" string; sizes too small for
// the record get a record cut down to a JSON string of that size.
func jsonValue(size int, seen int64) []byte {
	base := fmt.Sprintf(`{"name":"John Smith","email":"john.smith@example.com","roles":["admin","editor"],"seen":%d`, seen)
	const padField = `,"pad":""}`
	if n := size - len(base) - len(padField); n >= 0 {
		return []byte(base + `,"pad":"` + strings.Repeat("x", n) + `"}`)
	}
	if n := size - len(base) - 1; n == 0 {
		return []byte(base + "}")
	}
	return []byte(`"` + strings.Repeat("x", size-2) + `"`)
}

// result is what one run measured.
type result struct {
	ops      uint64        // operations that started and ended within the measured window
	elapsed  time.Duration // the measured window
	hist     histogram     // latencies of those operations
	peakRSS  int64         // the daemon's peak RSS during the run, bytes; 0 if not sampled
	cpu      cpuShares     // CPU per operation of each process taking part, over the window
	gets     uint64
	sets     uint64
	getsMiss uint64 // gets that found nothing: never expected, every key is written first
}

// opsPerSec is the throughput of the measured window.
func (r *result) opsPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// runSpec is one run: a workload at a concurrency against a target.
type runSpec struct {
	workload Workload
	callers  int
	warmup   time.Duration
	duration time.Duration
	// opTimeout is how long past the end of the run an operation may still
	// take; one that takes longer fails the run.
	opTimeout time.Duration
	// callerTarget returns what caller i calls.
	callerTarget func(i int) target
	// meter, if not nil, measures the CPU of the processes taking part
	// over the measured window.
	meter *cpuMeter
}

// run drives spec for warmup+duration and measures the operations that
// both start and end inside the duration window. Every caller has its own
// histogram and generator (seeded from the load's seed and the caller's
// index), so callers share nothing while they run. The first error ends
// the run and is returned.
func (l *load) run(ctx context.Context, spec runSpec) (*result, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	start := time.Now().Add(spec.warmup)
	end := start.Add(spec.duration)
	results := make([]result, spec.callers)
	var wg sync.WaitGroup
	if spec.meter != nil {
		wg.Go(func() {
			if err := spec.meter.measure(ctx, start, end); err != nil {
				cancel(fmt.Errorf("measure CPU: %w", err))
			}
		})
	}
	for i := range spec.callers {
		wg.Go(func() {
			// One deadline for every operation of the caller, rather than
			// a timer per operation, which would cost the load generator
			// CPU the daemon needs; one per caller, so that callers do not
			// all wait on the same channel.
			opCtx, cancelOps := context.WithDeadline(ctx, end.Add(spec.opTimeout))
			defer cancelOps()
			if err := l.call(ctx, opCtx, spec, i, start, end, &results[i]); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	total := &result{elapsed: spec.duration}
	for i := range results {
		r := &results[i]
		total.ops += r.ops
		total.gets += r.gets
		total.sets += r.sets
		total.getsMiss += r.getsMiss
		total.hist.merge(&r.hist)
	}
	if total.getsMiss > 0 {
		return nil, fmt.Errorf("%d of %d gets found nothing, though every key was written before the run", total.getsMiss, total.gets)
	}
	total.cpu = spec.meter.perOp(total.ops)
	return total, nil
}

// call is one caller: it calls sequentially until end, each operation under
// opCtx. ctx ends when another caller failed or the user interrupted.
func (l *load) call(ctx, opCtx context.Context, spec runSpec, i int, start, end time.Time, r *result) error {
	t := spec.callerTarget(i)
	rng := rand.New(rand.NewPCG(l.seed, uint64(i)))
	// One clock read per operation: an operation's end is the next one's
	// start, so its latency includes choosing the next key (nanoseconds).
	now := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return nil // another caller failed; its error is the run's
		}
		key := l.keys[rng.IntN(len(l.keys))]
		isGet := false
		switch spec.workload {
		case WorkloadGet:
			isGet = true
		case WorkloadMixed:
			isGet = rng.IntN(100) < mixedGetPercent
		}
		var value []byte
		if !isGet {
			value = l.values[rng.IntN(len(l.values))]
		}
		t0 := now
		if !t0.Before(end) {
			return nil
		}
		var err error
		found := true
		if isGet {
			found, err = t.get(opCtx, key)
		} else {
			err = t.set(opCtx, key, value)
		}
		now = time.Now()
		t1 := now
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			op := "set"
			if isGet {
				op = "get"
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("%s %q: no answer within --op-timeout (%v) past the end of the run: %w", op, key, spec.opTimeout, err)
			}
			return fmt.Errorf("%s %q: %w", op, key, err)
		}
		if t0.Before(start) || t1.After(end) {
			continue // warmup, or ends after the window
		}
		r.ops++
		r.hist.record(t1.Sub(t0))
		if isGet {
			r.gets++
			if !found {
				r.getsMiss++
			}
		} else {
			r.sets++
		}
	}
}
