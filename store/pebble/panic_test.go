package pebble

import (
	"context"
	"errors"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/batch"
)

// TestPanicInBatchFailsItsWrites: a write that panics inside the committer's
// batch fails the writes of its batch with an internal error (no
// store error: the daemon answers "internal" and logs it) instead of killing
// the process; the batch is dropped, and the store keeps serving.
func TestPanicInBatchFailsItsWrites(t *testing.T) {
	s, b := openHeld(t, Config{}, nil)
	ctx := context.Background()
	neighbour := make(chan error, 1)
	go func() { neighbour <- s.Set(ctx, "p", "neighbour", []byte("v"), 0) }()
	waitQueued(t, s, 1)
	bad := make(chan result, 1)
	go func() {
		bad <- s.submit(ctx, request{project: "p", apply: func(w *writeTx) (result, error) {
			if err := w.b.Set(metaKey("junk"), []byte("x"), nil); err != nil {
				return result{}, err
			}
			panic("a bug in a write")
		}})
	}()
	waitQueued(t, s, 2)
	close(b.release)

	for name, err := range map[string]error{"panicking write": (<-bad).err, "its neighbour": <-neighbour} {
		if !errors.Is(err, batch.ErrPanicked) {
			t.Errorf("%s = %v, want batch.ErrPanicked", name, err)
		}
		if errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrBadArgument) {
			t.Errorf("%s = %v matches a store error; a panic is internal", name, err)
		}
	}
	if found, err := s.Has(ctx, "p", "neighbour"); err != nil || found {
		t.Errorf("Has(neighbour) = %v, %v; the panicking batch was committed", found, err)
	}
	if _, closer, err := s.db.Get(metaKey("junk")); err == nil {
		closer.Close()
		t.Error("the panicking write's partial change was committed")
	}
	if u, err := s.Usage(ctx, "p"); err != nil || u.Entries != 0 {
		t.Errorf("Usage(p) = %+v, %v; the panicking batch's usage was kept", u, err)
	}
	if err := s.Set(ctx, "p", "after", []byte("v"), 0); err != nil {
		t.Fatalf("Set after the panic = %v, want the store still serving", err)
	}
	if v, found, err := s.Get(ctx, "p", "after"); err != nil || !found || string(v) != "v" {
		t.Fatalf("Get(after) = %q, %v, %v", v, found, err)
	}
}
