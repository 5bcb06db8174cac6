package pebble

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// commits counts committed batches and can hold the committer in the
// next one's ObserveBatch.
type commits struct {
	mu      sync.Mutex
	n       int
	hold    bool
	held    chan struct{}
	release chan struct{}
}

func (c *commits) observe(int) {
	c.mu.Lock()
	c.n++
	hold := c.hold
	c.hold = false
	c.mu.Unlock()
	if hold {
		close(c.held)
		<-c.release
	}
}

func (c *commits) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestPurgeInSlices: a write refused for quota until its project's
// thousands of expired entries are deleted purges them in slices of
// SweepBatch, one slice a batch; another project's write queued
// meanwhile commits in the next batch instead of waiting for the whole
// purge, and the purging project's later writes keep their order behind it.
func TestPurgeInSlices(t *testing.T) {
	const (
		entries = 5000
		slice   = 100
	)
	clock := storetest.NewClock()
	c := &commits{held: make(chan struct{}), release: make(chan struct{})}
	s, err := Open(context.Background(), Config{
		Path: filepath.Join(t.TempDir(), "kv"), Now: clock.Now,
		SweepInterval: -1, SweepBatch: slice, ObserveBatch: c.observe,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()

	// 5000 entries of 16 bytes that expire; a quota of 100,000 bytes.
	for i := 0; i < entries; i += 100 {
		items := make([]store.Item, 100)
		for j := range items {
			items[j] = store.Item{Key: fmt.Sprintf("k%05d", i+j), Value: []byte("0123456789"), TTL: time.Second}
		}
		if err := s.SetMany(ctx, "big", items); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetQuota(ctx, "big", 100_000); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)

	// 80,000 bytes stored, all expired: a 60,000-byte value fits only after
	// at least 25 slices of 100 entries (1,600 bytes each) are deleted.
	c.mu.Lock()
	c.hold = true
	c.mu.Unlock()
	before := c.count()
	bigErr := make(chan error, 1)
	go func() { bigErr <- s.Set(ctx, "big", "new", make([]byte, 60_000), 0) }()
	<-c.held // the first slice is committed; the write waits for the next
	held := c.count()
	type deleted struct {
		existed bool
		err     error
	}
	after := make(chan deleted, 1)
	go func() {
		existed, err := s.Delete(ctx, "big", "new")
		after <- deleted{existed, err}
	}()
	waitQueued(t, s, 1)
	small := make(chan error, 1)
	go func() { small <- s.Set(ctx, "small", "k", []byte("v"), 0) }()
	waitQueued(t, s, 2)
	close(c.release)

	if err := <-small; err != nil {
		t.Fatalf("small project's Set = %v", err)
	}
	smallAt := c.count()
	if err := <-bigErr; err != nil {
		t.Fatalf("Set that needs the purge = %v, want success once the expired entries are gone", err)
	}
	bigAt := c.count()
	d := <-after
	if d.err != nil || !d.existed {
		t.Fatalf("Delete queued after the purging Set = %v, %v; want it applied after the Set (existed)", d.existed, d.err)
	}

	if smallAt-held > 1 {
		t.Errorf("the small project's write committed %d batches after it was queued, want the next one", smallAt-held)
	}
	if slices := bigAt - before; slices < 25 {
		t.Errorf("the purge took %d batches, want at least 25 slices of %d entries", slices, slice)
	}
	if smallAt >= bigAt {
		t.Errorf("the small write committed at batch %d, the purging write at %d: it waited for the purge", smallAt, bigAt)
	}
	u, err := s.Usage(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if u.Entries != 0 || u.Bytes != 0 {
		t.Fatalf("big's usage = %+v, want nothing left (the Set, then the Delete)", u)
	}
}
