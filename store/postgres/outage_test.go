package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestOutage crashes the database under load and starts it again: while it
// is down every call fails with ErrUnavailable within its deadline and Ping
// fails; once it is back writes succeed again; and every write that was
// acknowledged is there afterwards.
func TestOutage(t *testing.T) {
	c := pgtest.NewCluster(t)
	cfg := testConfig(c.DSN())
	cfg.StatementTimeout = 2 * time.Second
	s := openStore(t, cfg)

	const (
		callTimeout = 500 * time.Millisecond
		// hangLimit is how long past its deadline a call may take before
		// the test calls it a hang: scheduling on a loaded machine.
		hangLimit = callTimeout + time.Second
	)
	var (
		mu      sync.Mutex
		acked   = map[string]string{} // key → value of every acknowledged Set
		phase   atomic.Int32          // 0 up, 1 down, 2 back up
		okAfter atomic.Int64          // successful writes after the restart
		failed  atomic.Int64          // calls that failed while down
		stop    = make(chan struct{})
		load    sync.WaitGroup
	)
	for w := range 8 {
		load.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%d", w, i)
				value := "v" + key
				p := phase.Load()
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				start := time.Now()
				var err error
				if i%4 == 3 {
					_, _, err = s.Get(ctx, "p", fmt.Sprintf("w%d-%d", w, i-1))
				} else {
					err = s.Set(ctx, "p", key, []byte(value), 0)
				}
				took := time.Since(start)
				cancel()
				if took > hangLimit {
					t.Errorf("a call took %v with a deadline of %v", took, callTimeout)
				}
				switch {
				case err == nil:
					if i%4 != 3 {
						mu.Lock()
						acked[key] = value
						mu.Unlock()
						if p == 2 {
							okAfter.Add(1)
						}
					}
				case errors.Is(err, store.ErrUnavailable):
					if p == 1 {
						failed.Add(1)
					}
					time.Sleep(10 * time.Millisecond)
				default:
					t.Errorf("call failed with %v, want nil or ErrUnavailable", err)
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}

	time.Sleep(300 * time.Millisecond)
	c.Crash()
	phase.Store(1)
	time.Sleep(time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	start := time.Now()
	err := s.Ping(ctx)
	cancel()
	if !errors.Is(err, store.ErrUnavailable) || time.Since(start) > hangLimit {
		t.Errorf("Ping with the database down = %v after %v, want ErrUnavailable within %v", err, time.Since(start), callTimeout)
	}

	c.Start()
	phase.Store(2)
	waitFor(t, "writes to succeed after the restart", func() bool { return okAfter.Load() > 0 })
	time.Sleep(200 * time.Millisecond)
	close(stop)
	load.Wait()

	if failed.Load() == 0 {
		t.Errorf("no call failed while the database was down")
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping after the restart = %v", err)
	}
	// Every acknowledged write survived the crash.
	keys := make([]string, 0, len(acked))
	for k := range acked {
		keys = append(keys, k)
	}
	for start := 0; start < len(keys); start += store.MaxBatchItems {
		chunk := keys[start:min(start+store.MaxBatchItems, len(keys))]
		values, err := s.GetMany(context.Background(), "p", chunk)
		if err != nil {
			t.Fatalf("GetMany: %v", err)
		}
		for i, k := range chunk {
			if string(values[i]) != acked[k] {
				t.Errorf("acknowledged %s = %q is %q after the crash", k, acked[k], values[i])
			}
		}
	}
	t.Logf("%d acknowledged writes, all present; %d calls failed while down, %d writes succeeded after the restart",
		len(acked), failed.Load(), okAfter.Load())
}
