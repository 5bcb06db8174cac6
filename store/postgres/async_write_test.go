package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestDoLoneSetAtIdleCommitter: at an idle committer, Do commits a lone
// Set itself, so its Done has been called when Do returns, and what the
// Done reports is committed: another connection reads the value, with the
// version the Done was given, while Done runs.
func TestDoLoneSetAtIdleCommitter(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	s := openStore(t, testConfig(dsn))
	other := dbConn(t, dsn)
	ctx := context.Background()
	for i, value := range []string{"first", "second"} {
		var seen []byte
		var seenVersion int64
		called := false
		op := &store.Op{Kind: store.OpSet, Project: "p", Key: "k", Value: []byte(value), Deadline: time.Now().Add(time.Minute)}
		op.Done = func(o *store.Op) {
			called = true
			if o.Err != nil {
				t.Errorf("set %d: %v", i, o.Err)
				return
			}
			if err := other.QueryRow(ctx, `SELECT value, version FROM kv_entries WHERE project = 'p' AND key = 'k'`).Scan(&seen, &seenVersion); err != nil {
				t.Errorf("read the set's row from another connection inside Done: %v", err)
			}
			if uint64(seenVersion) != o.Version {
				t.Errorf("set %d: Done has version %d, the table %d", i, o.Version, seenVersion)
			}
		}
		s.Do([]*store.Op{op})
		if !called {
			t.Fatalf("set %d: Do returned before the set's Done; want it committed on Do's goroutine at an idle committer", i)
		}
		if string(seen) != value {
			t.Fatalf("set %d: another connection read %q inside Done; want %q, committed", i, seen, value)
		}
	}
	var bytes, entries int64
	if err := other.QueryRow(ctx, `SELECT bytes, entries FROM kv_usage WHERE project = 'p'`).Scan(&bytes, &entries); err != nil {
		t.Fatal(err)
	}
	if want := store.EntrySize("k", []byte("second")); bytes != want || entries != 1 {
		t.Fatalf("usage after two sets of one key: %d bytes in %d entries; want %d in 1", bytes, entries, want)
	}
}

// TestDoWriteOnFrozenDatabase: a write that Do commits itself on a frozen
// database holds its caller only until the op's deadline, not for the
// statement timeout, and fails with ErrUnavailable; the writes after it go
// to the committer, so that the frozen database does not hold the caller
// again; and writes are committed again once the database wakes.
func TestDoWriteOnFrozenDatabase(t *testing.T) {
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
	op := &store.Op{Kind: store.OpSet, Project: "p", Key: "k", Value: []byte("frozen"), Deadline: time.Now().Add(deadline)}
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
			t.Fatalf("set on a frozen database: %v; want ErrUnavailable", err)
		}
	default:
		t.Fatal("Do returned before the write's Done was called")
	}

	// Now that the database failed a write, the next is handed to the
	// committer: Do returns before its Done, which the committer calls
	// once the deadline has passed.
	second := &store.Op{Kind: store.OpDelete, Project: "p", Key: "k", Deadline: time.Now().Add(deadline)}
	secondDone := make(chan error, 1)
	second.Done = func(o *store.Op) { secondDone <- o.Err }
	s.Do([]*store.Op{second})
	select {
	case err := <-secondDone:
		t.Fatalf("a write after the database failed one was answered inside Do (%v); want it handed to the committer", err)
	default:
	}
	if err := <-secondDone; !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("second write on a frozen database: %v; want ErrUnavailable", err)
	}
	c.Thaw()
	// The first write of Do after the thaw goes to the committer too, and
	// its success lets Do commit at an idle committer again.
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		after := &store.Op{Kind: store.OpSet, Project: "p", Key: "after", Value: []byte("thawed"), Deadline: time.Now().Add(2 * time.Second)}
		afterDone := make(chan error, 1)
		after.Done = func(o *store.Op) { afterDone <- o.Err }
		s.Do([]*store.Op{after})
		err := <-afterDone
		if err == nil {
			break
		}
		if waitCtx.Err() != nil {
			t.Fatalf("set after the thaw: %v", err)
		}
	}
	// The committer lets go of the batch just after its last Done, so a
	// Do right after may still find it busy: look a few times.
	for attempt := 0; ; attempt++ {
		third := &store.Op{Kind: store.OpSet, Project: "p", Key: "k", Value: []byte("again"), Deadline: time.Now().Add(time.Minute)}
		thirdDone := make(chan error, 1)
		third.Done = func(o *store.Op) { thirdDone <- o.Err }
		s.Do([]*store.Op{third})
		select {
		case err := <-thirdDone:
			if err != nil {
				t.Fatalf("set after a write succeeded again: %v", err)
			}
			return // answered inside Do
		default:
		}
		if err := <-thirdDone; err != nil {
			t.Fatalf("set after a write succeeded again: %v", err)
		}
		if attempt == 100 {
			t.Fatal("after a write succeeded again, Do never committed a write itself")
		}
	}
}
