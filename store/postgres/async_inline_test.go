package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestDoReadsAtIdleReader: at an idle reader, Do runs its reads' round
// itself, so each read's Done has been called with its answer when Do
// returns.
func TestDoReadsAtIdleReader(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	s := openStore(t, testConfig(dsn))
	if err := s.Set(context.Background(), "p", "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	var got []string
	ops := []*store.Op{
		{Kind: store.OpGet, Project: "p", Key: "k", Deadline: time.Now().Add(time.Minute)},
		{Kind: store.OpHas, Project: "p", Key: "absent", Deadline: time.Now().Add(time.Minute)},
	}
	for _, op := range ops {
		op.Done = func(o *store.Op) {
			if o.Err != nil {
				t.Errorf("%s: %v", o.Key, o.Err)
			}
			if o.Kind == store.OpGet {
				got = append(got, string(o.Value)) // valid only while Done runs
			} else if o.Found {
				got = append(got, "absent found")
			} else {
				got = append(got, "absent missing")
			}
		}
	}
	s.Do(ops)
	if len(got) != 2 || got[0] != "v" || got[1] != "absent missing" {
		t.Fatalf("answered before Do returned: %q; want [v, absent missing]", got)
	}
}

// TestDoReadOnFrozenDatabase: a read that Do runs itself on a frozen
// database holds its caller only until the op's deadline, not for the
// statement timeout, and fails with ErrUnavailable; the reads after it go
// to the reader instead, so that the frozen database does not hold the
// caller again; and the reader serves again once the database wakes.
func TestDoReadOnFrozenDatabase(t *testing.T) {
	c := pgtest.NewCluster(t)
	cfg := testConfig(c.DSN())
	cfg.StatementTimeout = time.Minute // far beyond the ops' deadlines
	s := openStore(t, cfg)
	ctx := context.Background()
	if err := s.Set(ctx, "p", "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	c.Freeze()
	defer c.Thaw()

	const deadline = 500 * time.Millisecond
	op := &store.Op{Kind: store.OpGet, Project: "p", Key: "k", Deadline: time.Now().Add(deadline)}
	done := make(chan error, 1)
	op.Done = func(o *store.Op) { done <- o.Err }
	returned := make(chan struct{})
	go func() { s.Do([]*store.Op{op}); close(returned) }()
	select {
	case <-returned:
	case <-time.After(30 * time.Second): // scheduling slack, far below the statement timeout
		t.Fatal("Do on a frozen database did not return by its op's deadline")
	}
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("get on a frozen database: %v; want ErrUnavailable", err)
		}
	default:
		t.Fatal("Do returned before the read's Done was called")
	}

	// Now that the database failed a read, the next is handed to the
	// reader: Do returns before its Done, which the reader calls once the
	// deadline has passed.
	second := &store.Op{Kind: store.OpGet, Project: "p", Key: "k", Deadline: time.Now().Add(deadline)}
	secondDone := make(chan error, 1)
	second.Done = func(o *store.Op) { secondDone <- o.Err }
	s.Do([]*store.Op{second})
	select {
	case err := <-secondDone:
		t.Fatalf("a read after the database failed one was answered inside Do (%v); want it handed to the reader", err)
	default:
	}
	if err := <-secondDone; !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("second get on a frozen database: %v; want ErrUnavailable", err)
	}
	c.Thaw()
	getCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if v, ok, err := s.Get(getCtx, "p", "k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("get after the thaw = %q, %v, %v", v, ok, err)
	}
}
