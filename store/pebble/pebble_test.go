package pebble_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/pebble"
	"github.com/kvsidecar/kvsidecar/store/storetest"
)

// open opens a store on cfg (Path defaulting to a new file in t.TempDir())
// and closes it when the test ends.
func open(t testing.TB, cfg pebble.Config) *pebble.Store {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "kv")
	}
	s, err := pebble.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// harness opens each conformance test's store in its own directory.
func harness(sweepInterval time.Duration, realClock bool) storetest.Harness {
	return harnessDepth(sweepInterval, realClock, 0)
}

// harnessDepth is harness with the stores' Config.PipelineDepth.
func harnessDepth(sweepInterval time.Duration, realClock bool, depth int) storetest.Harness {
	var configs sync.Map // *pebble.Store → the pebble.Config it was opened with
	return storetest.Harness{
		RealClock: realClock,
		Open: func(t *testing.T, opts storetest.Options) store.Store {
			cfg := pebble.Config{
				Path:          filepath.Join(t.TempDir(), "kv"),
				Limits:        opts.Limits,
				DefaultQuota:  opts.DefaultQuota,
				Now:           opts.Now,
				SweepInterval: sweepInterval,
				PipelineDepth: depth,
			}
			if realClock {
				cfg.Now = nil
			}
			s := open(t, cfg)
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
			s := open(t, cfg.(pebble.Config))
			configs.Store(s, cfg)
			return s
		},
	}
}

func TestConformance(t *testing.T) {
	// Sweeps happen only when the suite calls Sweep.
	storetest.Run(t, harness(-1, false))
}

// TestConformanceThroughDo runs the suite again with every single-key
// operation going through Do (store.Async), and then Do's own tests.
func TestConformanceThroughDo(t *testing.T) {
	storetest.RunAsync(t, harness(-1, false))
}

// TestConformancePipelined runs the suite, directly and through Do, with
// the committer building the next batch while one waits for its log sync.
func TestConformancePipelined(t *testing.T) {
	t.Run("direct", func(t *testing.T) { storetest.Run(t, harnessDepth(-1, false, 2)) })
	t.Run("Do", func(t *testing.T) { storetest.RunAsync(t, harnessDepth(-1, false, 2)) })
}

// TestConformanceShortScans runs the suite with scans cut every two keys,
// so that searches and usage analyses cross many transaction boundaries.
func TestConformanceShortScans(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T, opts storetest.Options) store.Store {
			return open(t, pebble.Config{
				Limits:        opts.Limits,
				DefaultQuota:  opts.DefaultQuota,
				Now:           opts.Now,
				SweepInterval: -1,
				SearchScan:    2,
			})
		},
	})
}

func TestConformanceWithSweeper(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole suite again")
	}
	// A sweeper running every millisecond races every test: it must never
	// change what callers see.
	storetest.Run(t, harness(time.Millisecond, false))
}

func TestConformanceRealClock(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out real TTLs")
	}
	// The suite's real-clock path, as a backend that cannot take an
	// injected clock would run it.
	storetest.Run(t, harness(0, true))
}

func TestReopenKeepsDataAndUsage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv")
	clock := storetest.NewClock()
	ctx := context.Background()
	cfg := pebble.Config{Path: path, Now: clock.Now, SweepInterval: -1}

	s := open(t, cfg)
	if err := s.Set(ctx, "p", "k", []byte("value"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, "p", "t", []byte("expiring"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Incr(ctx, "q", "n", 41, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetQuota(ctx, "p", 5000); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDefaultQuota(ctx, 7000); err != nil {
		t.Fatal(err)
	}
	before, err := s.Usage(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, cfg)
	if v, found, err := s.Get(ctx, "p", "k"); err != nil || !found || string(v) != "value" {
		t.Fatalf("Get after reopen = (%q, %v, %v), want value", v, found, err)
	}
	if n, err := s.Incr(ctx, "q", "n", 1, 0); err != nil || n != 42 {
		t.Fatalf("Incr after reopen = (%d, %v), want 42", n, err)
	}
	after, err := s.Usage(ctx, "p")
	if err != nil || after != before {
		t.Fatalf("Usage after reopen = (%+v, %v), want %+v", after, err, before)
	}
	if u, _ := s.Usage(ctx, "other"); u.Quota != 7000 {
		t.Fatalf("default quota after reopen = %d, want 7000 (set by SetDefaultQuota)", u.Quota)
	}
	// The expiry is stored as an absolute time: it still applies.
	clock.Advance(time.Minute)
	if found, _ := s.Has(ctx, "p", "t"); found {
		t.Fatal("an entry past its expiry is visible after reopen")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A default quota in the Config replaces the stored one.
	cfg.DefaultQuota = 9000
	s = open(t, cfg)
	if u, _ := s.Usage(ctx, "other"); u.Quota != 9000 {
		t.Fatalf("default quota = %d, want 9000 from the Config", u.Quota)
	}
	if u, _ := s.Usage(ctx, "p"); u.Quota != 5000 {
		t.Fatalf("override after reopen = %d, want 5000", u.Quota)
	}
}

func TestLockedDirectoryFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kv")
	open(t, pebble.Config{Path: path})
	_, err := pebble.Open(context.Background(), pebble.Config{Path: path, LockTimeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open of a directory in use = %v, want an error saying it is locked", err)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  pebble.Config
		want string
	}{
		{"no path", pebble.Config{}, "Path"},
		{"negative default quota", pebble.Config{Path: filepath.Join(dir, "b"), DefaultQuota: -1}, "DefaultQuota"},
		{"pipeline too deep", pebble.Config{Path: filepath.Join(dir, "c"), PipelineDepth: 5}, "PipelineDepth"},
		{"negative pipeline depth", pebble.Config{Path: filepath.Join(dir, "d"), PipelineDepth: -1}, "PipelineDepth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := pebble.Open(context.Background(), tc.cfg)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

func TestSweepIsBounded(t *testing.T) {
	clock := storetest.NewClock()
	ctx := context.Background()
	s := open(t, pebble.Config{Now: clock.Now, SweepInterval: -1, SweepBatch: 10})
	for i := range 25 {
		project := []string{"p", "q"}[i%2]
		if err := s.Set(ctx, project, "k"+string(rune('a'+i)), []byte("v"), time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(2 * time.Second)
	var got []int64
	for range 4 {
		n, err := s.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if want := []int64{10, 10, 5, 0}; !slices.Equal(got, want) {
		t.Fatalf("successive Sweeps removed %v, want %v", got, want)
	}
}
