package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// getV returns the value and version of key ("" and 0 when missing).
func (f *fixture) getV(project, key string) (string, uint64, bool) {
	f.t.Helper()
	v, found, err := f.s.GetVersioned(f.ctx, project, key)
	if err != nil {
		f.t.Fatalf("GetVersioned(%q, %q) = %v", project, short(key), err)
	}
	if found != (v.Value != nil) || found != (v.Version != 0) {
		f.t.Fatalf("GetVersioned(%q, %q) = (%q, version %d, found %v): a found entry has a value and a version, a missing one neither",
			project, short(key), v.Value, v.Version, found)
	}
	return string(v.Value), v.Version, found
}

// setV sets key unconditionally and returns the new version.
func (f *fixture) setV(project, key, value string, ttl time.Duration) uint64 {
	f.t.Helper()
	v, err := f.s.SetIf(f.ctx, project, key, []byte(value), ttl, store.Cond{})
	if err != nil {
		f.t.Fatalf("SetIf(%q, %q) = %v, want success", project, short(key), err)
	}
	if v == 0 {
		f.t.Fatalf("SetIf(%q, %q) returned version 0; versions are positive", project, short(key))
	}
	return v
}

// wantVersion fails unless key is live with version want.
func (f *fixture) wantVersion(project, key string, want uint64) {
	f.t.Helper()
	if _, got, found := f.getV(project, key); !found || got != want {
		f.t.Fatalf("GetVersioned(%q, %q) = version %d (found %v), want %d", project, short(key), got, found, want)
	}
}

// wantGreater fails unless next > prev.
func wantGreater(t *testing.T, what string, next, prev uint64) {
	t.Helper()
	if next <= prev {
		t.Fatalf("%s: version %d, want more than the earlier %d", what, next, prev)
	}
}

// wantConflict fails unless err is a *ConflictError listing exactly want.
func wantConflict(t *testing.T, what string, err error, want ...store.Conflict) {
	t.Helper()
	wantErr(t, what, err, store.ErrConflict)
	var ce *store.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("%s = %v (%T), want a *store.ConflictError", what, err, err)
	}
	if !slices.Equal(ce.Conflicts, want) {
		t.Fatalf("%s: conflicts %+v, want %+v", what, ce.Conflicts, want)
	}
	for _, c := range want {
		if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("%q", c.Key)) {
			t.Fatalf("%s = %q, want a message naming key %q", what, msg, c.Key)
		}
	}
}

func testVersions(t *testing.T, h Harness) {
	t.Run("EveryWriteGrowsTheVersion", func(t *testing.T) {
		f := open(t, h, Options{})
		v1 := f.setV("p", "k", "a", 0)
		f.wantVersion("p", "k", v1)
		v2 := f.setV("p", "k", "a", 0)
		wantGreater(t, "set of the same value", v2, v1)
		f.wantVersion("p", "k", v2)

		vs, err := f.s.SetManyIf(f.ctx, "p", []store.Item{item("k", "b", 0), item("other", "c", 0)})
		if err != nil {
			t.Fatalf("SetManyIf = %v", err)
		}
		if len(vs) != 2 {
			t.Fatalf("SetManyIf returned %d versions for 2 items", len(vs))
		}
		wantGreater(t, "setMany", vs[0], v2)
		f.wantVersion("p", "k", vs[0])
		f.wantVersion("p", "other", vs[1])

		f.incr("p", "n", 1, 0)
		_, n1, _ := f.getV("p", "n")
		f.incr("p", "n", 1, 0)
		_, n2, _ := f.getV("p", "n")
		wantGreater(t, "incr", n2, n1)

		v3, existed, err := f.s.Expire(f.ctx, "p", "k", time.Hour)
		if err != nil || !existed {
			t.Fatalf("Expire = (%d, %v, %v), want the key to exist", v3, existed, err)
		}
		wantGreater(t, "expire", v3, vs[0])
		f.wantVersion("p", "k", v3)
	})

	t.Run("ReadsCarryVersions", func(t *testing.T) {
		f := open(t, h, Options{})
		va := f.setV("p", "a", "1", 0)
		vb := f.setV("p", "b", "2", 0)
		got, err := f.s.GetManyVersioned(f.ctx, "p", []string{"b", "missing", "a"})
		if err != nil {
			t.Fatalf("GetManyVersioned = %v", err)
		}
		want := []store.Versioned{{Value: []byte("2"), Version: vb}, {}, {Value: []byte("1"), Version: va}}
		for i := range want {
			if string(got[i].Value) != string(want[i].Value) || (got[i].Value == nil) != (want[i].Value == nil) || got[i].Version != want[i].Version {
				t.Fatalf("GetManyVersioned[%d] = {%q %d}, want {%q %d}", i, got[i].Value, got[i].Version, want[i].Value, want[i].Version)
			}
		}
		page := f.list("p", store.ListOptions{})
		if len(page.Entries) != 2 || page.Entries[0].Version != va || page.Entries[1].Version != vb {
			t.Fatalf("List = %+v, want a (version %d) and b (version %d)", page.Entries, va, vb)
		}
	})

	t.Run("GrowsAcrossDeleteAndRecreate", func(t *testing.T) {
		f := open(t, h, Options{})
		f.parallelIfReal()
		prev := f.setV("p", "k", "a", 0)
		steps := []struct {
			name   string
			remove func()
		}{
			{"delete", func() { f.del("p", "k") }},
			{"deleteMany", func() {
				if _, err := f.s.DeleteMany(f.ctx, "p", []string{"k"}); err != nil {
					t.Fatal(err)
				}
			}},
			{"clear", func() {
				if _, err := f.s.Clear(f.ctx, "p"); err != nil {
					t.Fatal(err)
				}
			}},
			{"expiry", func() {
				f.set("p", "k", "a", f.ttl)
				f.expire()
			}},
			{"expiry and sweep", func() {
				f.set("p", "k", "a", f.ttl)
				f.expire()
				f.sweepAll()
			}},
		}
		for _, st := range steps {
			st.remove()
			f.wantMissing("p", "k")
			next := f.setV("p", "k", "a", 0)
			wantGreater(t, "re-create after "+st.name, next, prev)
			prev = next
		}
		// Through incr too: a counter re-created after delete.
		f.del("p", "k")
		f.incr("p", "k", 1, 0)
		_, next, _ := f.getV("p", "k")
		wantGreater(t, "incr re-create", next, prev)
	})

	t.Run("GrowsAcrossRestarts", func(t *testing.T) {
		if h.Reopen == nil {
			t.Skip("the harness cannot reopen a store")
		}
		f := open(t, h, Options{})
		v1 := f.setV("p", "k", "a", 0)
		f.setV("p", "gone", "x", 0)
		f.del("p", "gone")
		f.s = h.Reopen(t, f.s)
		f.wantVersion("p", "k", v1)
		v2 := f.setV("p", "k", "b", 0)
		wantGreater(t, "set after a restart", v2, v1)
		v3 := f.setV("p", "gone", "y", 0)
		wantGreater(t, "re-create after delete and restart", v3, v1)
		f.s = h.Reopen(t, f.s)
		if v4 := f.setV("p", "gone", "z", 0); v4 <= v3 {
			t.Fatalf("set after a second restart: version %d, want more than %d", v4, v3)
		}
	})

	t.Run("ProjectsAreIndependent", func(t *testing.T) {
		f := open(t, h, Options{})
		vp := f.setV("p", "k", "a", 0)
		f.setV("q", "k", "b", 0)
		f.wantVersion("p", "k", vp)
		// A condition naming p's version does not apply to q's entry unless
		// they happen to match; it must never touch p.
		if _, err := f.s.SetIf(f.ctx, "q", "k", []byte("c"), 0, store.IfVersion(vp+1000)); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("SetIf on q with a version q never had = %v, want a conflict", err)
		}
		f.wantValue("p", "k", "a")
	})

	t.Run("ConcurrentCompareAndSet", func(t *testing.T) {
		// Read-modify-write by version from many goroutines: every
		// increment lands exactly once, retried on conflict.
		f := open(t, h, Options{})
		const workers, each = 16, 10
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					for attempt := 0; ; attempt++ {
						if attempt == 1000 {
							errs <- errors.New("no success after 1000 attempts")
							return
						}
						v, found, err := f.s.GetVersioned(f.ctx, "p", "n")
						if err != nil {
							errs <- err
							return
						}
						n := 0
						cond := store.IfAbsent()
						if found {
							fmt.Sscan(string(v.Value), &n)
							cond = store.IfVersion(v.Version)
						}
						_, err = f.s.SetIf(f.ctx, "p", "n", []byte(fmt.Sprint(n+1)), 0, cond)
						if err == nil {
							break
						}
						if !errors.Is(err, store.ErrConflict) {
							errs <- err
							return
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		f.wantValue("p", "n", fmt.Sprint(workers*each))
	})
}

func testConditions(t *testing.T, h Harness) {
	t.Run("SetIfAbsent", func(t *testing.T) {
		f := open(t, h, Options{})
		v, err := f.s.SetIf(f.ctx, "p", "k", []byte("first"), 0, store.IfAbsent())
		if err != nil || v == 0 {
			t.Fatalf("SetIf(absent key, IfAbsent) = (%d, %v), want a version", v, err)
		}
		_, err = f.s.SetIf(f.ctx, "p", "k", []byte("second"), 0, store.IfAbsent())
		wantConflict(t, "SetIf(present key, IfAbsent)", err, store.Conflict{Key: "k", Exists: true})
		f.wantValue("p", "k", "first")
		f.wantVersion("p", "k", v)
		// IfVersion(0) is IfAbsent.
		_, err = f.s.SetIf(f.ctx, "p", "k", []byte("third"), 0, store.IfVersion(0))
		wantConflict(t, "SetIf(present key, IfVersion(0))", err, store.Conflict{Key: "k", Exists: true})
	})

	t.Run("SetIfVersion", func(t *testing.T) {
		f := open(t, h, Options{})
		v1 := f.setV("p", "k", "a", 0)
		v2, err := f.s.SetIf(f.ctx, "p", "k", []byte("b"), 0, store.IfVersion(v1))
		if err != nil {
			t.Fatalf("SetIf(current version) = %v", err)
		}
		wantGreater(t, "SetIf(current version)", v2, v1)
		_, err = f.s.SetIf(f.ctx, "p", "k", []byte("c"), 0, store.IfVersion(v1))
		wantConflict(t, "SetIf(stale version)", err, store.Conflict{Key: "k", Exists: true})
		f.wantValue("p", "k", "b")
		f.wantVersion("p", "k", v2)
		_, err = f.s.SetIf(f.ctx, "p", "missing", []byte("c"), 0, store.IfVersion(v1))
		wantConflict(t, "SetIf(missing key, a version)", err, store.Conflict{Key: "missing", Exists: false})
		f.wantMissing("p", "missing")
	})

	t.Run("ExpiredKeysAreAbsent", func(t *testing.T) {
		f := open(t, h, Options{})
		f.parallelIfReal()
		v := f.setV("p", "k", "a", f.ttl)
		f.setV("p", "j", "a", f.ttl)
		f.expire()
		_, err := f.s.SetIf(f.ctx, "p", "k", []byte("b"), 0, store.IfVersion(v))
		wantConflict(t, "SetIf(expired key, its old version)", err, store.Conflict{Key: "k", Exists: false})
		if _, err := f.s.DeleteIf(f.ctx, "p", "j", store.IfVersion(v+1)); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("DeleteIf(expired key, a version) = %v, want a conflict", err)
		}
		v2, err := f.s.SetIf(f.ctx, "p", "k", []byte("new"), 0, store.IfAbsent())
		if err != nil {
			t.Fatalf("SetIf(expired key, IfAbsent) = %v, want success", err)
		}
		wantGreater(t, "re-create of an expired key", v2, v)
		f.wantValue("p", "k", "new")
		if _, ttl := f.ttlOf("p", "k"); ttl != 0 {
			t.Fatalf("the re-created key has TTL %v, want none", ttl)
		}
	})

	t.Run("DeleteIf", func(t *testing.T) {
		f := open(t, h, Options{})
		v := f.setV("p", "k", "a", 0)
		_, err := f.s.DeleteIf(f.ctx, "p", "k", store.IfVersion(v+1))
		wantConflict(t, "DeleteIf(wrong version)", err, store.Conflict{Key: "k", Exists: true})
		f.wantValue("p", "k", "a")
		_, err = f.s.DeleteIf(f.ctx, "p", "k", store.IfAbsent())
		wantConflict(t, "DeleteIf(present key, IfAbsent)", err, store.Conflict{Key: "k", Exists: true})
		existed, err := f.s.DeleteIf(f.ctx, "p", "k", store.IfVersion(v))
		if err != nil || !existed {
			t.Fatalf("DeleteIf(current version) = (%v, %v), want (true, nil)", existed, err)
		}
		f.wantMissing("p", "k")
		_, err = f.s.DeleteIf(f.ctx, "p", "k", store.IfVersion(v))
		wantConflict(t, "DeleteIf(deleted key, its old version)", err, store.Conflict{Key: "k", Exists: false})
		existed, err = f.s.DeleteIf(f.ctx, "p", "k", store.IfAbsent())
		if err != nil || existed {
			t.Fatalf("DeleteIf(missing key, IfAbsent) = (%v, %v), want (false, nil)", existed, err)
		}
		f.wantBytes("p", 0)
	})

	t.Run("SetManyAllOrNothing", func(t *testing.T) {
		f := open(t, h, Options{})
		vb := f.setV("p", "b", "old-b", 0)
		vc := f.setV("p", "c", "old-c", 0)
		before := f.usage("p")
		cond := func(it store.Item, c store.Cond) store.Item { it.Cond = c; return it }
		items := []store.Item{
			cond(item("a", "new-a", 0), store.IfAbsent()),       // holds
			cond(item("b", "new-b", 0), store.IfVersion(vb+99)), // stale
			cond(item("c", "new-c", 0), store.IfAbsent()),       // exists
			cond(item("d", "new-d", 0), store.IfVersion(vc)),    // missing
			item("e", "new-e", 0),                               // unconditional
		}
		_, err := f.s.SetManyIf(f.ctx, "p", items)
		wantConflict(t, "SetManyIf with three failing conditions", err,
			store.Conflict{Key: "b", Exists: true}, store.Conflict{Key: "c", Exists: true}, store.Conflict{Key: "d", Exists: false})
		err = f.s.SetMany(f.ctx, "p", items)
		wantConflict(t, "SetMany with the same items", err,
			store.Conflict{Key: "b", Exists: true}, store.Conflict{Key: "c", Exists: true}, store.Conflict{Key: "d", Exists: false})
		f.wantMissing("p", "a")
		f.wantMissing("p", "d")
		f.wantMissing("p", "e")
		f.wantValue("p", "b", "old-b")
		f.wantVersion("p", "b", vb)
		f.wantVersion("p", "c", vc)
		if u := f.usage("p"); u != before {
			t.Fatalf("usage after a refused SetMany = %+v, want %+v", u, before)
		}

		ok := []store.Item{
			cond(item("a", "new-a", 0), store.IfAbsent()),
			cond(item("b", "new-b", 0), store.IfVersion(vb)),
			cond(item("c", "new-c", 0), store.IfVersion(vc)),
		}
		vs, err := f.s.SetManyIf(f.ctx, "p", ok)
		if err != nil {
			t.Fatalf("SetManyIf with holding conditions = %v", err)
		}
		for i, it := range ok {
			f.wantValue("p", it.Key, string(it.Value))
			f.wantVersion("p", it.Key, vs[i])
		}
		wantGreater(t, "b after SetManyIf", vs[1], vb)
	})

	t.Run("DuplicateKeyChecksTheStoredEntry", func(t *testing.T) {
		f := open(t, h, Options{})
		v := f.setV("p", "k", "a", 0)
		items := []store.Item{
			{Key: "k", Value: []byte("b"), Cond: store.IfVersion(v)},
			{Key: "k", Value: []byte("c"), Cond: store.IfVersion(v)},
		}
		if err := f.s.SetMany(f.ctx, "p", items); err != nil {
			t.Fatalf("SetMany with two items on k, both conditioned on its stored version = %v", err)
		}
		f.wantValue("p", "k", "c")
	})

	t.Run("ConflictBeforeQuota", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: 100})
		f.setV("p", "k", "a", 0)
		_, err := f.s.SetIf(f.ctx, "p", "k", []byte(value(200)), 0, store.IfAbsent())
		wantConflict(t, "SetIf(present key, IfAbsent, too large for the quota)", err, store.Conflict{Key: "k", Exists: true})
		// A condition that holds still meets the quota.
		_, err = f.s.SetIf(f.ctx, "p", "new", []byte(value(200)), 0, store.IfAbsent())
		wantQuotaErr(t, "SetIf(absent key, IfAbsent, over quota)", err)
	})

	t.Run("ConditionsInOneBatch", func(t *testing.T) {
		// Many conditional writes of one key at once: the backend batches
		// them, and exactly one IfAbsent may win.
		f := open(t, h, Options{})
		const n = 32
		var wg sync.WaitGroup
		wins := make(chan uint64, n)
		errs := make(chan error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := f.s.SetIf(f.ctx, "p", "lock", []byte(fmt.Sprint(i)), 0, store.IfAbsent())
				switch {
				case err == nil:
					wins <- v
				case !errors.Is(err, store.ErrConflict):
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(wins)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		var won []uint64
		for v := range wins {
			won = append(won, v)
		}
		if len(won) != 1 {
			t.Fatalf("%d of %d SetIf(IfAbsent) calls succeeded, want exactly 1", len(won), n)
		}
		f.wantVersion("p", "lock", won[0])
	})
}

// ttlOf returns whether key exists and its TTL.
func (f *fixture) ttlOf(project, key string) (bool, time.Duration) {
	f.t.Helper()
	ttl, found, err := f.s.TTL(f.ctx, project, key)
	if err != nil {
		f.t.Fatalf("TTL(%q, %q) = %v", project, short(key), err)
	}
	if ttl < 0 {
		f.t.Fatalf("TTL(%q, %q) = %v, want >= 0", project, short(key), ttl)
	}
	return found, ttl
}

// wantTTL fails unless key exists with a TTL of want (within what a real
// clock lets pass between the write and the read).
func (f *fixture) wantTTL(project, key string, want time.Duration) {
	f.t.Helper()
	found, got := f.ttlOf(project, key)
	if !found {
		f.t.Fatalf("TTL(%q, %q): not found, want %v", project, key, want)
	}
	if f.realClock() && want != 0 {
		if got <= 0 || got > want || got < want-realSlack {
			f.t.Fatalf("TTL(%q, %q) = %v, want about %v", project, key, got, want)
		}
		return
	}
	if got != want {
		f.t.Fatalf("TTL(%q, %q) = %v, want %v", project, key, got, want)
	}
}

func testExpire(t *testing.T, h Harness) {
	t.Run("TTLReportsTheRemainder", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "forever", "a", 0)
		f.set("p", "k", "a", 10*time.Minute)
		f.wantTTL("p", "forever", 0)
		f.wantTTL("p", "k", 10*time.Minute)
		if !f.realClock() {
			f.sleep(4 * time.Minute)
			f.wantTTL("p", "k", 6*time.Minute)
			f.sleep(6*time.Minute - time.Millisecond)
			f.wantTTL("p", "k", time.Millisecond)
			f.sleep(time.Millisecond)
			if found, _ := f.ttlOf("p", "k"); found {
				t.Fatal("TTL of a key at its expiry instant: found, want not found")
			}
		}
		if found, _ := f.ttlOf("p", "missing"); found {
			t.Fatal("TTL of a missing key: found")
		}
		f.incr("p", "n", 1, 3*time.Minute)
		f.wantTTL("p", "n", 3*time.Minute)
	})

	t.Run("ExpireReplacesTheTTL", func(t *testing.T) {
		f := open(t, h, Options{})
		f.parallelIfReal()
		v1 := f.setV("p", "k", "value", f.ttl)
		v2, existed, err := f.s.Expire(f.ctx, "p", "k", time.Hour)
		if err != nil || !existed {
			t.Fatalf("Expire(k, 1h) = (%d, %v, %v), want existed", v2, existed, err)
		}
		wantGreater(t, "Expire", v2, v1)
		f.wantTTL("p", "k", time.Hour)
		f.expire() // the old TTL passes: the key stays
		f.wantValue("p", "k", "value")

		if _, _, err := f.s.Expire(f.ctx, "p", "k", 0); err != nil {
			t.Fatal(err)
		}
		f.wantTTL("p", "k", 0)
		f.expire() // twice the old TTL, and past the first: still there
		f.wantValue("p", "k", "value")

		if _, _, err := f.s.Expire(f.ctx, "p", "k", f.ttl); err != nil {
			t.Fatal(err)
		}
		f.expire()
		f.wantMissing("p", "k")
		f.wantBytes("p", 0)
	})

	t.Run("ExpireOfMissingOrExpiredKey", func(t *testing.T) {
		f := open(t, h, Options{})
		f.parallelIfReal()
		v, existed, err := f.s.Expire(f.ctx, "p", "missing", time.Hour)
		if err != nil || existed || v != 0 {
			t.Fatalf("Expire(missing) = (%d, %v, %v), want (0, false, nil)", v, existed, err)
		}
		f.wantMissing("p", "missing")
		f.set("p", "k", "a", f.ttl)
		f.expire()
		if _, existed, err := f.s.Expire(f.ctx, "p", "k", 0); err != nil || existed {
			t.Fatalf("Expire(expired key, 0) = (%v, %v), want (false, nil): an expired key is not revived", existed, err)
		}
		f.wantMissing("p", "k")
		f.wantBytes("p", 0)
	})

	t.Run("ExpireKeepsUsageAndQuota", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: 100})
		f.set("p", "k", value(99), 0) // 100 bytes: the project is full
		before := f.usage("p")
		if _, existed, err := f.s.Expire(f.ctx, "p", "k", time.Hour); err != nil || !existed {
			t.Fatalf("Expire on a full project = (%v, %v), want success: the size does not change", existed, err)
		}
		if u := f.usage("p"); u != before {
			t.Fatalf("usage after Expire = %+v, want %+v", u, before)
		}
		if _, _, err := f.s.Expire(f.ctx, "p", "k", 0); err != nil {
			t.Fatal(err)
		}
		if u := f.usage("p"); u != before {
			t.Fatalf("usage after removing the expiry = %+v, want %+v", u, before)
		}
		wantQuotaErr(t, "Set of one more byte", f.s.Set(f.ctx, "p", "x", nil, 0))
	})

	t.Run("Validation", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "k", "a", 0)
		_, _, err := f.s.Expire(f.ctx, "p", "k", -time.Millisecond)
		wantErr(t, "Expire(negative TTL)", err, store.ErrNegativeTTL)
		_, _, err = f.s.Expire(f.ctx, "p", "", time.Second)
		wantErr(t, "Expire(empty key)", err, store.ErrEmptyKey)
		_, _, err = f.s.TTL(f.ctx, "p", "")
		wantErr(t, "TTL(empty key)", err, store.ErrEmptyKey)
		_, err = f.s.SetIf(f.ctx, "p", "", nil, 0, store.IfAbsent())
		wantErr(t, "SetIf(empty key)", err, store.ErrEmptyKey)
		_, err = f.s.DeleteIf(f.ctx, "p", "", store.IfAbsent())
		wantErr(t, "DeleteIf(empty key)", err, store.ErrEmptyKey)
		f.wantTTL("p", "k", 0)
	})
}
