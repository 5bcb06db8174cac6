package pebble

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// sweepLoop is the sweeper goroutine: every interval it sweeps batch after
// batch until a batch comes back short, so a backlog is cleared in one round
// while each batch stays a short write. It ends when ctx is cancelled (by
// Close).
func (s *Store) sweepLoop(ctx context.Context, interval time.Duration) {
	defer close(s.sweeperDone)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		for ctx.Err() == nil {
			n, err := s.Sweep(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.cfg.Logger.Warn("pebble: sweep failed", zap.Error(err))
				}
				break
			}
			if n < int64(s.cfg.SweepBatch) {
				break
			}
		}
	}
}
