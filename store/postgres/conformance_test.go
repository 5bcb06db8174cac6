package postgres

import (
	"sync"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// harness opens stores on new schemas of the test database, and reopens
// one with the Config it was opened with.
func harness(t *testing.T) storetest.Harness {
	return harnessWith(t, func(*Config) {})
}

// harnessWith is harness with each Config changed by configure.
func harnessWith(t *testing.T, configure func(*Config)) storetest.Harness {
	dsn := pgtest.Database(t)
	var configs sync.Map // *Store → the Config it was opened with
	return storetest.Harness{
		Open: func(t *testing.T, opts storetest.Options) store.Store {
			cfg := testConfig(testSchema(t, dsn))
			cfg.Limits = opts.Limits
			cfg.DefaultQuota = opts.DefaultQuota
			cfg.Now = opts.Now
			configure(&cfg)
			s := openStore(t, cfg)
			configs.Store(s, cfg)
			return s
		},
		Reopen: func(t *testing.T, old store.Store) store.Store {
			cfg, ok := configs.Load(old)
			if !ok {
				t.Fatal("Reopen: a store this harness did not open")
			}
			if err := old.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			s := openStore(t, cfg.(Config))
			configs.Store(s, cfg)
			return s
		},
	}
}

// TestConformance runs the suite every backend passes. Each store the suite
// opens gets a schema of its own in one database, which is much quicker
// than a database each; the clock is injected through Config.Now.
func TestConformance(t *testing.T) {
	storetest.Run(t, harness(t))
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

// TestConformanceThroughDo runs the suite again with every single-key
// operation going through Do (store.Async), and then Do's own tests.
func TestConformanceThroughDo(t *testing.T) {
	storetest.RunAsync(t, harness(t))
}

// TestConformanceWithLeases runs the suite, waiting calls and through Do,
// with quota leases.
func TestConformanceWithLeases(t *testing.T) {
	leases := func(cfg *Config) { cfg.Leases = true }
	t.Run("sync", func(t *testing.T) { storetest.Run(t, harnessWith(t, leases)) })
	t.Run("async", func(t *testing.T) { storetest.RunAsync(t, harnessWith(t, leases)) })
}
