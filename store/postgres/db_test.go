package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsidecar/kvsidecar/store"
)

// defaultTestDSN is the server the tests use unless KV_TEST_POSTGRES_DSN
// names another. The tests create (and drop) databases of their own on it,
// so the role needs CREATEDB.
const defaultTestDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// baseDSN is the DSN of the server the tests run against.
func baseDSN() string {
	if dsn := os.Getenv("KV_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return defaultTestDSN
}

// requirePostgres fails the test when PostgreSQL cannot be reached — a
// silent skip would let a broken backend pass — unless
// KV_TEST_SKIP_POSTGRES=1 asks to skip.
func requirePostgres(t testing.TB) *pgx.Conn {
	t.Helper()
	if os.Getenv("KV_TEST_SKIP_POSTGRES") == "1" {
		t.Skip("KV_TEST_SKIP_POSTGRES=1: skipping the tests that need PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, baseDSN())
	if err != nil {
		t.Fatalf("PostgreSQL is not reachable at %s: %v\n"+
			"These tests need a PostgreSQL server whose role may create databases. Start one, e.g.\n"+
			"  docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16\n"+
			"and/or point KV_TEST_POSTGRES_DSN at it, or set KV_TEST_SKIP_POSTGRES=1 to skip them.",
			redact(baseDSN()), err)
	}
	return conn
}

// redact hides a password in a DSN URL before it goes into a message.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxx")
	}
	return u.String()
}

// randomName returns prefix followed by random hex digits: a name no other
// test run uses.
func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// testDatabase creates a fresh database for the test and drops it when the
// test ends. It returns the DSN of the new database.
func testDatabase(t testing.TB) string {
	t.Helper()
	conn := requirePostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	defer conn.Close(ctx)
	name := randomName("kvtest_")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, baseDSN())
		if err != nil {
			t.Errorf("drop test database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	return withDatabase(t, baseDSN(), name)
}

// withDatabase returns dsn with its database replaced.
func withDatabase(t testing.TB, dsn, database string) string {
	return withParam(t, dsn, "dbname", database)
}

// withParam returns dsn with one connection parameter set, in either DSN
// form (URL or key=value).
func withParam(t testing.TB, dsn, key, value string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("parse DSN: %v", err)
		}
		if key == "dbname" {
			u.Path = "/" + value
			return u.String()
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "='" + value + "'"
}

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
	name := randomName("s_")
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	return withParam(t, dsn, "search_path", name)
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

// dbConn connects to dsn for a test's own queries.
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
