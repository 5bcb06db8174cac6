package storetest

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

func testConcurrency(t *testing.T, h Harness) {
	t.Run("QuotaNeverExceeded", func(t *testing.T) {
		const (
			contendedQuota = 2000
			writers        = 16
			opsPerWriter   = 100
		)
		f := open(t, h, Options{DefaultQuota: contendedQuota})
		ctx, stop := context.WithCancel(f.ctx)
		defer stop()

		// A watcher samples usage while the writers race.
		var peak atomic.Int64
		watcherDone := make(chan error, 1)
		go func() {
			for ctx.Err() == nil {
				u, err := f.s.Usage(ctx, "p")
				if err != nil && ctx.Err() == nil {
					watcherDone <- err
					return
				}
				if u.Bytes > peak.Load() {
					peak.Store(u.Bytes)
				}
			}
			watcherDone <- nil
		}()

		var wg sync.WaitGroup
		var refusals atomic.Int64
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				for range opsPerWriter {
					k := "k" + strconv.Itoa(rng.IntN(40))
					var err error
					switch rng.IntN(4) {
					case 0:
						_, err = f.s.Delete(f.ctx, "p", k)
					case 1:
						err = f.s.SetMany(f.ctx, "p", []store.Item{
							item(k, value(rng.IntN(150)), 0),
							item("m"+strconv.Itoa(rng.IntN(10)), value(rng.IntN(150)), 0),
						})
					default:
						err = f.s.Set(f.ctx, "p", k, []byte(value(rng.IntN(200))), 0)
					}
					if errors.Is(err, store.ErrQuotaExceeded) {
						refusals.Add(1)
					} else if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		stop()
		if err := <-watcherDone; err != nil {
			t.Fatalf("Usage during the run = %v", err)
		}
		close(errs)
		for err := range errs {
			t.Fatalf("a write failed with %v; only quota refusals are expected", err)
		}
		if p := peak.Load(); p > contendedQuota {
			t.Fatalf("Usage.Bytes reached %d under contention, the quota is %d", p, contendedQuota)
		}

		// Usage ends equal to what is actually stored.
		u := f.usage("p")
		page := f.list("p", store.ListOptions{Values: true})
		var sum int64
		for _, e := range page.Entries {
			sum += size(e.Key, string(e.Value))
		}
		if u.Bytes != sum || u.Entries != int64(len(page.Entries)) || u.Bytes > contendedQuota {
			t.Fatalf("Usage = %+v after the run, the stored entries add up to %d bytes, %d entries (quota %d)",
				u, sum, len(page.Entries), contendedQuota)
		}
		t.Logf("%d writes refused for quota; final usage %d of %d", refusals.Load(), u.Bytes, contendedQuota)
	})

	t.Run("IncrIsAtomic", func(t *testing.T) {
		const goroutines, each = 8, 50
		f := open(t, h, Options{})
		seen := make([]atomic.Bool, goroutines*each+1)
		var wg sync.WaitGroup
		var failures atomic.Int64
		for range goroutines {
			wg.Go(func() {
				for range each {
					n, err := f.s.Incr(f.ctx, "p", "hits", 1, time.Hour)
					if err != nil || n < 1 || n > goroutines*each || seen[n].Swap(true) {
						failures.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if failures.Load() > 0 {
			t.Fatalf("%d concurrent Incr calls failed or returned a value another call also got", failures.Load())
		}
		f.wantValue("p", "hits", strconv.Itoa(goroutines*each))
	})

	t.Run("SetManyIsAtomicToReaders", func(t *testing.T) {
		f := open(t, h, Options{})
		const rounds = 150
		done := make(chan struct{})
		var torn atomic.Value // a failure of the writer
		go func() {
			defer close(done)
			for i := range rounds {
				v := strconv.Itoa(i)
				if err := f.s.SetMany(f.ctx, "p", []store.Item{item("a", v, 0), item("b", v, 0), item("c", v, 0)}); err != nil {
					torn.Store("SetMany failed: " + err.Error())
					return
				}
			}
		}()
		var seenTorn [][]byte
		for reading := true; reading && seenTorn == nil; {
			select {
			case <-done:
				reading = false
			default:
			}
			got, err := f.s.GetMany(f.ctx, "p", []string{"a", "b", "c"})
			if err != nil {
				t.Fatal(err)
			}
			if string(got[0]) != string(got[1]) || string(got[1]) != string(got[2]) {
				seenTorn = got
			}
		}
		<-done
		if seenTorn != nil {
			t.Fatalf("GetMany saw a, b, c = %q while SetMany wrote them together", seenTorn)
		}
		if msg := torn.Load(); msg != nil {
			t.Fatal(msg)
		}
		f.wantValue("p", "c", strconv.Itoa(rounds-1))
	})

	t.Run("DeleteManyIsAtomicToReaders", func(t *testing.T) {
		// PROTOCOL.md promises deleteMany is atomic: a reader sees all of
		// a, b, c or none of them, never some deleted and others not.
		f := open(t, h, Options{})
		const rounds = 100
		done := make(chan struct{})
		var failed atomic.Value
		go func() {
			defer close(done)
			keys := []string{"a", "b", "c"}
			for range rounds {
				if err := f.s.SetMany(f.ctx, "p", []store.Item{item("a", "1", 0), item("b", "1", 0), item("c", "1", 0)}); err != nil {
					failed.Store("SetMany failed: " + err.Error())
					return
				}
				if _, err := f.s.DeleteMany(f.ctx, "p", keys); err != nil {
					failed.Store("DeleteMany failed: " + err.Error())
					return
				}
			}
		}()
		var torn []bool
		for reading := true; reading && torn == nil; {
			select {
			case <-done:
				reading = false
			default:
			}
			got, err := f.s.HasMany(f.ctx, "p", []string{"a", "b", "c"})
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != got[1] || got[1] != got[2] {
				torn = got
			}
		}
		<-done
		if torn != nil {
			t.Fatalf("HasMany saw a, b, c = %v while DeleteMany removed them together", torn)
		}
		if msg := failed.Load(); msg != nil {
			t.Fatal(msg)
		}
	})

	t.Run("AcknowledgedWritesAreSeen", func(t *testing.T) {
		f := open(t, h, Options{})
		const writers = 8
		acked := make(chan string, writers*20)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range 20 {
					k := strconv.Itoa(w) + "/" + strconv.Itoa(i)
					if err := f.s.Set(f.ctx, "p", k, []byte(k), 0); err != nil {
						t.Error(err)
						return
					}
					acked <- k
				}
			})
		}
		go func() { wg.Wait(); close(acked) }()
		// Another goroutine reads each key as soon as its Set returned.
		for k := range acked {
			v, found, err := f.s.Get(f.ctx, "p", k)
			if err != nil || !found || string(v) != k {
				t.Fatalf("Get(%q) right after its Set returned = (%q, %v, %v)", k, v, found, err)
			}
		}
	})
}

// everyCall returns every Store method as a call on project "p": writes
// of key "k" (deletes of deleteKey), and "n" for Incr.
func everyCall(ctx context.Context, s store.Store, deleteKey string) map[string]func() error {
	calls := map[string]func() error{
		"Get":             func() error { _, _, err := s.Get(ctx, "p", "k"); return err },
		"Has":             func() error { _, err := s.Has(ctx, "p", "k"); return err },
		"GetMany":         func() error { _, err := s.GetMany(ctx, "p", []string{"k"}); return err },
		"HasMany":         func() error { _, err := s.HasMany(ctx, "p", []string{"k"}); return err },
		"List":            func() error { _, err := s.List(ctx, "p", store.ListOptions{}); return err },
		"Usage":           func() error { _, err := s.Usage(ctx, "p"); return err },
		"Set":             func() error { return s.Set(ctx, "p", "k", []byte("v"), 0) },
		"SetMany":         func() error { return s.SetMany(ctx, "p", []store.Item{item("k", "v", 0)}) },
		"Incr":            func() error { _, err := s.Incr(ctx, "p", "n", 1, 0); return err },
		"Delete":          func() error { _, err := s.Delete(ctx, "p", deleteKey); return err },
		"DeleteMany":      func() error { _, err := s.DeleteMany(ctx, "p", []string{deleteKey}); return err },
		"Clear":           func() error { _, err := s.Clear(ctx, "p"); return err },
		"SetQuota":        func() error { return s.SetQuota(ctx, "p", 5) },
		"SetDefaultQuota": func() error { return s.SetDefaultQuota(ctx, 5) },
		"Sweep":           func() error { _, err := s.Sweep(ctx); return err },
		"Ping":            func() error { return s.Ping(ctx) },
		"GetVersioned":    func() error { _, _, err := s.GetVersioned(ctx, "p", "k"); return err },
		"GetManyVersioned": func() error {
			_, err := s.GetManyVersioned(ctx, "p", []string{"k"})
			return err
		},
		"SetIf": func() error { _, err := s.SetIf(ctx, "p", "k", []byte("v"), 0, store.Cond{}); return err },
		"SetManyIf": func() error {
			_, err := s.SetManyIf(ctx, "p", []store.Item{item("k", "v", 0)})
			return err
		},
		"DeleteIf": func() error { _, err := s.DeleteIf(ctx, "p", deleteKey, store.Cond{}); return err },
		"TTL":      func() error { _, _, err := s.TTL(ctx, "p", "k"); return err },
		"Expire":   func() error { _, _, err := s.Expire(ctx, "p", "k", 0); return err },
	}
	maps.Copy(calls, adminCalls(ctx, s))
	return calls
}

func testContext(t *testing.T, h Harness) {
	f := open(t, h, Options{})
	ctx, cancel := context.WithCancel(f.ctx)
	cancel()
	for name, call := range everyCall(ctx, f.s, "kept") {
		if name == "Sweep" || name == "Ping" {
			continue // not writes, and a backend may answer them from memory
		}
		if name == "Delete" || name == "DeleteMany" || name == "Clear" {
			f.set("p", "kept", "v", 0)
		}
		wantErr(t, name+" with a cancelled context", call(), context.Canceled)
	}
	// None of the cancelled writes happened.
	f.wantMissing("p", "k")
	f.wantMissing("p", "n")
	f.wantValue("p", "kept", "v")
	if u := f.usage("p"); u.Quota == 5 || u.Entries != 1 {
		t.Fatalf("Usage = %+v after cancelled writes, want only the entry kept", u)
	}
}

func testClose(t *testing.T, h Harness) {
	f := open(t, h, Options{})
	f.set("p", "k", "v", 0)
	if err := f.s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	for name, call := range everyCall(f.ctx, f.s, "k") {
		wantErr(t, name+" after Close", call(), store.ErrClosed)
	}
	if err := f.s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		t.Fatalf("second Close = %v, want nil or ErrClosed", err)
	}
}
