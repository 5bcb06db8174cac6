package sidecar

import (
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Rate of the log lines a peer can cause (refusals, bad frames, slow
// readers, revocations): a burst of logBurst lines, then one each
// logInterval/logBurst. 20 lines a second of one kind is enough to see
// what happens and cannot fill a disk.
const (
	logBurst    = 20
	logInterval = time.Second
)

// logLimiter writes log lines that peers can cause at a bounded rate, per
// message: a token bucket of logBurst lines refilled over logInterval.
// Lines over the rate are counted, and the next line written says how many
// were dropped since the last one.
type logLimiter struct {
	log *zap.Logger
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*logBucket
}

type logBucket struct {
	tokens  float64
	last    time.Time
	dropped int
}

func newLogLimiter(log *zap.Logger, now func() time.Time) *logLimiter {
	return &logLimiter{log: log, now: now, buckets: make(map[string]*logBucket)}
}

// Info logs msg at info level unless lines of msg are over the rate.
func (l *logLimiter) Info(msg string, fields ...zap.Field) {
	l.write(zapcore.InfoLevel, msg, func() []zap.Field { return fields })
}

// InfoFunc is Info with fields built only when the line is written, for
// callers whose fields cost more than the line is worth under a flood.
func (l *logLimiter) InfoFunc(msg string, fields func() []zap.Field) {
	l.write(zapcore.InfoLevel, msg, fields)
}

// Error logs msg at error level unless lines of msg are over the rate.
func (l *logLimiter) Error(msg string, fields ...zap.Field) {
	l.write(zapcore.ErrorLevel, msg, func() []zap.Field { return fields })
}

func (l *logLimiter) write(lvl zapcore.Level, msg string, build func() []zap.Field) {
	if !l.log.Core().Enabled(lvl) {
		return
	}
	dropped, ok := l.take(msg)
	if !ok {
		return
	}
	fields := build()
	if dropped > 0 {
		fields = append(fields, zap.Int("dropped_similar", dropped))
	}
	if ce := l.log.Check(lvl, msg); ce != nil {
		ce.Write(fields...)
	}
}

// take takes a token for msg; it returns false when there is none, and
// otherwise how many lines of msg were dropped since the last written.
func (l *logLimiter) take(msg string) (dropped int, ok bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[msg]
	if b == nil {
		// The messages are the daemon's own constants, so this map holds
		// a handful of entries.
		b = &logBucket{tokens: logBurst, last: now}
		l.buckets[msg] = b
	}
	b.tokens = min(logBurst, b.tokens+now.Sub(b.last).Seconds()/logInterval.Seconds()*logBurst)
	b.last = now
	if b.tokens < 1 {
		b.dropped++
		return 0, false
	}
	b.tokens--
	dropped, b.dropped = b.dropped, 0
	return dropped, true
}
