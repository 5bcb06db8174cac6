package postgres

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/batch"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestPanicInCommitFailsItsBatch: a panic on a committer (here in the
// ObserveBatch hook, after the commit) fails the calls of that batch with an
// internal error — no store error, so the daemon answers "internal" and logs
// it — instead of killing the process, and the committer goes on serving.
func TestPanicInCommitFailsItsBatch(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	ctx := context.Background()
	var armed atomic.Bool
	cfg := testConfig(dsn)
	cfg.Committers = 1
	cfg.ObserveBatch = func(int) {
		if armed.CompareAndSwap(true, false) {
			panic("a bug in the batch hook")
		}
	}
	s := openStore(t, cfg)

	armed.Store(true)
	err := s.Set(ctx, "p", "k", []byte("v"), 0)
	if !errors.Is(err, batch.ErrPanicked) || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Set in a batch whose commit panicked = %v, want batch.ErrPanicked and no store error", err)
	}
	if err := s.Set(ctx, "p", "after", []byte("v"), 0); err != nil {
		t.Fatalf("Set after the panic = %v, want the committer still serving", err)
	}
	if n, err := s.Incr(ctx, "p", "n", 2, 0); err != nil || n != 2 {
		t.Fatalf("Incr after the panic = %d, %v; want 2", n, err)
	}
	if v, found, err := s.Get(ctx, "p", "after"); err != nil || !found || string(v) != "v" {
		t.Fatalf("Get(after) = %q, %v, %v", v, found, err)
	}
}
