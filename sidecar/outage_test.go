package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestPostgresOutage takes the daemon's PostgreSQL down and brings it back,
// and checks what callers and a readiness probe see: while the database is
// down /readyz answers 503 and every store call fails with ErrUnavailable
// well within the caller's deadline, yet the daemon keeps serving (Ping, new
// connections); once it is back /readyz answers 200 and writes succeed
// again without restarting the daemon; and every write acknowledged at any
// time is there at the end. The database goes down both ways it does in
// production: it dies (connections cut, crash recovery at restart), or an
// operator stops it (sessions told the server is shutting down).
func TestPostgresOutage(t *testing.T) {
	for _, tc := range []struct {
		name     string
		takeDown func(*pgtest.Cluster)
	}{
		{"crash", (*pgtest.Cluster).Crash},
		{"stop", (*pgtest.Cluster).Stop},
	} {
		t.Run(tc.name, func(t *testing.T) { testOutage(t, tc.takeDown) })
	}
}

func testOutage(t *testing.T, takeDown func(*pgtest.Cluster)) {
	const (
		// callTimeout is the caller's deadline. A database that is down
		// refuses connections at once, so the daemon knows within
		// milliseconds; a call that reaches this deadline hung.
		callTimeout = 3 * time.Second
		// writers keep writes in flight when the database dies, so the
		// test sees calls caught mid-transaction, not only new ones.
		writers = 4
	)
	cluster := pgtest.NewCluster(t)
	d := sidecartest.Start(t, sidecartest.Options{Postgres: cluster.DSN(), Metrics: true})
	readyz := "http://" + d.MetricsAddr() + "/readyz"
	c, err := client.Dial(context.Background(), d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var (
		mu          sync.Mutex
		acked       = map[string]int{} // key → value of every acknowledged write
		slowestFail time.Duration      // of the calls that failed
	)
	// call runs one call under a fresh callTimeout, fails the test when it
	// returns at or after its deadline, and returns its error.
	call := func(what string, f func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		deadline, _ := ctx.Deadline()
		start := time.Now()
		err := f(ctx)
		if time.Now().After(deadline) {
			t.Errorf("%s returned %v after its deadline had passed: it hung", what, err)
		}
		if err != nil {
			mu.Lock()
			slowestFail = max(slowestFail, time.Since(start))
			mu.Unlock()
		}
		return err
	}
	set := func(key string, v int) error {
		err := call("set "+key, func(ctx context.Context) error { return c.Set(ctx, key, v, 0) })
		if err == nil {
			mu.Lock()
			acked[key] = v
			mu.Unlock()
		}
		return err
	}
	mustSet := func(key string, v int) {
		t.Helper()
		if err := set(key, v); err != nil {
			t.Fatalf("set %s: %v", key, err)
		}
	}

	// Up.
	for i := range 20 {
		mustSet(fmt.Sprintf("before-%d", i), i)
	}
	if code, body := httpGet(t, readyz); code != http.StatusOK {
		t.Fatalf("/readyz with the database up = %d %q, want 200", code, body)
	}

	// Writers run from before the crash until after the restart; each of
	// their calls must succeed or fail with ErrUnavailable, in time.
	var (
		stop       = make(chan struct{})
		load       sync.WaitGroup
		loadFailed atomic.Int64
	)
	// stopLoad also runs when the test fails early, so that no writer
	// outlives the test.
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		load.Wait()
	})
	defer stopLoad()
	for w := range writers {
		load.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				err := set(fmt.Sprintf("load-%d-%d", w, i), i)
				switch {
				case err == nil:
				case errors.Is(err, client.ErrUnavailable):
					loadFailed.Add(1)
					time.Sleep(20 * time.Millisecond)
				default:
					t.Errorf("a write under load failed with %v, want nil or ErrUnavailable", err)
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)

	// Down.
	takeDown(cluster)
	waitStatus(t, readyz, http.StatusServiceUnavailable)
	ops := []struct {
		name string
		f    func(ctx context.Context) error
	}{
		{"set", func(ctx context.Context) error { return c.Set(ctx, "down", 1, 0) }},
		{"get", func(ctx context.Context) error { _, err := c.Get(ctx, "before-1", new(int)); return err }},
		{"getMany", func(ctx context.Context) error {
			_, err := c.GetMany(ctx, []string{"before-1", "before-2"}, &[]int{})
			return err
		}},
		{"delete", func(ctx context.Context) error { _, err := c.Delete(ctx, "absent"); return err }},
		{"incr", func(ctx context.Context) error { _, err := c.Incr(ctx, "counter", 1, 0); return err }},
		{"list", func(ctx context.Context) error { _, err := c.List(ctx, client.ListOptions{}); return err }},
		{"usage", func(ctx context.Context) error { _, err := c.Usage(ctx); return err }},
	}
	for _, op := range ops {
		if err := call(op.name, op.f); !errors.Is(err, client.ErrUnavailable) {
			t.Errorf("%s with the database down = %v, want ErrUnavailable", op.name, err)
		}
	}
	// The daemon itself is up: it answers pings and accepts new clients.
	if err := call("ping", c.Ping); err != nil {
		t.Errorf("ping with the database down = %v, want nil: the daemon stopped serving", err)
	}
	if err := call("dial", func(ctx context.Context) error {
		c2, err := client.Dial(ctx, d.Socket)
		if err != nil {
			return err
		}
		defer c2.Close()
		return c2.Ping(ctx)
	}); err != nil {
		t.Errorf("a new client with the database down: %v, want it to connect and ping", err)
	}

	// Back up, same daemon.
	cluster.Start()
	waitStatus(t, readyz, http.StatusOK)
	// Like the store's own outage test, wait for a write to succeed: the
	// pool may still hand out a connection the crash broke.
	var recoverFailed int
	waitUntil(t, "a write to succeed after the restart", func() bool {
		if set("after-first", 1) == nil {
			return true
		}
		recoverFailed++
		return false
	})
	for i := range 20 {
		mustSet(fmt.Sprintf("after-%d", i), i)
	}
	stopLoad()
	if loadFailed.Load() == 0 {
		t.Errorf("no write under load failed while the database was down")
	}
	if recoverFailed > 0 {
		t.Logf("%d writes failed after /readyz was 200 again", recoverFailed)
	}

	// Every acknowledged write is there.
	mu.Lock()
	defer mu.Unlock()
	keys := make([]string, 0, len(acked))
	for k := range acked {
		keys = append(keys, k)
	}
	batch := int(c.Limits().MaxBatch)
	for start := 0; start < len(keys); start += batch {
		chunk := keys[start:min(start+batch, len(keys))]
		values := make([]int, len(chunk))
		var found []bool
		if err := call("getMany", func(ctx context.Context) (err error) {
			found, err = c.GetMany(ctx, chunk, &values)
			return err
		}); err != nil {
			t.Fatalf("getMany after the restart: %v", err)
		}
		for i, k := range chunk {
			if !found[i] || values[i] != acked[k] {
				t.Errorf("acknowledged %s = %d: found %v, value %d after the outage", k, acked[k], found[i], values[i])
			}
		}
	}
	t.Logf("%d acknowledged writes, all present; %d writes under load failed while the database was down; the slowest failure took %v",
		len(acked), loadFailed.Load(), slowestFail)
}

// waitStatus polls url until it answers want, failing the test with the
// last answer after 10 seconds.
func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpGet(t, url)
		if code == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still answers %d %q, want %d", url, code, body, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitUntil polls cond until it holds, failing the test after 10 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPostgresFrozen freezes the database instead of stopping it: nothing
// refuses, nothing answers. Calls must still end before their caller's
// deadline with ErrUnavailable — the client sends its deadline, and the
// daemon gives up first and says why — and the daemon recovers by itself
// when the database wakes up.
func TestPostgresFrozen(t *testing.T) {
	cluster := pgtest.NewCluster(t)
	d := sidecartest.Start(t, sidecartest.Options{Postgres: cluster.DSN()})
	c, err := client.Dial(context.Background(), d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bg := context.Background()
	if err := c.Set(bg, "before", 1, 0); err != nil {
		t.Fatal(err)
	}

	cluster.Freeze()
	for _, op := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"set", func(ctx context.Context) error { return c.Set(ctx, "during", 2, 0) }},
		{"get", func(ctx context.Context) error { _, err := c.Get(ctx, "before", new(int)); return err }},
	} {
		ctx, cancel := context.WithTimeout(bg, 1500*time.Millisecond)
		err := op.call(ctx)
		late := ctx.Err() != nil
		cancel()
		if !errors.Is(err, client.ErrUnavailable) || late {
			t.Errorf("%s on a frozen database: %v (returned after the deadline: %v); want ErrUnavailable before the deadline", op.name, err, late)
		}
	}
	if err := c.Ping(bg); err != nil {
		t.Errorf("ping while the database is frozen: %v", err)
	}
	cluster.Thaw()

	waitUntil(t, "a write succeeds after the database wakes", func() bool {
		ctx, cancel := context.WithTimeout(bg, 2*time.Second)
		defer cancel()
		return c.Set(ctx, "after", 3, 0) == nil
	})
	var v int
	if found, err := c.Get(bg, "before", &v); err != nil || !found || v != 1 {
		t.Fatalf("write acknowledged before the freeze: found=%v v=%d err=%v", found, v, err)
	}
}

// TestPostgresFrozenQueuedRequest sends two writes to one key at once while
// the database is frozen: the second waits for the first (one key's
// requests apply in order), and its timeout must count from when the
// daemon read it, not from when it stopped waiting, so that it too is
// answered unavailable before the caller's deadline.
func TestPostgresFrozenQueuedRequest(t *testing.T) {
	cluster := pgtest.NewCluster(t)
	d := sidecartest.Start(t, sidecartest.Options{Postgres: cluster.DSN()})
	c, err := client.Dial(context.Background(), d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Set(context.Background(), "k", 0, 0); err != nil {
		t.Fatal(err)
	}
	cluster.Freeze()
	defer cluster.Thaw()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	errs := make(chan error, 2)
	for i := range 2 {
		go func() { errs <- c.Set(ctx, "k", i, 0) }()
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, client.ErrUnavailable) {
			t.Errorf("set on a frozen database behind another: %v; want ErrUnavailable", err)
		}
	}
}

// TestStopWhileAtInflightBound stops the daemon while a connection's read
// loop waits for a free slot (max_inflight requests unanswered). The client
// must get the answer to every request read and only then the id-0
// unavailable frame that says the rest was not read (PROTOCOL.md §3): a
// client closes on that frame, so an earlier one loses answers.
func TestStopWhileAtInflightBound(t *testing.T) {
	cluster := pgtest.NewCluster(t)
	d := sidecartest.Start(t, sidecartest.Options{Postgres: cluster.DSN(), MaxInflight: 1})
	c := dialRaw(t, d.Socket)
	c.hello()
	cluster.Freeze()
	defer cluster.Thaw()
	c.send(&protocol.Request{ID: 1, Op: protocol.OpSet, Key: "k", Value: []byte("1"), Timeout: 1000})
	c.send(&protocol.Request{ID: 2, Op: protocol.OpPing})
	time.Sleep(200 * time.Millisecond) // the read loop now waits for request 1's slot
	stopped := make(chan struct{})
	go func() { d.Stop(); close(stopped) }()
	defer func() { cluster.Thaw(); <-stopped }()
	var ids []uint64
	for {
		r, ok := c.read()
		if !ok {
			break
		}
		ids = append(ids, r.ID)
		if r.ID == 0 {
			if r.Err == nil || r.Err.Code != protocol.CodeUnavailable {
				t.Fatalf("id 0: %+v, want unavailable", r.Err)
			}
		}
	}
	if len(ids) != 2 || ids[0] != 1 || ids[1] != 0 {
		t.Fatalf("got responses %v before the close, want [1 0]: request 1's answer, then the stopping frame", ids)
	}
}
