package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// sweepProjects bounds the candidate projects one Sweep looks at. Each is
// swept in a short transaction of its own; a sweep that reaches the bound
// leaves the rest to the next round.
const sweepProjects = 100

// maxSweepsPerTick bounds the back-to-back sweeps of one sweeper tick, so
// that a backlog of expired entries is worked off in bursts of at most this
// many batches instead of one long stretch of deletes.
const maxSweepsPerTick = 10

// Sweep deletes one bounded batch (Config.SweepBatch) of expired entries,
// frees what they used and returns how many it deleted. Several daemons may
// sweep at once: each skips the projects another transaction holds, so they
// share the work instead of waiting for each other.
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	n, err := s.sweep(ctx)
	if err != nil {
		return n, dbError(err)
	}
	return n, nil
}

func (s *Store) sweep(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	now := s.nowArg()
	rows, err := s.pool.Query(ctx, sqlSweepCandidates, now, sweepProjects)
	if err != nil {
		return 0, err
	}
	projects, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, err
	}
	var total int64
	for _, p := range projects {
		left := int64(s.cfg.SweepBatch) - total
		if left <= 0 {
			break
		}
		n, err := s.sweepProject(ctx, p, left, now)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// sweepProject deletes up to limit expired entries of one project in a
// transaction that holds the project's usage row, so the usage it frees is
// exact. A project whose row is held elsewhere is skipped.
func (s *Store) sweepProject(ctx context.Context, project string, limit int64, now any) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, sqlSweepLock, project).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		// A key deleted here and written again under a lease granted
		// before would take a version from below the one it had: the
		// project's leases end first (lease.go).
		if _, err := tx.Exec(ctx, sqlFoldLeases, project); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, sqlSweepDelete, project, now, limit).Scan(&n); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, sqlResetNextExpiry, project)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// sweepLoop is the background sweeper. Every Config.SweepInterval it
// sweeps, and sweeps again at once while a sweep comes back full (up to
// maxSweepsPerTick). It stops when ctx ends (at Close).
func (s *Store) sweepLoop(ctx context.Context) {
	defer close(s.sweeperDone)
	tick := time.NewTicker(s.cfg.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for range maxSweepsPerTick {
			n, err := s.sweep(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("sweep expired entries", zap.Error(err))
				}
				break
			}
			if n < int64(s.cfg.SweepBatch) {
				break
			}
		}
	}
}
