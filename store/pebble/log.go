package pebble

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"
)

// pebbleLogger routes Pebble's log lines to zap. Its info lines (a table
// flushed, a compaction done) are routine and go to debug, so the daemon is
// quiet at info; errors stay errors. Fatalf is Pebble's "cannot go on" (a
// failed log write, a corrupt manifest): it logs and exits, as Pebble
// expects of it.
type pebbleLogger struct{ log *zap.SugaredLogger }

func (l pebbleLogger) Infof(format string, args ...any)  { l.log.Debugf(format, args...) }
func (l pebbleLogger) Errorf(format string, args ...any) { l.log.Errorf(format, args...) }
func (l pebbleLogger) Fatalf(format string, args ...any) { l.log.Fatalf(format, args...) }

// eventListener reports the Pebble events an operator should see: errors of
// background work (a flush or compaction that failed, for example for want
// of space) and write stalls, which hold every write.
func eventListener(log *zap.Logger) *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			log.Warn("background work failed", zap.Error(err))
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			log.Warn("writes stall until a flush or compaction catches up", zap.String("reason", fmt.Sprint(info.Reason)))
		},
		WriteStallEnd: func() {
			log.Info("writes go on after a stall")
		},
	}
}
