package identity

import (
	"fmt"

	"github.com/go-logr/logr"
	"go.uber.org/zap"
	"k8s.io/klog/v2"
)

// KlogTo sends klog's messages — client-go logs through klog — to log,
// instead of text lines on stderr among the daemon's JSON lines. klog has
// one logger for the whole process, which may not change while client-go
// runs: call KlogTo once at start, before NewK8s.
func KlogTo(log *zap.Logger) {
	klog.SetLogger(logr.New(zapSink{log}))
}

// zapSink is a logr.LogSink writing to a zap logger.
type zapSink struct{ log *zap.Logger }

var _ logr.LogSink = zapSink{}

func (zapSink) Init(logr.RuntimeInfo) {}

// Enabled keeps klog's level 0 (its info, warnings and errors); the higher
// levels are client-go's debugging chatter.
func (zapSink) Enabled(level int) bool { return level == 0 }

func (s zapSink) Info(_ int, msg string, kv ...any) { s.log.Info(msg, zapFields(kv)...) }

func (s zapSink) Error(err error, msg string, kv ...any) {
	s.log.Error(msg, append(zapFields(kv), zap.Error(err))...)
}

func (s zapSink) WithValues(kv ...any) logr.LogSink { return zapSink{s.log.With(zapFields(kv)...)} }

func (s zapSink) WithName(name string) logr.LogSink { return zapSink{s.log.Named(name)} }

func zapFields(kv []any) []zap.Field {
	fields := make([]zap.Field, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		fields = append(fields, zap.Any(fmt.Sprint(kv[i]), kv[i+1]))
	}
	return fields
}
