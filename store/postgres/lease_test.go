package postgres

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/batch"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// leaseRows counts a project's lease rows.
func leaseRows(t *testing.T, conn *pgx.Conn, project string) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM kv_leases WHERE project = $1`, project).Scan(&n); err != nil {
		t.Fatalf("count leases: %v", err)
	}
	return n
}

// TestLeaseQuotaExactAcrossDaemons fills one project up to its quota with
// new keys from many writers through two stores on one database (two
// daemons), so that the writes run under leases while there is room and on
// the exact path near the limit. Usage never exceeds the quota, every
// acknowledged write is stored, and nothing refused is.
//
// With one committer per daemon a holder's batches come back to back until
// its lease is used up; with several, the project's Sets spread over them.
func TestLeaseQuotaExactAcrossDaemons(t *testing.T) {
	for _, committers := range []int{1, DefaultCommitters} {
		t.Run("committers="+strconv.Itoa(committers), func(t *testing.T) {
			testLeaseQuotaExact(t, committers)
		})
	}
}

func testLeaseQuotaExact(t *testing.T, committers int) {
	const (
		quota   = 300_000
		writers = 32 // per daemon
	)
	dsn := pgtest.Database(t)
	ctx := context.Background()
	conn := dbConn(t, dsn)
	daemons := make([]*Store, 2)
	for i := range daemons {
		cfg := testConfig(dsn)
		cfg.DefaultQuota = quota
		cfg.Committers = committers
		cfg.Leases = true
		daemons[i] = openStore(t, cfg)
	}

	// A watcher reads the stored usage (usage row and leases) directly.
	stop := make(chan struct{})
	var peak atomic.Int64
	var watcher sync.WaitGroup
	watcher.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			var used int64
			err := conn.QueryRow(ctx, `
SELECT u.bytes + (SELECT coalesce(sum(bytes), 0) FROM kv_leases WHERE project = 'p')
FROM kv_usage u WHERE u.project = 'p'`).Scan(&used)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				t.Errorf("watch usage: %v", err)
				return
			}
			if used > peak.Load() {
				peak.Store(used)
			}
			time.Sleep(time.Millisecond)
		}
	})

	var mu sync.Mutex
	acked := map[string]int64{} // key → size, of acknowledged writes
	var refused atomic.Int64
	var wg sync.WaitGroup
	for d, s := range daemons {
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(d), uint64(w)))
				for i := 0; ; i++ {
					k := "k" + strconv.Itoa(d) + "-" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
					v := make([]byte, 20+rng.IntN(100))
					err := s.Set(ctx, "p", k, v, 0)
					switch {
					case errors.Is(err, store.ErrQuotaExceeded):
						if refused.Add(1) > 4*2*writers {
							return // well past the limit for everyone
						}
						continue
					case err != nil:
						t.Errorf("Set: %v", err)
						return
					}
					mu.Lock()
					acked[k] = store.EntrySize(k, v)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	close(stop)
	watcher.Wait()

	if p := peak.Load(); p > quota {
		t.Errorf("stored usage reached %d bytes, the quota is %d", p, quota)
	}
	grants := daemons[0].grants.Load() + daemons[1].grants.Load()
	if grants == 0 {
		t.Errorf("no lease was granted: the test proved nothing")
	}
	var want int64
	for _, size := range acked {
		want += size
	}
	var rowBytes, rows int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(octet_length(key) + octet_length(value)), 0), count(*) FROM kv_entries WHERE project = 'p'`).Scan(&rowBytes, &rows); err != nil {
		t.Fatal(err)
	}
	if rowBytes != want || rows != int64(len(acked)) {
		t.Errorf("the table holds %d bytes in %d rows; the acknowledged writes were %d bytes in %d keys", rowBytes, rows, want, len(acked))
	}
	if rowBytes > quota {
		t.Errorf("the table holds %d bytes, the quota is %d", rowBytes, quota)
	}
	// Near the limit the room left is less than the smallest value.
	if quota-rowBytes > 2*(20+100+20) {
		t.Errorf("the writers stopped at %d bytes of %d: writes were refused with room left", rowBytes, quota)
	}
	checkUsageMatchesRows(t, conn, "p")
	for i, s := range daemons {
		u, err := s.Usage(ctx, "p")
		if err != nil || u.Bytes != rowBytes || u.Entries != rows {
			t.Errorf("Usage through daemon %d = %+v, %v; want %d bytes in %d entries", i, u, err, rowBytes, rows)
		}
	}
	for _, s := range daemons {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := leaseRows(t, conn, "p"); n != 0 {
		t.Errorf("%d lease rows left after both daemons closed", n)
	}
	var reserved int64
	if err := conn.QueryRow(ctx, `SELECT reserved FROM kv_usage WHERE project = 'p'`).Scan(&reserved); err != nil || reserved != 0 {
		t.Errorf("reserved = %d, %v after every lease was returned", reserved, err)
	}
	checkUsageMatchesRows(t, conn, "p")
	t.Logf("%d writes acknowledged (%d bytes), %d refused; peak %d of %d; %d leases granted", len(acked), rowBytes, refused.Load(), peak.Load(), quota, grants)
}

// TestLeaseVersionsIncrease writes a few keys from many writers through two
// stores, with deletes among the Sets, and checks that every Set returns a
// version above every version acknowledged for its key before it started,
// across holders, daemons and deletes.
func TestLeaseVersionsIncrease(t *testing.T) {
	const (
		writers = 16 // per daemon
		ops     = 150
		keys    = 12
	)
	dsn := pgtest.Database(t)
	ctx := context.Background()
	daemons := make([]*Store, 2)
	for i := range daemons {
		cfg := testConfig(dsn)
		cfg.Leases = true
		daemons[i] = openStore(t, cfg)
	}
	var mu sync.Mutex
	last := map[string]uint64{}
	var wg sync.WaitGroup
	for d, s := range daemons {
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(d), uint64(w)))
				for range ops {
					k := "k" + strconv.Itoa(rng.IntN(keys))
					mu.Lock()
					before := last[k]
					mu.Unlock()
					if rng.IntN(10) == 0 {
						if _, err := s.Delete(ctx, "p", k); err != nil {
							t.Errorf("Delete: %v", err)
							return
						}
						continue
					}
					v, err := s.SetIf(ctx, "p", k, []byte("v"+strconv.Itoa(w)), 0, store.Cond{})
					if err != nil {
						t.Errorf("Set: %v", err)
						return
					}
					if v <= before {
						t.Errorf("Set(%s) got version %d, a write acknowledged before it started had %d", k, v, before)
					}
					mu.Lock()
					last[k] = max(last[k], v)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if daemons[0].grants.Load()+daemons[1].grants.Load() == 0 {
		t.Errorf("no lease was granted: the test proved nothing")
	}
	// What is stored carries the highest version acknowledged for its key.
	for k, v := range last {
		got, found, err := daemons[0].GetVersioned(ctx, "p", k)
		if err != nil {
			t.Fatal(err)
		}
		if found && got.Version < v {
			t.Errorf("%s is stored with version %d, below the %d a Set returned", k, got.Version, v)
		}
	}
	checkUsageMatchesRows(t, dbConn(t, dsn), "p")
}

// TestLeaseOfDeadDaemonFolded leaves a lease behind as a daemon that died
// holding it would, and checks that its writes count in Usage at once, that
// another daemon's grant leaves it alone before its deadline and folds it
// after.
func TestLeaseOfDeadDaemonFolded(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := context.Background()
	conn := dbConn(t, dsn)

	// submit sets n keys in one Do, so that they form one batch, which
	// takes a lease.
	submit := func(s *Store, prefix string, n int) {
		t.Helper()
		var done sync.WaitGroup
		done.Add(n)
		ops := make([]*store.Op, n)
		for i := range ops {
			ops[i] = &store.Op{Kind: store.OpSet, Project: "p", Key: prefix + strconv.Itoa(i), Value: []byte("value"),
				Done: func(op *store.Op) {
					if op.Err != nil {
						t.Errorf("Set %s: %v", op.Key, op.Err)
					}
					done.Done()
				}}
		}
		s.Do(ops)
		done.Wait()
	}

	deadCfg := testConfig(dsn)
	deadCfg.Committers = 1
	deadCfg.Leases = true
	dead := openStore(t, deadCfg)
	// Its committer never returns its lease when its queue empties, and
	// forgets it before Close: a daemon that died holding it.
	h := dead.holders[0]
	qcfg := dead.writeQueueConfig(h, DefaultQueueSize)
	qcfg.Idle = nil
	dead.writeQs[0].Close()
	dead.writeQs[0] = batch.New(qcfg)
	submit(dead, "dead", 8)
	if n := leaseRows(t, conn, "p"); n != 1 {
		t.Fatalf("%d lease rows after the dead daemon's batch, want 1", n)
	}
	clear(h.leases)
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	size := store.EntrySize("dead0", []byte("value"))

	var offset atomic.Int64
	liveCfg := testConfig(dsn)
	liveCfg.Committers = 1
	liveCfg.Leases = true
	liveCfg.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	live := openStore(t, liveCfg)
	u, err := live.Usage(ctx, "p")
	if err != nil || u.Bytes != 8*size || u.Entries != 8 {
		t.Errorf("Usage with the dead daemon's lease = %+v, %v; want %d bytes in 8 entries", u, err, 8*size)
	}

	// Before the dead lease's deadline, a grant leaves it; the live
	// daemon's own lease goes back when its queue empties.
	submit(live, "live", 8)
	waitFor(t, "the live daemon to return its lease", func() bool { return leaseRows(t, conn, "p") == 1 })
	var holder string
	if err := conn.QueryRow(ctx, `SELECT holder FROM kv_leases WHERE project = 'p'`).Scan(&holder); err != nil || holder != h.id {
		t.Fatalf("the lease left is %q (%v), want the dead daemon's %q", holder, err, h.id)
	}
	// After it, the next grant folds it.
	offset.Store(int64(2 * DefaultLeaseLifetime))
	submit(live, "later", 8)
	waitFor(t, "the dead lease to be folded", func() bool { return leaseRows(t, conn, "p") == 0 })
	var reserved int64
	if err := conn.QueryRow(ctx, `SELECT reserved FROM kv_usage WHERE project = 'p'`).Scan(&reserved); err != nil || reserved != 0 {
		t.Errorf("reserved = %d, %v after the dead lease was folded", reserved, err)
	}
	checkUsageMatchesRows(t, conn, "p")
	u, err = live.Usage(ctx, "p")
	want := 16*size + 8*store.EntrySize("later0", []byte("value"))
	if err != nil || u.Bytes != want || u.Entries != 24 {
		t.Errorf("Usage after the fold = %+v, %v; want %d bytes in 24 entries", u, err, want)
	}
}

// TestLeaseEndsWithQuotaChange lowers a project's quota, and then the
// default quota, while a committer holds a lease on it, and checks that the
// lease ends and the lowered quota holds at once.
func TestLeaseEndsWithQuotaChange(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := context.Background()
	conn := dbConn(t, dsn)
	cfg := testConfig(dsn)
	cfg.Committers = 1
	cfg.Leases = true
	s := openStore(t, cfg)
	burst := func(project, prefix string) {
		t.Helper()
		var done sync.WaitGroup
		ops := make([]*store.Op, 8)
		done.Add(len(ops))
		for i := range ops {
			ops[i] = &store.Op{Kind: store.OpSet, Project: project, Key: prefix + strconv.Itoa(i), Value: []byte("value"),
				Done: func(op *store.Op) {
					if op.Err != nil {
						t.Errorf("Set %s: %v", op.Key, op.Err)
					}
					done.Done()
				}}
		}
		s.Do(ops)
		done.Wait()
		if n := leaseRows(t, conn, project); n != 1 {
			t.Fatalf("%d lease rows after a batch of 8 Sets, want 1", n)
		}
	}
	for _, change := range []struct {
		name string
		set  func(quota int64) error
	}{
		{"override", func(q int64) error { return s.SetQuota(ctx, "p", q) }},
		{"default", func(q int64) error {
			if err := s.SetQuota(ctx, "p", 0); err != nil {
				return err
			}
			return s.SetDefaultQuota(ctx, q)
		}},
	} {
		t.Run(change.name, func(t *testing.T) {
			burst("p", change.name)
			u, err := s.Usage(ctx, "p")
			if err != nil {
				t.Fatal(err)
			}
			if err := change.set(u.Bytes + 10); err != nil {
				t.Fatal(err)
			}
			if n := leaseRows(t, conn, "p"); n != 0 {
				t.Errorf("%d lease rows after the quota change, want 0", n)
			}
			if err := s.Set(ctx, "p", change.name+"-big", make([]byte, 20), 0); !errors.Is(err, store.ErrQuotaExceeded) {
				t.Errorf("a Set of 20 bytes over 10 bytes of room: %v, want quota exceeded", err)
			}
			checkUsageMatchesRows(t, conn, "p")
			if err := s.SetQuota(ctx, "p", 1<<30); err != nil {
				t.Fatal(err)
			}
		})
	}
}
