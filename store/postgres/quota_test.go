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

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestQuotaExactAcrossDaemons runs many writers through two stores — two
// pools, as two daemons would have — on one database, against projects with
// small quotas, and checks that usage never exceeds the quota, that it ends
// equal to what the table holds, and that no transaction deadlocked.
//
// It runs without and with quota leases: with them, the Sets of a project
// whose writes come back to back run under leases, between the Deletes,
// Incrs, SetManys and sweeps that fold them.
func TestQuotaExactAcrossDaemons(t *testing.T) {
	for _, leases := range []bool{false, true} {
		t.Run("leases="+strconv.FormatBool(leases), func(t *testing.T) {
			testQuotaExactAcrossDaemons(t, leases)
		})
	}
}

func testQuotaExactAcrossDaemons(t *testing.T, leases bool) {
	const (
		quota      = 4000
		writers    = 12 // per daemon
		opsPerGoro = 150
	)
	dsn := pgtest.Database(t)
	ctx := context.Background()
	conn := dbConn(t, dsn)
	var deadlocksBefore int64
	if err := conn.QueryRow(ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&deadlocksBefore); err != nil {
		t.Fatal(err)
	}

	daemons := make([]*Store, 2)
	for i := range daemons {
		cfg := testConfig(dsn)
		cfg.DefaultQuota = quota
		cfg.Committers = 2
		cfg.Leases = leases
		daemons[i] = openStore(t, cfg)
	}
	// Projects that share a committer, so that batches span both and lock
	// both rows: in the same order in both daemons, or they would deadlock.
	projects := []string{"p", "q"}
	for i := 0; partition(projects[1], 2) != partition(projects[0], 2); i++ {
		projects[1] = "q" + strconv.Itoa(i)
	}
	// With leases, a project with room for them too (near a quota none is
	// granted), written by the same mix of calls.
	quotas := map[string]int64{projects[0]: quota, projects[1]: quota}
	if leases {
		projects = append(projects, "roomy")
		quotas["roomy"] = 1 << 20
		if err := daemons[0].SetQuota(ctx, "roomy", quotas["roomy"]); err != nil {
			t.Fatal(err)
		}
	}

	// A watcher reads the usage rows directly while the writers run.
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
			var m int64
			if err := conn.QueryRow(ctx, `SELECT coalesce(max(u.bytes + (SELECT coalesce(sum(l.bytes), 0) FROM kv_leases l WHERE l.project = u.project)), 0) FROM kv_usage u WHERE u.quota IS NULL`).Scan(&m); err != nil {
				t.Errorf("watch usage: %v", err)
				return
			}
			if m > peak.Load() {
				peak.Store(m)
			}
			time.Sleep(time.Millisecond)
		}
	})

	var wg sync.WaitGroup
	var refused, done atomic.Int64
	for d, s := range daemons {
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(d), uint64(w)))
				for range opsPerGoro {
					p := projects[rng.IntN(len(projects))]
					k := "k" + strconv.Itoa(rng.IntN(30))
					v := make([]byte, 10+rng.IntN(300))
					var err error
					switch op := rng.IntN(10); {
					case op < 5:
						err = s.Set(ctx, p, k, v, 0)
					case op < 6:
						// Short TTLs leave expired rows behind, which the
						// quota check must purge before it refuses.
						err = s.Set(ctx, p, k, v, time.Duration(1+rng.IntN(30))*time.Millisecond)
					case op < 7:
						err = s.SetMany(ctx, p, []store.Item{{Key: k, Value: v}, {Key: "m" + strconv.Itoa(rng.IntN(5)), Value: v[:len(v)/2]}})
					case op < 8:
						_, err = s.Incr(ctx, p, "n"+strconv.Itoa(rng.IntN(3)), 1, 0)
					case op < 9:
						_, err = s.Delete(ctx, p, k)
					default:
						_, err = s.Sweep(ctx)
					}
					switch {
					case errors.Is(err, store.ErrQuotaExceeded):
						refused.Add(1)
					case err != nil:
						t.Errorf("unexpected error: %v", err)
						return
					default:
						done.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	close(stop)
	watcher.Wait()
	// Let the last short TTLs (at most 30ms) run out, so that the two
	// daemons' Usage calls below, a moment apart, see the same live set.
	time.Sleep(50 * time.Millisecond)

	if p := peak.Load(); p > quota {
		t.Errorf("stored usage reached %d bytes, the quota is %d", p, quota)
	}
	if refused.Load() == 0 {
		t.Errorf("no write was refused: the quota was never contended, so the test proved nothing")
	}
	for _, p := range projects {
		checkUsageMatchesRows(t, conn, p)
		u0, err0 := daemons[0].Usage(ctx, p)
		u1, err1 := daemons[1].Usage(ctx, p)
		if err0 != nil || err1 != nil || u0 != u1 || u0.Bytes > quotas[p] {
			t.Errorf("Usage(%s) = %+v, %v through one daemon and %+v, %v through the other", p, u0, err0, u1, err1)
		}
	}
	// The daemons' backends report their statistics when they exit.
	for _, s := range daemons {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	var deadlocksAfter int64
	if err := conn.QueryRow(ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&deadlocksAfter); err != nil {
		t.Fatal(err)
	}
	if deadlocksAfter != deadlocksBefore {
		t.Errorf("%d deadlocks during the run", deadlocksAfter-deadlocksBefore)
	}
	grants := daemons[0].grants.Load() + daemons[1].grants.Load()
	if leases && grants == 0 {
		t.Errorf("no lease was granted: the run with leases proved nothing more")
	}
	t.Logf("%d calls succeeded, %d refused for quota; peak stored usage %d of %d; %d leases granted", done.Load(), refused.Load(), peak.Load(), quota, grants)
}
