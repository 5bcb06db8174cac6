package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestQuotaExactAcrossTwoDaemonProcesses runs two daemon processes on one
// PostgreSQL database, serving one project with a small quota, and has
// many writers hammer both: usage never goes above the quota, and at the
// end it equals the size of the rows actually stored.
func TestQuotaExactAcrossTwoDaemonProcesses(t *testing.T) {
	dsn := pgtest.Database(t)
	const quota = 20_000
	dir, err := os.MkdirTemp("", "kvs2d")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sockets := []string{filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")}
	startDaemon(t, sockets[0], "--postgres", dsn, "--project", "shared", "--default-quota", fmt.Sprint(quota))
	startDaemon(t, sockets[1], "--postgres", dsn, "--project", "shared")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clients := make([]*client.Client, 2)
	for i, s := range sockets {
		if clients[i], err = client.Dial(ctx, s); err != nil {
			t.Fatal(err)
		}
		defer clients[i].Close()
	}

	var (
		wg       sync.WaitGroup
		refusals atomic.Int64
		writes   atomic.Int64
		maxSeen  atomic.Int64
	)
	const writers, opsEach = 16, 150
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			c := clients[w%2]
			for i := range opsEach {
				key := fmt.Sprintf("k%03d", rng.IntN(120))
				switch {
				case i%10 == 9:
					if _, err := c.Delete(ctx, key); err != nil {
						t.Errorf("delete: %v", err)
						return
					}
				case i%25 == 24:
					u, err := c.Usage(ctx)
					if err != nil {
						t.Errorf("usage: %v", err)
						return
					}
					for {
						m := maxSeen.Load()
						if u.Bytes <= m || maxSeen.CompareAndSwap(m, u.Bytes) {
							break
						}
					}
				default:
					value := strings.Repeat("v", 50+rng.IntN(400))
					err := c.Set(ctx, key, value, 0)
					switch {
					case errors.Is(err, client.ErrQuotaExceeded):
						refusals.Add(1)
					case err != nil:
						t.Errorf("set: %v", err)
						return
					default:
						writes.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if refusals.Load() == 0 {
		t.Fatalf("no write was refused: the quota was never reached, so the test proved nothing (%d writes)", writes.Load())
	}
	if m := maxSeen.Load(); m > quota {
		t.Fatalf("usage reached %d, above the quota %d", m, quota)
	}

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var stored, rows int64
	if err := conn.QueryRow(ctx, `SELECT coalesce(sum(octet_length(key) + octet_length(value)), 0), count(*)
		FROM kv_entries WHERE project = $1`, "shared").Scan(&stored, &rows); err != nil {
		t.Fatal(err)
	}
	u, err := clients[1].Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stored > quota || u.Bytes != stored || u.Entries != rows || u.Quota != quota {
		t.Fatalf("after the run: usage %+v, rows hold %d bytes in %d entries, quota %d", u, stored, rows, quota)
	}
	t.Logf("%d writes, %d refused for quota; %d bytes in %d rows, quota %d", writes.Load(), refusals.Load(), stored, rows, quota)
}
