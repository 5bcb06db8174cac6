// Package storetest is the conformance suite every store.Store backend must
// pass: it checks the semantics documented in package store, through the
// Store interface alone, so that the daemon behaves the same on every backend.
package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// Options configure a store opened for one test.
type Options struct {
	Limits       store.Limits // size limits; zero fields take the defaults
	DefaultQuota int64        // quota of projects without an override; 0 means store.DefaultQuota
	// Now is the clock the store must use for TTLs. A backend that cannot take
	// an injected clock ignores it and its Harness sets RealClock.
	Now func() time.Time
}

// Harness describes a backend to the suite.
type Harness struct {
	// Open returns a new, empty store; the harness closes and removes it when
	// the test ends (t.Cleanup). The suite may have closed it already, so the
	// cleanup must accept store.ErrClosed from Close.
	Open func(t *testing.T, opts Options) store.Store
	// RealClock is set when the backend ignores Options.Now: the suite then
	// waits out TTLs in real time instead of advancing the fake clock.
	RealClock bool
	// Reopen, if set, closes s (a store this harness opened) and opens its
	// data again with the same options, as a restarted daemon would. Tests
	// of what survives a restart are skipped without it.
	Reopen func(t *testing.T, s store.Store) store.Store
}

// Run runs the conformance suite against the backend h opens. Every subtest
// opens its own store. With h.RealClock, tests that wait for TTLs sleep
// about a second each, and run in parallel (so h.Open must allow that).
func Run(t *testing.T, h Harness) {
	groups := []struct {
		name string
		run  func(t *testing.T, h Harness)
	}{
		{"Basics", testBasics},
		{"Many", testMany},
		{"Validation", testValidation},
		{"Isolation", testIsolation},
		{"TTL", testTTL},
		{"Sweep", testSweep},
		{"Quota", testQuota},
		{"Incr", testIncr},
		{"Versions", testVersions},
		{"Conditions", testConditions},
		{"Expire", testExpire},
		{"List", testList},
		{"UsageModel", testUsageModel},
		{"Admin", testAdmin},
		{"Concurrency", testConcurrency},
		{"Context", testContext},
		{"Close", testClose},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			if h.RealClock {
				// Let the groups' TTL waits overlap.
				t.Parallel()
			}
			g.run(t, h)
		})
	}
}

// Clock is a fake clock that tests move by hand.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock set to a fixed instant.
func NewClock() *Clock {
	return &Clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
