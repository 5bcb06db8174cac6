package postgres

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestDoRetriesAfterTerminatedBackends: after every backend of the store
// was terminated while idle, a Do of sets, gets, has and deletes succeeds
// as the waiting methods do — the round trips that meet the dead
// connections run again on checked ones — each Done is called once, and
// the sets store the values their ops held (the caller scribbles over its
// buffers as soon as Done returns).
func TestDoRetriesAfterTerminatedBackends(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	s := openStore(t, testConfig(dsn))
	admin := dbConn(t, dsn)
	ctx := context.Background()

	const n = 8
	for round := range 5 {
		// Warm the pool, then end every backend it holds.
		if err := s.Set(ctx, "p", "warm", []byte("w"), 0); err != nil {
			t.Fatal(err)
		}
		var killed int
		err := admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'kvsidecar'`).Scan(&killed)
		if err != nil {
			t.Fatalf("terminate the store's backends: %v", err)
		}
		if killed == 0 {
			t.Fatal("no backend of the store was terminated; the test exercises nothing")
		}
		time.Sleep(20 * time.Millisecond) // let the server end them

		ops := make([]*store.Op, 0, 3*n)
		bufs := make([][]byte, n)
		var wg sync.WaitGroup
		calls := make([]atomic.Int32, 3*n)
		for i := range n {
			key := fmt.Sprintf("k%d", i)
			bufs[i] = fmt.Appendf(nil, "round %d value %d", round, i)
			ops = append(ops,
				&store.Op{Kind: store.OpSet, Project: "p", Key: key, Value: bufs[i]},
				&store.Op{Kind: store.OpGet, Project: "p", Key: "warm"},
				&store.Op{Kind: store.OpDelete, Project: "q", Key: key})
		}
		for i, op := range ops {
			wg.Add(1)
			op.Done = func(o *store.Op) {
				if calls[i].Add(1) == 1 {
					if o.Kind == store.OpSet {
						clear(o.Value) // the caller's buffer again
					}
					wg.Done()
				}
			}
		}
		s.Do(ops)
		wg.Wait()
		for i, op := range ops {
			if c := calls[i].Load(); c != 1 {
				t.Fatalf("round %d: op %d: Done called %d times", round, i, c)
			}
			if op.Err != nil {
				t.Fatalf("round %d: op %d (%d %s/%s) = %v after its connection was terminated; want it retried", round, i, op.Kind, op.Project, op.Key, op.Err)
			}
		}
		for i := range n {
			key := fmt.Sprintf("k%d", i)
			want := fmt.Sprintf("round %d value %d", round, i)
			v, ok, err := s.Get(ctx, "p", key)
			if err != nil || !ok || string(v) != want {
				t.Fatalf("round %d: Get(p/%s) = %q, %v, %v; want %q", round, key, v, ok, err, want)
			}
		}
	}
}
