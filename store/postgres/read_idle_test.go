package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestReadAfterIdleSessionTimeout: a server whose operator set
// idle_session_timeout (PostgreSQL 14+) ends a session idle that long with
// FATAL 57P05. The pool checks a connection idle for over a second before
// handing it out, but the reader keeps its connection between rounds, so a
// read after a quiet spell meets the frame of its ended session: it must
// run again on another connection, not fail.
func TestReadAfterIdleSessionTimeout(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	dsn = pgtest.WithParam(t, dsn, "idle_session_timeout", "300")
	s := openStore(t, testConfig(dsn))
	ctx := context.Background()
	if err := s.Set(ctx, "p", "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		value, found, err := s.Get(ctx, "p", "k")
		if err != nil || !found || string(value) != "v" {
			t.Errorf("get %d after a quiet spell: %q, found %v, err %v; want \"v\"", i, value, found, err)
		}
		many, err := s.GetMany(ctx, "p", []string{"k", "absent"})
		if err != nil || len(many) != 2 || string(many[0]) != "v" || many[1] != nil {
			t.Errorf("get_many %d after a quiet spell: %q, err %v; want [v <nil>]", i, many, err)
		}
		time.Sleep(700 * time.Millisecond)
	}
}
