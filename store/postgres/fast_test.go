package postgres

import (
	"context"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestFastSetAfterAnotherDaemonsWrite checks the one-statement Set when
// another daemon writes the same key while the Set waits for the project's
// usage row: the Set must count the row the other daemon stored, so usage
// stays equal to what the table holds, and its version must come after the
// other write's.
func TestFastSetAfterAnotherDaemonsWrite(t *testing.T) {
	for _, keys := range []int{1, 2} { // sqlFastSetOne and sqlFastSet
		dsn := testSchema(t, pgtest.Database(t))
		s := openStore(t, testConfig(dsn))
		ctx := context.Background()
		if err := s.Set(ctx, "p", "first", []byte("x"), 0); err != nil {
			t.Fatal(err)
		}

		// The other daemon's write: lock the usage row, store "k" and its
		// usage and version, as a write batch does.
		conn := dbConn(t, dsn)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		var otherVersion int64
		if err := tx.QueryRow(ctx, `UPDATE kv_usage SET version = version + 1 WHERE project = 'p' RETURNING version`).Scan(&otherVersion); err != nil {
			t.Fatal(err)
		}

		done := make(chan error, 1)
		go func() {
			if keys == 1 {
				done <- s.Set(ctx, "p", "k", []byte("mine"), 0)
				return
			}
			done <- s.SetMany(ctx, "p", []store.Item{{Key: "k", Value: []byte("mine")}, {Key: "j", Value: []byte("mine")}})
		}()
		waitFor(t, "the store's Set to wait for the usage row lock", func() bool {
			var waiting int
			err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
			return err == nil && waiting > 0
		})
		if _, err := tx.Exec(ctx, `INSERT INTO kv_entries (project, key, value, version) VALUES ('p', 'k', 'theirs, longer', $1)`, otherVersion); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `UPDATE kv_usage SET bytes = bytes + $1, entries = entries + 1 WHERE project = 'p'`, len("k")+len("theirs, longer")); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("Set while another daemon wrote the key: %v", err)
		}

		checkUsageMatchesRows(t, conn, "p")
		v, ok, err := s.Get(ctx, "p", "k")
		if err != nil || !ok || string(v) != "mine" {
			t.Errorf("Get(k) = %q, %v, %v; want the later write, mine", v, ok, err)
		}
		e, ok, err := s.Entry(ctx, "p", "k")
		if err != nil || !ok || e.Version <= uint64(otherVersion) {
			t.Errorf("version of k = %d, %v, %v; want above the other daemon's %d", e.Version, ok, err, otherVersion)
		}
	}
}
