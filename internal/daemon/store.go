package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/pebble"
	"github.com/kvsidecar/kvsidecar/store/postgres"
)

// Names in the data directory.
const (
	// pebbleDir is the embedded store's Pebble directory.
	pebbleDir = "kv"
	// boltFile is the embedded store's bbolt file of earlier releases: at
	// start-up it is migrated into pebbleDir and renamed (pebble.MigrateBolt).
	boltFile = "kv.db"
)

// openStore opens the backend the configuration selects: PostgreSQL when a
// DSN is given, else the embedded store under DataDir. It also returns the
// store's name for the start-up log.
func openStore(ctx context.Context, cfg Config, m *sidecar.Metrics, log *zap.Logger) (store.Store, string, error) {
	if cfg.Postgres != "" {
		maxConns, from := postgresMaxConns(cfg)
		st, err := postgres.Open(ctx, postgres.Config{
			DSN:               cfg.Postgres,
			Limits:            cfg.Server.Limits,
			DefaultQuota:      cfg.DefaultQuota,
			MaxConns:          int32(maxConns),
			StatementTimeout:  cfg.PostgresStatementTimeout,
			Leases:            cfg.PostgresLeases,
			SecondReadRound:   cfg.PostgresSecondReadRound,
			ProjectQueueShare: cfg.ProjectQueueShare,
			ObserveBatch:      m.ObserveBatch,
			Logger:            log.Named("store"),
		})
		if err != nil {
			// The DSN may hold a password: name the backend, not the DSN.
			// A pool size the operator chose is named with where it came
			// from, for the backend's errors speak of its own Config.
			if from != "" {
				return nil, "", fmt.Errorf("open PostgreSQL store with a pool of %d connections (%s): %w", maxConns, from, err)
			}
			return nil, "", fmt.Errorf("open PostgreSQL store: %w", err)
		}
		return st, "postgres", nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(cfg.DataDir, pebbleDir)
	pcfg := pebble.Config{
		Path:              path,
		Limits:            cfg.Server.Limits,
		DefaultQuota:      cfg.DefaultQuota,
		ProjectQueueShare: cfg.ProjectQueueShare,
		DiskReserve:       cfg.DiskReserve,
		ObserveBatch:      m.ObserveBatch,
		Logger:            log.Named("store"),
	}
	if _, err := pebble.MigrateBolt(ctx, filepath.Join(cfg.DataDir, boltFile), pcfg); err != nil {
		return nil, "", fmt.Errorf("open embedded store: %w", err)
	}
	st, err := pebble.Open(ctx, pcfg)
	if err != nil {
		return nil, "", fmt.Errorf("open embedded store: %w", err)
	}
	return st, "embedded (pebble) " + path, nil
}

// postgresMaxConns is the pool size to ask the backend for, and the setting
// it comes from: --postgres-max-conns when given, else the DSN's
// pool_max_conns, else 0 and "" (the backend's default). A DSN that does
// not parse, or a pool_max_conns that is not a number, is left to the
// backend to report.
func postgresMaxConns(cfg Config) (n int, from string) {
	if cfg.PostgresMaxConns > 0 {
		return cfg.PostgresMaxConns, "--postgres-max-conns"
	}
	pc, err := pgx.ParseConfig(cfg.Postgres)
	if err != nil {
		return 0, ""
	}
	// pgx keeps parameters it does not know, pool_max_conns among them, as
	// run-time parameters; pgxpool reads it from there too.
	n64, err := strconv.ParseInt(pc.RuntimeParams["pool_max_conns"], 10, 32)
	if err != nil || n64 <= 0 {
		return 0, ""
	}
	return int(n64), "pool_max_conns of the DSN"
}

// defaultQuotaInForce returns the quota of projects without an override.
// The Store interface has no call for it, so it reads the quota in force
// for the system project, which has no key-value access and so no reason
// to carry an override.
func defaultQuotaInForce(ctx context.Context, st store.Store, cfg Config) (int64, error) {
	if cfg.DefaultQuota > 0 {
		return cfg.DefaultQuota, nil // Open stored it
	}
	u, err := st.Usage(ctx, cfg.Server.SystemProject)
	if err != nil {
		return 0, fmt.Errorf("read the default quota: %w", err)
	}
	return u.Quota, nil
}
