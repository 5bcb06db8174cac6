package postgres

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// TestPurgeInSlices: a write that fits its quota only once thousands of
// expired rows are deleted purges them SweepBatch at a time, one slice a
// transaction; another project's write queued on the same committer
// meanwhile commits in the next transaction instead of after the purge, and
// a Delete of the purging project queued behind it still applies after it.
func TestPurgeInSlices(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	ctx := context.Background()
	clock := storetest.NewClock()
	var (
		mu      sync.Mutex
		commits int
		hold    bool
		held    = make(chan struct{})
		release = make(chan struct{})
	)
	cfg := testConfig(dsn)
	cfg.Committers = 1 // both projects on one committer
	cfg.SweepBatch = 100
	cfg.Now = clock.Now
	cfg.ObserveBatch = func(int) {
		mu.Lock()
		commits++
		h := hold
		hold = false
		mu.Unlock()
		if h {
			close(held)
			<-release
		}
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return commits
	}
	s := openStore(t, cfg)

	// 3000 rows of 16 bytes that expire; a quota of 60,000 bytes.
	for i := 0; i < 3000; i += 500 {
		items := make([]store.Item, 500)
		for j := range items {
			items[j] = store.Item{Key: fmt.Sprintf("k%05d", i+j), Value: []byte("0123456789"), TTL: time.Second}
		}
		if err := s.SetMany(ctx, "big", items); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetQuota(ctx, "big", 60_000); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)

	// 48,000 bytes stored, all expired: a 40,000-byte value fits only after
	// at least 18 slices of 100 rows (1,600 bytes each) are deleted.
	mu.Lock()
	hold = true
	mu.Unlock()
	before := count()
	bigErr := make(chan error, 1)
	go func() { bigErr <- s.Set(ctx, "big", "new", make([]byte, 40_000), 0) }()
	<-held // the first slice is committed; the Set waits for the next
	heldAt := count()
	q := s.writeQs[0]
	type deleted struct {
		existed bool
		err     error
	}
	after := make(chan deleted, 1)
	go func() {
		existed, err := s.Delete(ctx, "big", "new")
		after <- deleted{existed, err}
	}()
	waitFor(t, "the Delete to be queued", func() bool { return q.Len() == 1 })
	small := make(chan error, 1)
	go func() { small <- s.Set(ctx, "small", "k", []byte("v"), 0) }()
	waitFor(t, "the small Set to be queued", func() bool { return q.Len() == 2 })
	close(release)

	if err := <-small; err != nil {
		t.Fatalf("small project's Set = %v", err)
	}
	smallAt := count()
	if err := <-bigErr; err != nil {
		t.Fatalf("Set that needs the purge = %v, want success once the expired rows are gone", err)
	}
	bigAt := count()
	if d := <-after; d.err != nil || !d.existed {
		t.Fatalf("Delete queued behind the purging Set = %v, %v; want it applied after the Set", d.existed, d.err)
	}
	// The small Set is in the next batch drawn; its project's usage row is
	// new, so that batch may take two transactions (the fast path for it,
	// the general one for the purge).
	if smallAt-heldAt > 2 {
		t.Errorf("the small project's write committed %d transactions after it was queued, want the next batch", smallAt-heldAt)
	}
	if n := bigAt - before; n < 18 {
		t.Errorf("the purge took %d transactions, want at least 18 slices of 100 rows", n)
	}
	if smallAt >= bigAt {
		t.Errorf("the small write committed at transaction %d, the purging write at %d: it waited for the purge", smallAt, bigAt)
	}
	u, err := s.Usage(ctx, "big")
	if err != nil || u.Entries != 0 || u.Bytes != 0 {
		t.Fatalf("big's usage = %+v, %v; want nothing left (the Set, then the Delete)", u, err)
	}
}
