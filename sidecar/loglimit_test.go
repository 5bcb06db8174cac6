package sidecar

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestLogLimiter checks that a flood of one message is cut to the burst,
// that the next line after a pause says how many were dropped, and that
// another message is not held back by the first.
func TestLogLimiter(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	now := time.Unix(1000, 0)
	l := newLogLimiter(zap.New(core), func() time.Time { return now })
	for range 1000 {
		l.Info("refusing connection")
	}
	if n := logs.Len(); n != logBurst {
		t.Fatalf("1000 lines at once wrote %d, want %d", n, logBurst)
	}
	l.Info("revoking connection")
	if n := logs.FilterMessage("revoking connection").Len(); n != 1 {
		t.Fatalf("another message wrote %d lines, want 1", n)
	}
	now = now.Add(logInterval)
	l.Info("refusing connection")
	last := logs.All()[logs.Len()-1]
	if got := last.ContextMap()["dropped_similar"]; got != int64(1000-logBurst) {
		t.Fatalf("dropped_similar = %v, want %d", got, 1000-logBurst)
	}
}
