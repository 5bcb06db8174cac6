package postgres

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestMigrateConcurrentAndIdempotent opens stores on a fresh database from
// several goroutines at once, as daemons starting together would, then once
// more: every Open succeeds and each migration is applied exactly once.
func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := context.Background()

	const daemons = 4
	stores := make([]*Store, daemons)
	errs := make([]error, daemons)
	var wg sync.WaitGroup
	for i := range daemons {
		wg.Go(func() {
			octx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			stores[i], errs[i] = Open(octx, testConfig(dsn))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Open %d: %v", i, err)
		}
		t.Cleanup(func() { _ = stores[i].Close() })
	}
	s := openStore(t, testConfig(dsn)) // once more, on a migrated schema

	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	conn := dbConn(t, dsn)
	var applied, distinct int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT version) FROM kv_schema_migrations`).Scan(&applied, &distinct); err != nil {
		t.Fatal(err)
	}
	if applied != len(ms) || distinct != len(ms) {
		t.Fatalf("kv_schema_migrations holds %d rows (%d versions), want one per migration (%d)", applied, distinct, len(ms))
	}

	// The stores work, and see each other's writes.
	if err := stores[0].Set(ctx, "p", "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.Get(ctx, "p", "k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("Get through another store = %q, %v, %v", v, ok, err)
	}
}

// TestDefaultQuotaLivesInTheDatabase checks that the default quota one
// daemon sets is the one every daemon enforces, and that a daemon started
// without one keeps what the database has.
func TestDefaultQuotaLivesInTheDatabase(t *testing.T) {
	dsn := pgtest.Database(t)
	ctx := context.Background()
	cfg := testConfig(dsn)
	cfg.DefaultQuota = 1000
	a := openStore(t, cfg)
	b := openStore(t, testConfig(dsn)) // DefaultQuota 0: keep the database's
	if u, err := b.Usage(ctx, "p"); err != nil || u.Quota != 1000 {
		t.Fatalf("Usage through a daemon started without a default = %+v, %v; want quota 1000", u, err)
	}
	if err := b.SetDefaultQuota(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if err := a.Set(ctx, "p", "key", []byte("12345678"), 0); !errors.Is(err, store.ErrQuotaExceeded) {
		t.Fatalf("Set of 11 bytes through the other daemon = %v, want ErrQuotaExceeded: the default quota of 10 was not enforced", err)
	}
	if err := b.SetQuota(ctx, "p", 100); err != nil {
		t.Fatal(err)
	}
	if err := a.Set(ctx, "p", "key", []byte("12345678"), 0); err != nil {
		t.Fatalf("Set after a per-project override through the other daemon: %v", err)
	}
}

// TestMigrateGivesExistingEntriesVersions checks migration 0002 on a
// database written before versions: every entry gets a distinct version,
// and new writes get greater ones.
func TestMigrateGivesExistingEntriesVersions(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	ctx := context.Background()
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	conn := dbConn(t, dsn)
	for _, sql := range []string{
		ms[0].sql,
		`CREATE TABLE kv_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
		`INSERT INTO kv_schema_migrations (version, name) VALUES (1, '0001_init')`,
		`INSERT INTO kv_settings VALUES ('default_quota', 1000000)`,
		`INSERT INTO kv_usage (project, bytes, entries) VALUES ('p', 5, 2), ('q', 2, 1)`,
		`INSERT INTO kv_entries (project, key, value) VALUES ('p', 'a', '1'), ('p', 'b', '22'), ('q', 'a', '3')`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%.60s: %v", sql, err)
		}
	}
	s := openStore(t, testConfig(dsn))
	vs, err := s.GetManyVersioned(ctx, "p", []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if vs[0].Version == 0 || vs[1].Version == 0 || vs[0].Version == vs[1].Version || string(vs[1].Value) != "22" {
		t.Fatalf("after the migration: %+v, want distinct positive versions", vs)
	}
	v, err := s.SetIf(ctx, "p", "c", []byte("x"), 0, store.IfAbsent())
	if err != nil {
		t.Fatal(err)
	}
	if v <= max(vs[0].Version, vs[1].Version) {
		t.Fatalf("a new write got version %d, not above the migrated %d and %d", v, vs[0].Version, vs[1].Version)
	}
	if u, err := s.Usage(ctx, "q"); err != nil || u.Bytes != 2 {
		t.Fatalf("Usage(q) after the migration = %+v, %v", u, err)
	}
}
