// Package pgtest gives tests a PostgreSQL database of their own: created
// fresh on the server named by KV_TEST_POSTGRES_DSN (default: postgres on
// 127.0.0.1:5432) and dropped when the test ends, so runs never collide.
// Tests that take the database down use a Cluster instead: a server of
// their own, never the shared one.
//
// A test that needs PostgreSQL fails when the server cannot be reached — a
// silent skip would let a broken backend pass — unless KV_TEST_SKIP_POSTGRES=1
// asks to skip.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultDSN is the server the tests use unless KV_TEST_POSTGRES_DSN names
// another. Its role must be allowed to create databases.
const DefaultDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// BaseDSN returns the DSN of the server the tests run against.
func BaseDSN() string {
	if dsn := os.Getenv("KV_TEST_POSTGRES_DSN"); dsn != "" {
		return dsn
	}
	return DefaultDSN
}

// Require connects to the server, failing the test with a message that
// says how to provide one when it cannot (or skipping it when
// KV_TEST_SKIP_POSTGRES=1). The connection is closed when the test ends.
func Require(t testing.TB) *pgx.Conn {
	t.Helper()
	conn := connect(t)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// connect is Require without the cleanup: the caller closes the connection.
func connect(t testing.TB) *pgx.Conn {
	t.Helper()
	if os.Getenv("KV_TEST_SKIP_POSTGRES") == "1" {
		t.Skip("KV_TEST_SKIP_POSTGRES=1: skipping the tests that need PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, BaseDSN())
	if err != nil {
		t.Fatalf("PostgreSQL is not reachable at %s: %v\n"+
			"These tests need a PostgreSQL server whose role may create databases. Start one, e.g.\n"+
			"  docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16\n"+
			"and/or point KV_TEST_POSTGRES_DSN at it, or set KV_TEST_SKIP_POSTGRES=1 to skip them.",
			Redact(BaseDSN()), err)
	}
	return conn
}

// Database creates a fresh database, drops it when the test ends, and
// returns its DSN.
func Database(t testing.TB) string {
	t.Helper()
	conn := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Closed now, not when the test ends: the test holds no idle
	// connection to the server for its whole run.
	defer conn.Close(ctx)
	name := RandomName("kvtest_")
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, BaseDSN())
		if err != nil {
			t.Errorf("drop test database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	return WithParam(t, BaseDSN(), "dbname", name)
}

// RandomName returns prefix followed by random hex digits: a name no other
// test run uses.
func RandomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// WithParam returns dsn with one connection parameter set ("dbname"
// replaces the database), in either DSN form (URL or key=value).
func WithParam(t testing.TB, dsn, key, value string) string {
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

// Redact hides a password in a DSN URL before it goes into a message.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxx")
	}
	return u.String()
}
