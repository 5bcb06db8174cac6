package pebble

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/kvsidecar/kvsidecar/store/internal/batch"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// seedProjects writes, without a store, n projects of one entry each
// ("k" = "value", no expiry) into a new directory at path, and, for each
// project index in expiring, a second entry "t" that expires at the given
// unix ms: as a store an earlier process wrote, whose expiries the
// committer can learn only from the index.
func seedProjects(t *testing.T, path string, n int, expiring map[int]int64) {
	t.Helper()
	opts := pebbleOptions(Config{}.withDefaults(), nil)
	db, err := pebble.Open(path, opts)
	opts.Cache.Unref()
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	set := func(k, v []byte) {
		if err := b.Set(k, v, nil); err != nil {
			t.Fatal(err)
		}
	}
	set(metaKey(metaFormat), encodeInt(formatVersion))
	for i := range n {
		name := seedName(i)
		st := projectState{version: 1}
		set(dataKey(name, []byte("k")), encodeRecord(0, 1, []byte("value")))
		st.bytes, st.entries = int64(len("k")+len("value")), 1
		if at, ok := expiring[i]; ok {
			set(dataKey(name, []byte("t")), encodeRecord(at, 1, []byte("value")))
			set(expKey(name, at, []byte("t")), nil)
			st.bytes, st.entries = st.bytes+int64(len("t")+len("value")), 2
		}
		set(projectKey(name), st.encode())
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func seedName(i int) string { return fmt.Sprintf("p%05d", i) }

// visits is how many projects the store's sweeps have visited so far.
func (s *Store) visits() int64 { return s.due.visits.Load() }

// wantUsage fails t unless project's usage is entries entries of bytes
// bytes.
func wantUsage(t *testing.T, s *Store, project string, entries, bytes int64) {
	t.Helper()
	u, err := s.Usage(context.Background(), project)
	if err != nil {
		t.Fatal(err)
	}
	if u.Entries != entries || u.Bytes != bytes {
		t.Fatalf("Usage(%s) = %+v, want %d entries, %d bytes", project, u, entries, bytes)
	}
}

// TestSweepVisitsOnlyDueProjects: of 20,000 projects a few have entries
// that expire. After Open the committer does not know which, so the first
// sweep looks at every project once, in requests of at most sweepVisits
// projects; from then on a sweep visits only the projects with an entry
// due: those whose expiries it learned from the index and those a Set with
// a TTL made due, and none when nothing is due.
func TestSweepVisitsOnlyDueProjects(t *testing.T) {
	const projects = 20000
	clock := storetest.NewClock()
	start := clock.Now().UnixMilli()
	seeded := map[int]int64{}
	for i := 0; i < projects; i += 2000 { // 10 projects
		seeded[i] = start + 1000
	}
	path := filepath.Join(t.TempDir(), "kv")
	seedProjects(t, path, projects, seeded)
	var batches int
	s, err := Open(context.Background(), Config{
		Path: path, Now: clock.Now, SweepInterval: -1,
		ObserveBatch: func(int) { batches++ }, // the committer's goroutine alone
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()

	n, err := s.Sweep(ctx)
	if err != nil || n != 0 {
		t.Fatalf("first Sweep = %d, %v; want nothing expired yet", n, err)
	}
	if v := s.visits(); v != projects {
		t.Fatalf("the first sweep after Open visited %d projects, want each of the %d once", v, projects)
	}
	if min := (projects + sweepVisits - 1) / sweepVisits; batches < min {
		t.Fatalf("the first sweep took %d batches, want at least %d of %d projects", batches, min, sweepVisits)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 0 || s.visits() != projects {
		t.Fatalf("Sweep with nothing due = %d, %v and %d more visits; want none", n, err, s.visits()-projects)
	}

	// Five other projects get an entry that expires; then everything
	// seeded and set has expired.
	for i := 1; i < 10; i += 2 {
		if err := s.Set(ctx, seedName(i), "t", []byte("value"), 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(3 * time.Second)
	before := s.visits()
	if n, err := s.Sweep(ctx); err != nil || n != 15 {
		t.Fatalf("Sweep = %d, %v; want the 15 expired entries", n, err)
	}
	if v := s.visits() - before; v != 15 {
		t.Fatalf("the sweep visited %d projects, want the 15 with an entry due", v)
	}
	for i := range seeded {
		wantUsage(t, s, seedName(i), 1, int64(len("k")+len("value")))
	}
	for i := 1; i < 10; i += 2 {
		wantUsage(t, s, seedName(i), 1, int64(len("k")+len("value")))
	}
	if n, err := s.Sweep(ctx); err != nil || n != 0 || s.visits() != before+15 {
		t.Fatalf("Sweep after = %d, %v and %d more visits; want none", n, err, s.visits()-before-15)
	}
}

// TestSweepLearnsTheNextExpiry: what the committer remembers of a project
// is a lower bound on its earliest expiry. When the earliest entry is
// deleted or overwritten without a TTL, the sweep that comes when it was
// due finds nothing, learns the true next expiry from the index and does
// not visit the project again before it.
func TestSweepLearnsTheNextExpiry(t *testing.T) {
	for _, change := range []string{"delete", "overwrite"} {
		t.Run(change, func(t *testing.T) {
			clock := storetest.NewClock()
			s := openClocked(t, clock, Config{})
			ctx := context.Background()
			if err := s.Set(ctx, "p", "soon", []byte("v"), time.Second); err != nil {
				t.Fatal(err)
			}
			if err := s.Set(ctx, "p", "later", []byte("v"), time.Minute); err != nil {
				t.Fatal(err)
			}
			if change == "delete" {
				if _, err := s.Delete(ctx, "p", "soon"); err != nil {
					t.Fatal(err)
				}
			} else if err := s.Set(ctx, "p", "soon", []byte("kept"), 0); err != nil {
				t.Fatal(err)
			}
			clock.Advance(2 * time.Second)
			if n, err := s.Sweep(ctx); err != nil || n != 0 || s.visits() != 1 {
				t.Fatalf("Sweep when the first entry was due = %d, %v after %d visits; want 0 entries, 1 visit", n, err, s.visits())
			}
			clock.Advance(30 * time.Second)
			if n, err := s.Sweep(ctx); err != nil || n != 0 || s.visits() != 1 {
				t.Fatalf("Sweep before the next expiry = %d, %v after %d visits; want no new visit", n, err, s.visits())
			}
			clock.Advance(30 * time.Second)
			if n, err := s.Sweep(ctx); err != nil || n != 1 || s.visits() != 2 {
				t.Fatalf("Sweep after the next expiry = %d, %v after %d visits; want 1 entry, 2 visits", n, err, s.visits())
			}
			if change == "delete" {
				wantUsage(t, s, "p", 0, 0)
			} else {
				wantUsage(t, s, "p", 1, int64(len("soon")+len("kept")))
			}
		})
	}
}

// TestSweepLearnsAfterAQuotaPurge: a write that purges its project's expired
// entries for quota learns the next expiry too: a Sweep after it has
// nothing to visit until then.
func TestSweepLearnsAfterAQuotaPurge(t *testing.T) {
	clock := storetest.NewClock()
	s := openClocked(t, clock, Config{})
	ctx := context.Background()
	if err := s.SetQuota(ctx, "p", 100); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "p", "old", make([]byte, 60), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "p", "next", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	// 64 + 5 bytes stored; 60 more fit only once "old" is purged.
	if err := s.Set(ctx, "p", "new", make([]byte, 60), 0); err != nil {
		t.Fatalf("Set that needs the purge = %v", err)
	}
	wantUsage(t, s, "p", 2, int64(len("next")+1+len("new")+60))
	if n, err := s.Sweep(ctx); err != nil || n != 0 || s.visits() != 0 {
		t.Fatalf("Sweep after the purge = %d, %v after %d visits; want none", n, err, s.visits())
	}
	clock.Advance(time.Minute)
	if n, err := s.Sweep(ctx); err != nil || n != 1 || s.visits() != 1 {
		t.Fatalf("Sweep after the next expiry = %d, %v after %d visits; want 1 entry, 1 visit", n, err, s.visits())
	}
	wantUsage(t, s, "p", 1, int64(len("new")+60))
}

// TestSweepLearnsAfterReopen: expiries set before a restart are found by
// the sweeps after it, though the committer's memory of them is gone.
func TestSweepLearnsAfterReopen(t *testing.T) {
	clock := storetest.NewClock()
	path := filepath.Join(t.TempDir(), "kv")
	ctx := context.Background()
	s, err := Open(ctx, Config{Path: path, Now: clock.Now, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "b", "c"} {
		if err := s.Set(ctx, p, "k", []byte("v"), time.Second); err != nil {
			t.Fatal(err)
		}
		if err := s.Set(ctx, p, "stays", []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, Config{Path: path, Now: clock.Now, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if n, err := s.Sweep(ctx); err != nil || n != 0 || s.visits() != 3 {
		t.Fatalf("Sweep before the expiry = %d, %v after %d visits; want 0, each project looked at once", n, err, s.visits())
	}
	clock.Advance(2 * time.Second)
	if n, err := s.Sweep(ctx); err != nil || n != 3 || s.visits() != 6 {
		t.Fatalf("Sweep after the expiry = %d, %v after %d visits; want 3 entries, 3 more visits", n, err, s.visits())
	}
	for _, p := range []string{"a", "b", "c"} {
		wantUsage(t, s, p, 1, int64(len("stays")+1))
	}
}

// TestDroppedSweepForgetsNothing: a sweep whose batch is dropped (here by a
// write that panics in it) gives back the projects it took, so the next
// sweep still removes their expired entries.
func TestDroppedSweepForgetsNothing(t *testing.T) {
	clock := storetest.NewClock()
	ctx := context.Background()
	s, b := openHeld(t, Config{Now: clock.Now}, func(s *Store) error {
		return s.Set(ctx, "p", "k", []byte("v"), time.Second)
	})
	<-b.held // the Set is committed; the committer waits
	clock.Advance(2 * time.Second)
	swept := make(chan error, 1)
	go func() {
		_, err := s.Sweep(ctx)
		swept <- err
	}()
	waitQueued(t, s, 1)
	bad := make(chan result, 1)
	go func() {
		bad <- s.submit(ctx, request{project: "q", apply: func(w *writeTx) (result, error) {
			panic("a bug in a write")
		}})
	}()
	waitQueued(t, s, 2)
	close(b.release)
	if err := <-swept; !errors.Is(err, batch.ErrPanicked) {
		t.Fatalf("Sweep in the panicking batch = %v, want batch.ErrPanicked", err)
	}
	<-bad
	if s.visits() != 1 {
		t.Fatalf("the dropped sweep visited %d projects, want p", s.visits())
	}
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("Sweep after the dropped one = %d, %v; want p's expired entry", n, err)
	}
	wantUsage(t, s, "p", 0, 0)
}

// TestSweepSharesBetweenProjects: one project has a large backlog of
// expired entries, older than the few of another. A project removes at
// most its share in one sweep request and is then queued behind the others
// due, so the first Sweep cleans the small project too; the backlog is
// cleared over the following Sweeps, each still removing SweepBatch.
func TestSweepSharesBetweenProjects(t *testing.T) {
	const sweepBatch, backlog, few = 40, 200, 3
	clock := storetest.NewClock()
	s := openClocked(t, clock, Config{SweepBatch: sweepBatch})
	ctx := context.Background()
	for i := range backlog {
		if err := s.Set(ctx, "big", fmt.Sprintf("k%03d", i), []byte("v"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Second)
	for i := range few {
		if err := s.Set(ctx, "small", fmt.Sprintf("k%d", i), []byte("v"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Second)

	if n, err := s.Sweep(ctx); err != nil || n != sweepBatch {
		t.Fatalf("first Sweep = %d, %v; want %d", n, err, sweepBatch)
	}
	if n := storedEntries(t, s, "small"); n != 0 {
		t.Fatalf("after the first Sweep the small project stores %d expired entries, want none", n)
	}
	if n := storedEntries(t, s, "big"); n != backlog-(sweepBatch-few) {
		t.Fatalf("after the first Sweep the backlog is %d entries, want %d", n, backlog-(sweepBatch-few))
	}
	var total int64 = sweepBatch
	for total < backlog+few {
		n, err := s.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := min(sweepBatch, backlog+few-total); n != want {
			t.Fatalf("Sweep after %d removed = %d, want %d", total, n, want)
		}
		total += n
	}
	if n := storedEntries(t, s, "big"); n != 0 {
		t.Fatalf("after the backlog's Sweeps it stores %d entries, want none", n)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep once all are gone = %d, %v; want none", n, err)
	}
}

// queuedDue is how many entries the due index holds, read on the
// committer.
func queuedDue(t *testing.T, s *Store) int64 {
	t.Helper()
	res := s.submit(context.Background(), request{apply: func(w *writeTx) (result, error) {
		if len(w.s.due.heap.pos) != len(w.s.due.heap.items) {
			return result{}, fmt.Errorf("due index: %d positions for %d entries", len(w.s.due.heap.pos), len(w.s.due.heap.items))
		}
		return result{n: int64(len(w.s.due.heap.items))}, nil
	}})
	if res.err != nil {
		t.Fatal(res.err)
	}
	return res.n
}

// TestDueIndexHoldsEachProjectOnce: a tenant that shortens its TTLs again
// and again moves its project's one entry in the due index instead of
// adding one each time, so the index never grows past the projects with
// an expiry and is never rebuilt; the shortest expiry is still the one
// the sweep acts on.
func TestDueIndexHoldsEachProjectOnce(t *testing.T) {
	clock := storetest.NewClock()
	s := openClocked(t, clock, Config{})
	ctx := context.Background()
	if err := s.Set(ctx, "other", "k", []byte("v"), 10*time.Hour); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		ttl := time.Duration(200-i) * time.Minute // earlier each time
		if err := s.Set(ctx, "p", fmt.Sprintf("k%03d", i), []byte("v"), ttl); err != nil {
			t.Fatal(err)
		}
	}
	if n := queuedDue(t, s); n != 2 {
		t.Fatalf("after 100 shortening Sets the due index holds %d entries, want 2 (one a project)", n)
	}
	clock.Advance(101*time.Minute + time.Second) // past the shortest, k099's
	if n, err := s.Sweep(ctx); err != nil || n != 1 || s.visits() != 1 {
		t.Fatalf("Sweep after the shortest expiry = %d, %v after %d visits; want 1 entry, 1 visit", n, err, s.visits())
	}
	if n := queuedDue(t, s); n != 2 {
		t.Fatalf("after the sweep the due index holds %d entries, want 2", n)
	}
	clock.Advance(time.Hour)
	if n, err := s.Sweep(ctx); err != nil || n != 60 {
		t.Fatalf("Sweep an hour later = %d, %v; want p's 60 expired entries", n, err)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep after = %d, %v; want none", n, err)
	}
}

// openClocked opens a store in a new directory on clock with no background
// sweeper, cfg's other settings as given, closed when the test ends.
func openClocked(t *testing.T, clock *storetest.Clock, cfg Config) *Store {
	t.Helper()
	cfg.Path, cfg.Now, cfg.SweepInterval = filepath.Join(t.TempDir(), "kv"), clock.Now, -1
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
