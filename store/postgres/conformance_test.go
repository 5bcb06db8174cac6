package postgres

import (
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// TestConformance runs the suite every backend passes. Each store the suite
// opens gets a schema of its own in one database, which is much quicker
// than a database each; the clock is injected through Config.Now.
func TestConformance(t *testing.T) {
	dsn := pgtest.Database(t)
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T, opts storetest.Options) store.Store {
			cfg := testConfig(testSchema(t, dsn))
			cfg.Limits = opts.Limits
			cfg.DefaultQuota = opts.DefaultQuota
			cfg.Now = opts.Now
			return openStore(t, cfg)
		},
	})
}

// TestConformanceShortScans runs the suite with key searches cut every two
// keys, so that they cross many statement boundaries.
func TestConformanceShortScans(t *testing.T) {
	dsn := pgtest.Database(t)
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T, opts storetest.Options) store.Store {
			cfg := testConfig(testSchema(t, dsn))
			cfg.Limits = opts.Limits
			cfg.DefaultQuota = opts.DefaultQuota
			cfg.Now = opts.Now
			cfg.SearchScan = 2
			return openStore(t, cfg)
		},
	})
}
