package postgres

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestKeyLookupsUseTheWholeKey checks the plans of the statements that look
// up keys: each must find its rows through the primary key by project and
// key, never by scanning a project's rows and filtering them, whatever the
// table's statistics say. It plans them as the store does (generic plans)
// on a young table without statistics, and again after ANALYZE has seen a
// single large project.
func TestKeyLookupsUseTheWholeKey(t *testing.T) {
	dsn := pgtest.Database(t)
	openStore(t, testConfig(dsn)) // migrates
	ctx := context.Background()
	conn := dbConn(t, dsn)
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec(`SET plan_cache_mode = force_generic_plan`)
	exec(`INSERT INTO kv_settings VALUES ('default_quota', 1000000) ON CONFLICT DO NOTHING`)
	exec(`INSERT INTO kv_usage (project) VALUES ('p')`)

	statements := []struct{ name, sql, args string }{
		{"load", sqlLoadEntries, `'p', '{k1,k2}', '{k1}', NULL`},
		{"upsert", sqlUpsertEntries, `'p', '{k1}', '{v}', '{NULL}', '{0}', NULL, '{1}'`},
		{"delete", sqlDeleteEntries, `'p', '{k1,k2}'`},
		{"get values", sqlGetValues, `'p', '{k1,k2}', NULL`},
		{"get value", sqlGetValue, `'p', 'k1', NULL`},
		{"has keys", sqlHasKeys, `'p', '{k1,k2}', NULL`},
		{"has key", sqlHasKey, `'p', 'k1', NULL`},
		{"fast set", sqlFastSet, `'p', '{k1,k2}', '{v,w}', '{0,0}', NULL, 6, 6, NULL, '{1,2}', 2`},
		{"fast set one", sqlFastSetOne, `'p', 'k1', 'v', 0, NULL, 3, 3, 1`},
	}
	// A scan of kv_entries that is not driven by the whole key.
	bad := regexp.MustCompile(`Seq Scan on kv_entries|Bitmap Heap Scan on kv_entries|Hash Join|Merge Join|Filter: .*key = ANY`)
	check := func(when string) {
		t.Helper()
		for _, st := range statements {
			exec(`PREPARE probe AS ` + st.sql)
			rows, err := conn.Query(ctx, `EXPLAIN EXECUTE probe(`+st.args+`)`)
			if err != nil {
				t.Fatalf("%s: explain: %v", st.name, err)
			}
			var plan []string
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, line)
			}
			rows.Close()
			exec(`DEALLOCATE probe`)
			if text := strings.Join(plan, "\n"); bad.MatchString(text) || !strings.Contains(text, "kv_entries_pkey") {
				t.Errorf("%s, %s: the plan does not look rows up by the whole key:\n%s", when, st.name, text)
			}
		}
	}

	exec(`INSERT INTO kv_entries SELECT 'p', convert_to('k' || i, 'UTF8'), '\x00', NULL, i FROM generate_series(1, 200) i`)
	check("young table")
	exec(`INSERT INTO kv_entries SELECT 'p', convert_to('m' || i, 'UTF8'), '\x00', NULL, i FROM generate_series(1, 20000) i`)
	exec(`ANALYZE kv_entries`)
	check("one large project")
}
