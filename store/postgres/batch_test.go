package postgres

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/batch"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// batchLog records what Config.ObserveBatch reports.
type batchLog struct {
	mu    sync.Mutex
	sizes []int
}

func (l *batchLog) observe(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sizes = append(l.sizes, n)
}

func (l *batchLog) get() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sizes)
}

// stall holds a project's committer busy: a transaction of the test's own
// locks the project's usage row, and a write of the store waits for it in
// its batch. Calls queued meanwhile form the committer's next batch, in the
// order they were queued.
type stall struct {
	t       *testing.T
	s       *Store
	q       *batch.Queue[writeReq, writeResult]
	tx      pgx.Tx
	pending sync.WaitGroup
}

func newStall(t *testing.T, s *Store, dsn, project string) *stall {
	t.Helper()
	ctx := context.Background()
	// The usage row must exist before it can be locked.
	if err := s.Set(ctx, project, "stall", []byte("0"), 0); err != nil {
		t.Fatalf("Set: %v", err)
	}
	conn := dbConn(t, dsn)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM kv_usage WHERE project = $1 FOR UPDATE`, project); err != nil {
		t.Fatalf("lock usage row: %v", err)
	}
	st := &stall{t: t, s: s, q: s.writeQs[partition(project, len(s.writeQs))], tx: tx}
	st.pending.Go(func() {
		if err := s.Set(ctx, project, "stall", []byte("1"), 0); err != nil {
			t.Errorf("stalled Set: %v", err)
		}
	})
	// Wait until the store's transaction waits for our lock.
	waitFor(t, "the store's batch to wait for the usage row lock", func() bool {
		var waiting int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return err == nil && waiting > 0
	})
	return st
}

// queue starts call in a goroutine and returns once it is queued.
func (st *stall) queue(call func()) {
	st.t.Helper()
	n := st.q.Len()
	st.pending.Go(call)
	waitFor(st.t, "the call to be queued", func() bool { return st.q.Len() == n+1 })
}

// release lets the committer go on and waits for every queued call.
func (st *stall) release() {
	st.t.Helper()
	if err := st.tx.Commit(context.Background()); err != nil {
		st.t.Fatalf("commit: %v", err)
	}
	st.pending.Wait()
}

// waitFor polls cond until it holds, failing the test after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupCommitBatches checks that concurrent writes share transactions
// and that a lone write on an idle store commits alone, at once.
func TestGroupCommitBatches(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := context.Background()

	t.Run("IdleWriteCommitsAlone", func(t *testing.T) {
		var log batchLog
		cfg := testConfig(testSchema(t, dsn))
		cfg.ObserveBatch = log.observe
		s := openStore(t, cfg)
		if err := s.Set(ctx, "p", "k", []byte("v"), 0); err != nil {
			t.Fatalf("Set: %v", err)
		}
		if got := log.get(); !slices.Equal(got, []int{1}) {
			t.Fatalf("batches after one idle write = %v, want [1]", got)
		}
	})

	t.Run("QueuedWritesShareOneTransaction", func(t *testing.T) {
		var log batchLog
		cfg := testConfig(testSchema(t, dsn))
		cfg.ObserveBatch = log.observe
		s := openStore(t, cfg)
		st := newStall(t, s, cfg.DSN, "p")
		const calls = 10
		for i := range calls {
			st.queue(func() {
				if err := s.Set(ctx, "p", "k"+strconv.Itoa(i), []byte("v"), 0); err != nil {
					t.Errorf("Set: %v", err)
				}
			})
		}
		st.release()
		// The stall's own writes commit alone; the queued calls together.
		if got := log.get(); !slices.Equal(got, []int{1, 1, calls}) {
			t.Fatalf("batches = %v, want [1 1 %d]", got, calls)
		}
	})

	t.Run("ConcurrentWritersBatch", func(t *testing.T) {
		var log batchLog
		cfg := testConfig(testSchema(t, dsn))
		cfg.ObserveBatch = log.observe
		s := openStore(t, cfg)
		var wg sync.WaitGroup
		for w := range 32 {
			wg.Go(func() {
				for i := range 20 {
					if err := s.Set(ctx, "p", "w"+strconv.Itoa(w)+"-"+strconv.Itoa(i), []byte("v"), 0); err != nil {
						t.Errorf("Set: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		sizes := log.get()
		total := 0
		for _, n := range sizes {
			total += n
		}
		if total != 32*20 || slices.Max(sizes) < 2 {
			t.Fatalf("32 writers × 20 writes committed as %d calls in batches %v; want 640 calls and some batch > 1", total, sizes)
		}
		t.Logf("%d calls in %d transactions (largest %d)", total, len(sizes), slices.Max(sizes))
	})
}

// result is what a call of a stalled batch returned.
type result struct {
	n       int64
	existed []bool
	err     error
}

// TestBatchOrderWithinTransaction runs calls that touch the same keys in one
// transaction and checks that each sees the effects of the ones before it,
// and gets its own result.
func TestBatchOrderWithinTransaction(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	ctx := context.Background()
	clock := storetest.NewClock()
	var log batchLog
	cfg := testConfig(dsn)
	cfg.Now = clock.Now
	cfg.ObserveBatch = log.observe
	s := openStore(t, cfg)

	// Before the batch: an entry about to expire, and a quota that leaves
	// room for little.
	if err := s.Set(ctx, "p", "old", []byte("0123456789"), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.SetQuota(ctx, "p", 100); err != nil {
		t.Fatal(err)
	}
	st := newStall(t, s, dsn, "p") // "stall" = "1": 6 bytes
	// A project that shares p's committer, so its call joins the batch.
	other := "q"
	for i := 0; partition(other, len(s.writeQs)) != partition("p", len(s.writeQs)); i++ {
		other = "q" + strconv.Itoa(i)
	}
	clock.Advance(2 * time.Second) // "old" has expired: 13 bytes stored, not live

	calls := []struct {
		name string
		call func() result
		want result
	}{
		{"Incr new", func() result { n, err := s.Incr(ctx, "p", "n", 5, 0); return result{n: n, err: err} }, result{n: 5}},
		{"Incr again", func() result { n, err := s.Incr(ctx, "p", "n", 2, 0); return result{n: n, err: err} }, result{n: 7}},
		{"Set n", func() result { return result{err: s.Set(ctx, "p", "n", []byte("40"), 0)} }, result{}},
		{"Incr after Set", func() result { n, err := s.Incr(ctx, "p", "n", 2, 0); return result{n: n, err: err} }, result{n: 42}},
		{"Delete n", func() result { ok, err := s.Delete(ctx, "p", "n"); return result{existed: []bool{ok}, err: err} }, result{existed: []bool{true}}},
		{"Delete n again", func() result { ok, err := s.Delete(ctx, "p", "n"); return result{existed: []bool{ok}, err: err} }, result{existed: []bool{false}}},
		{"Delete expired", func() result { ok, err := s.Delete(ctx, "p", "old"); return result{existed: []bool{ok}, err: err} }, result{existed: []bool{false}}},
		{"Incr after Delete", func() result { n, err := s.Incr(ctx, "p", "n", 1, 0); return result{n: n, err: err} }, result{n: 1}},
		{"SetMany dup", func() result {
			return result{err: s.SetMany(ctx, "p", []store.Item{{Key: "a", Value: []byte("x")}, {Key: "a", Value: []byte("yy")}})}
		}, result{}},
		{"Incr not integer", func() result { n, err := s.Incr(ctx, "p", "a", 1, 0); return result{n: n, err: err} }, result{err: store.ErrNotInteger}},
		// Usage now: stall 6 + n 2 + a 3 = 11 stored live (old was deleted).
		{"Set too large", func() result { return result{err: s.Set(ctx, "p", "big", make([]byte, 87), 0)} }, result{err: store.ErrQuotaExceeded}},
		{"Set just fits", func() result { return result{err: s.Set(ctx, "p", "big", make([]byte, 86), 0)} }, result{}},
		{"Set over", func() result { return result{err: s.Set(ctx, "p", "c", []byte("z"), 0)} }, result{err: store.ErrQuotaExceeded}},
		{"Shrink big", func() result { return result{err: s.Set(ctx, "p", "big", make([]byte, 10), 0)} }, result{}},
		{"Set fits again", func() result { return result{err: s.Set(ctx, "p", "c", []byte("z"), 0)} }, result{}},
		{"DeleteMany", func() result {
			ok, err := s.DeleteMany(ctx, "p", []string{"c", "missing", "c"})
			return result{existed: ok, err: err}
		}, result{existed: []bool{true, false, false}}},
		{"Clear", func() result { n, err := s.Clear(ctx, "p"); return result{n: n, err: err} }, result{n: 4}}, // stall, n, a, big
		{"Set after Clear", func() result { return result{err: s.Set(ctx, "p", "after", []byte("v"), time.Minute)} }, result{}},
		{"Incr after Clear", func() result { n, err := s.Incr(ctx, "p", "n", 3, 0); return result{n: n, err: err} }, result{n: 3}},
		{"Other project", func() result { return result{err: s.Set(ctx, other, "k", []byte("v"), 0)} }, result{}},
	}
	got := make([]result, len(calls))
	for i, c := range calls {
		st.queue(func() { got[i] = c.call() })
	}
	st.release()

	for i, c := range calls {
		g, w := got[i], c.want
		if w.err != nil {
			if !errors.Is(g.err, w.err) {
				t.Errorf("%s: err = %v, want %v", c.name, g.err, w.err)
			}
			continue
		}
		if g.err != nil || g.n != w.n || !slices.Equal(g.existed, w.existed) {
			t.Errorf("%s = %+v, want %+v", c.name, g, w)
		}
	}
	if sizes := log.get(); sizes[len(sizes)-1] < len(calls) {
		t.Errorf("batches = %v: the calls did not share one transaction", sizes)
	}

	// What is stored matches, and so does the usage.
	for key, want := range map[string]string{"after": "v", "n": "3"} {
		v, ok, err := s.Get(ctx, "p", key)
		if err != nil || !ok || string(v) != want {
			t.Errorf("Get(%q) = %q, %v, %v; want %q", key, v, ok, err, want)
		}
	}
	checkUsageMatchesRows(t, dbConn(t, dsn), "p")
	u, err := s.Usage(ctx, "p")
	if err != nil || u.Bytes != int64(len("after")+1+len("n")+1) || u.Entries != 2 || u.Quota != 100 {
		t.Errorf("Usage = %+v, %v; want 8 bytes, 2 entries, quota 100", u, err)
	}
}

// checkUsageMatchesRows checks the stored usage of a project against its
// rows in the table.
func checkUsageMatchesRows(t *testing.T, conn *pgx.Conn, project string) {
	t.Helper()
	var usageBytes, usageEntries, rowBytes, rows int64
	err := conn.QueryRow(context.Background(), `
SELECT u.bytes + (SELECT coalesce(sum(bytes), 0) FROM kv_leases WHERE project = $1),
       u.entries + (SELECT coalesce(sum(entries), 0) FROM kv_leases WHERE project = $1),
       (SELECT coalesce(sum(octet_length(key) + octet_length(value)), 0) FROM kv_entries WHERE project = $1),
       (SELECT count(*) FROM kv_entries WHERE project = $1)
FROM kv_usage u WHERE u.project = $1`, project).Scan(&usageBytes, &usageEntries, &rowBytes, &rows)
	if err != nil {
		t.Fatalf("read usage: %v", err)
	}
	if usageBytes != rowBytes || usageEntries != rows {
		t.Errorf("project %q: usage row says %d bytes in %d entries, the table holds %d bytes in %d rows",
			project, usageBytes, usageEntries, rowBytes, rows)
	}
}

// TestBadCallDoesNotFailNeighbours makes the database refuse one call of a
// batch and checks that the others commit.
func TestBadCallDoesNotFailNeighbours(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	ctx := context.Background()
	s := openStore(t, testConfig(dsn))
	conn := dbConn(t, dsn)
	// A trigger stands for whatever the database might refuse that the
	// store's own checks let through.
	if _, err := conn.Exec(ctx, `
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.key = 'poison'::bytea THEN RAISE EXCEPTION 'poisoned key'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON kv_entries
    FOR EACH ROW EXECUTE FUNCTION refuse_poison();`); err != nil {
		t.Fatalf("create trigger: %v", err)
	}

	st := newStall(t, s, dsn, "p")
	errs := make([]error, 5)
	keys := []string{"a", "b", "poison", "c", "d"}
	for i, k := range keys {
		st.queue(func() { errs[i] = s.Set(ctx, "p", k, []byte("v"), 0) })
	}
	st.release()
	for i, k := range keys {
		if (k == "poison") != (errs[i] != nil) {
			t.Errorf("Set(%q) = %v", k, errs[i])
		}
	}
	for _, k := range keys {
		_, ok, err := s.Get(ctx, "p", k)
		if err != nil || ok != (k != "poison") {
			t.Errorf("Get(%q) found = %v, %v", k, ok, err)
		}
	}
	checkUsageMatchesRows(t, conn, "p")
}

// TestSweepSkipsBusyProjects checks that Sweep does not wait for a project
// whose usage row another transaction holds, and frees usage exactly.
func TestSweepSkipsBusyProjects(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	ctx := context.Background()
	clock := storetest.NewClock()
	cfg := testConfig(dsn)
	cfg.Now = clock.Now
	s := openStore(t, cfg)
	for _, p := range []string{"busy", "idle"} {
		for i := range 5 {
			if err := s.Set(ctx, p, "k"+strconv.Itoa(i), []byte("value"), time.Second); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Set(ctx, p, "kept", []byte("value"), 0); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Second)

	conn := dbConn(t, dsn)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM kv_usage WHERE project = 'busy' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	sweepCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	n, err := s.Sweep(sweepCtx)
	if err != nil || n != 5 {
		t.Fatalf("Sweep with project busy held = %d, %v; want the 5 of the other project", n, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	n, err = s.Sweep(ctx)
	if err != nil || n != 5 {
		t.Fatalf("Sweep after release = %d, %v; want 5", n, err)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("third Sweep = %d, %v; want 0", n, err)
	}
	for _, p := range []string{"busy", "idle"} {
		checkUsageMatchesRows(t, conn, p)
		if u, err := s.Usage(ctx, p); err != nil || u.Entries != 1 || u.Bytes != int64(len("kept")+len("value")) {
			t.Errorf("Usage(%s) = %+v, %v", p, u, err)
		}
	}
	// Nothing left to sweep, so no project is a candidate any more.
	var candidates int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM kv_usage WHERE next_expiry IS NOT NULL`).Scan(&candidates); err != nil || candidates != 0 {
		t.Errorf("projects with a next expiry after sweeping everything = %d, %v", candidates, err)
	}
}

// TestSetsOnlyBatches covers the one-round-trip path of batches made of Sets
// and SetManys: a key set several times keeps its last value, usage stays
// exact, and a project without room for the whole batch falls back to the
// general path — which refuses only the calls that do not fit — while a
// project with room in the same batch is written.
func TestSetsOnlyBatches(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	ctx := context.Background()
	var log batchLog
	cfg := testConfig(dsn)
	cfg.ObserveBatch = log.observe
	s := openStore(t, cfg)
	conn := dbConn(t, dsn)

	full := "q"
	for i := 0; partition(full, len(s.writeQs)) != partition("p", len(s.writeQs)); i++ {
		full = "q" + strconv.Itoa(i)
	}
	if err := s.SetQuota(ctx, full, 50); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, full, "old", make([]byte, 27), 0); err != nil { // 30 of 50 bytes
		t.Fatal(err)
	}

	st := newStall(t, s, dsn, "p")
	calls := []struct {
		name string
		call func() error
		want error
	}{
		{"p: k", func() error { return s.Set(ctx, "p", "k", []byte("a"), 0) }, nil},
		{"p: k again", func() error { return s.Set(ctx, "p", "k", []byte("bbbb"), time.Hour) }, nil},
		{"p: SetMany", func() error {
			return s.SetMany(ctx, "p", []store.Item{{Key: "k", Value: []byte("c")}, {Key: "j", Value: []byte("dd")}})
		}, nil},
		{"p: j", func() error { return s.Set(ctx, "p", "j", []byte("e"), 0) }, nil},
		{full + ": too big", func() error { return s.Set(ctx, full, "big", make([]byte, 18), 0) }, store.ErrQuotaExceeded},
		{full + ": fits", func() error { return s.Set(ctx, full, "small", make([]byte, 15), 0) }, nil},
		{full + ": now too big", func() error { return s.Set(ctx, full, "x", make([]byte, 1), 0) }, store.ErrQuotaExceeded},
	}
	errs := make([]error, len(calls))
	for i, c := range calls {
		st.queue(func() { errs[i] = c.call() })
	}
	st.release()
	for i, c := range calls {
		if !errors.Is(errs[i], c.want) || (c.want == nil && errs[i] != nil) {
			t.Errorf("%s: err = %v, want %v", c.name, errs[i], c.want)
		}
	}
	// p's four calls commit in one round trip, the other project's three
	// in a transaction of their own.
	if sizes := log.get(); !slices.Equal(sizes[len(sizes)-2:], []int{4, 3}) {
		t.Errorf("transactions = %v, want the last two of 4 and 3 calls", sizes)
	}
	for key, want := range map[string]string{"k": "c", "j": "e", "stall": "1"} {
		if v, ok, err := s.Get(ctx, "p", key); err != nil || !ok || string(v) != want {
			t.Errorf("Get(p, %q) = %q, %v, %v; want %q", key, v, ok, err, want)
		}
	}
	for _, p := range []string{"p", full} {
		checkUsageMatchesRows(t, conn, p)
	}
	if u, err := s.Usage(ctx, full); err != nil || u.Bytes != 50 {
		t.Errorf("Usage(%s) = %+v, %v; want 50 bytes", full, u, err)
	}
	// "k" was last set without a TTL, so nothing of p expires.
	var expiring int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM kv_entries WHERE project = 'p' AND expires_at IS NOT NULL`).Scan(&expiring); err != nil || expiring != 0 {
		t.Errorf("entries of p with an expiry = %d, %v; want 0", expiring, err)
	}
}

// TestFullQueueIsBusy checks that a write that cannot enter a full queue
// before its deadline fails with ErrBusy and writes nothing, while the
// queued ones commit once the committer moves on.
func TestFullQueueIsBusy(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	ctx := context.Background()
	cfg := testConfig(dsn)
	cfg.Committers = 1
	cfg.QueueSize = 2
	cfg.ProjectQueueShare = 1 // the whole queue for "p"
	s := openStore(t, cfg)
	st := newStall(t, s, dsn, "p")
	for i := range 2 {
		st.queue(func() {
			if err := s.Set(ctx, "p", "queued"+strconv.Itoa(i), []byte("v"), 0); err != nil {
				t.Errorf("queued Set: %v", err)
			}
		})
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := s.Set(short, "p", "refused", []byte("v"), 0); !errors.Is(err, store.ErrBusy) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Set into a full queue = %v, want ErrBusy (and the deadline)", err)
	}
	st.release()
	for key, want := range map[string]bool{"queued0": true, "queued1": true, "refused": false} {
		if _, ok, err := s.Get(ctx, "p", key); err != nil || ok != want {
			t.Errorf("Get(%q) found = %v, %v; want %v", key, ok, err, want)
		}
	}
}

// TestBackgroundSweeper checks that the sweeper started by Open deletes
// expired entries and frees their usage on its own.
func TestBackgroundSweeper(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	ctx := context.Background()
	clock := storetest.NewClock()
	cfg := testConfig(dsn)
	cfg.Now = clock.Now
	cfg.SweepInterval = 10 * time.Millisecond
	s := openStore(t, cfg)
	for i := range 10 {
		if err := s.Set(ctx, "p", "k"+strconv.Itoa(i), []byte("v"), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Set(ctx, "p", "kept", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	conn := dbConn(t, dsn)
	waitFor(t, "the sweeper to delete the expired entries", func() bool {
		var rows int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM kv_entries`).Scan(&rows)
		return err == nil && rows == 1
	})
	checkUsageMatchesRows(t, conn, "p")
}
