package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// The tests get their databases from pgtest (pgtest.Database, a fresh
// database dropped when the test ends; pgtest.Cluster, a server of the
// test's own to crash). What follows is only what this package adds.

// testSchema creates a fresh schema in the database of dsn and returns a
// DSN whose connections use it (search_path). Stores opened on it see empty
// tables; it goes when the database is dropped.
func testSchema(t testing.TB, dsn string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	name := pgtest.RandomName("s_")
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	return pgtest.WithParam(t, dsn, "search_path", name)
}

// testConfig is a Config for tests: short timeouts, no background sweeper
// (tests call Sweep), and the given DSN.
func testConfig(dsn string) Config {
	return Config{
		DSN:              dsn,
		StatementTimeout: 5 * time.Second,
		SweepInterval:    -1,
	}
}

// openStore opens a store and closes it when the test ends.
func openStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// dbConn connects to dsn for a test's own queries and closes the
// connection when the test ends.
func dbConn(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
