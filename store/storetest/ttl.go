package storetest

import (
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

func testTTL(t *testing.T, h Harness) {
	t.Run("ExpiredIsInvisibleAtOnce", func(t *testing.T) {
		f := open(t, h, Options{})
		f.parallelIfReal()
		f.set("p", "live", "stays", 0)
		for _, k := range []string{"get", "has", "many", "list", "incr", "del"} {
			f.set("p", k, "short-lived", f.ttl)
		}
		f.setMany("p", item("sm-ttl", "short-lived", f.ttl), item("sm-none", "stays", 0))
		f.wantValue("p", "get", "short-lived")
		f.wantValue("p", "sm-ttl", "short-lived")

		f.expire() // and no Sweep: expired entries must vanish by themselves

		f.wantMissing("p", "get")
		if f.has("p", "has") {
			t.Fatal("Has of an expired key = true")
		}
		got, err := f.s.GetMany(f.ctx, "p", []string{"many", "live", "sm-ttl"})
		if err != nil || got[0] != nil || string(got[1]) != "stays" || got[2] != nil {
			t.Fatalf("GetMany(expired, live, expired) = (%q, %v), want [<nil> stays <nil>]", got, err)
		}
		found, err := f.s.HasMany(f.ctx, "p", []string{"many", "live", "sm-none"})
		if err != nil || !slices.Equal(found, []bool{false, true, true}) {
			t.Fatalf("HasMany(expired, live, live) = (%v, %v), want [false true true]", found, err)
		}
		if keys := f.keys("p"); !slices.Equal(keys, []string{"live", "sm-none"}) {
			t.Fatalf("List = %q, want only the live keys [live sm-none]", keys)
		}
		f.wantBytes("p", size("live", "stays")+size("sm-none", "stays"))
		if n := f.incr("p", "incr", 5, 0); n != 5 {
			t.Fatalf("Incr of an expired key = %d, want 5 (counting from 0)", n)
		}
		if f.del("p", "del") {
			t.Fatal("Delete of an expired key = true, want false: it no longer existed")
		}
		f.wantValue("p", "live", "stays")
		f.wantValue("p", "sm-none", "stays")
	})

	t.Run("ZeroTTLNeverExpires", func(t *testing.T) {
		f := open(t, h, Options{})
		if f.realClock() {
			t.Skip("needs an injected clock to let years pass; ExpiredIsInvisibleAtOnce covers the short run")
		}
		f.set("p", "k", "v", 0)
		f.setMany("p", item("m", "v", 0))
		f.incr("p", "n", 1, 0)
		f.sleep(100 * 365 * 24 * time.Hour)
		f.sweepAll()
		f.wantValue("p", "k", "v")
		f.wantValue("p", "m", "v")
		f.wantValue("p", "n", "1")
	})

	t.Run("LongTTL", func(t *testing.T) {
		f := open(t, h, Options{})
		f.parallelIfReal()
		f.set("p", "max", "v", time.Duration(math.MaxInt64))
		f.set("p", "century", "v", 100*365*24*time.Hour)
		f.sleep(f.ttl)
		f.wantValue("p", "max", "v")
		f.wantValue("p", "century", "v")
	})

	t.Run("OverwriteReplacesExpiry", func(t *testing.T) {
		f := open(t, h, Options{})
		f.parallelIfReal()
		f.set("p", "ttl-then-none", "1", f.ttl)
		f.set("p", "ttl-then-none", "2", 0)
		f.set("p", "none-then-ttl", "1", 0)
		f.set("p", "none-then-ttl", "2", f.ttl)
		f.set("p", "many-ttl-then-none", "1", f.ttl)
		f.setMany("p", item("many-ttl-then-none", "2", 0))
		f.set("p", "long-then-short", "1", 1000*f.ttl)
		f.set("p", "long-then-short", "2", f.ttl)

		f.expire()

		f.wantValue("p", "ttl-then-none", "2")
		f.wantValue("p", "many-ttl-then-none", "2")
		f.wantMissing("p", "none-then-ttl")
		f.wantMissing("p", "long-then-short")
	})

	t.Run("ExpiredKeyCanBeSetAgain", func(t *testing.T) {
		f := open(t, h, Options{})
		f.parallelIfReal()
		f.set("p", "k", "old value", f.ttl)
		f.expire()
		f.set("p", "k", "new", 0)
		f.wantValue("p", "k", "new")
		if u := f.usage("p"); u.Bytes != size("k", "new") || u.Entries != 1 {
			t.Fatalf("Usage = %+v, want only the new entry (%d bytes, 1 entry)", u, size("k", "new"))
		}
		if keys := f.keys("p"); !slices.Equal(keys, []string{"k"}) {
			t.Fatalf("List = %q, want [k] once", keys)
		}
	})

	t.Run("ListReportsExpiry", func(t *testing.T) {
		f := open(t, h, Options{})
		before := time.Now()
		if !f.realClock() {
			before = f.clock.Now()
		}
		f.set("p", "a", "v", f.ttl)
		f.set("p", "b", "v", 0)
		after := time.Now()
		if !f.realClock() {
			after = f.clock.Now()
		}
		page := f.list("p", store.ListOptions{})
		if len(page.Entries) != 2 {
			t.Fatalf("List = %+v, want 2 entries", page)
		}
		exp := page.Entries[0].Expires
		if exp.Before(before.Add(f.ttl).Add(-time.Millisecond)) || exp.After(after.Add(f.ttl).Add(time.Millisecond)) {
			t.Fatalf("Entry.Expires = %v, want set time + TTL, between %v and %v", exp, before.Add(f.ttl), after.Add(f.ttl))
		}
		if !page.Entries[1].Expires.IsZero() {
			t.Fatalf("Entry.Expires of a key without TTL = %v, want zero", page.Entries[1].Expires)
		}
	})
}

func testSweep(t *testing.T, h Harness) {
	t.Run("RemovesExpiredAndFreesUsage", func(t *testing.T) {
		f := open(t, h, Options{})
		f.parallelIfReal()
		const expiring = 25
		for i := range expiring {
			f.set("p", "tmp"+strconv.Itoa(i), "short-lived", f.ttl)
		}
		f.set("q", "tmp", "short-lived", f.ttl)
		live := []string{"a", "b", "c"}
		for _, k := range live {
			f.set("p", k, "stays", 0)
		}
		if u := f.usage("p"); u.Entries != expiring+3 {
			t.Fatalf("Usage before expiry = %+v, want %d entries", u, expiring+3)
		}
		f.expire()
		if u := f.usage("p"); u.Entries < 3 {
			t.Fatalf("Usage.Entries after expiry = %d, want at least the 3 live ones", u.Entries)
		}

		// A background sweeper may have removed some already, so the
		// total is at most what expired.
		if n := f.sweepAll(); n > expiring+1 {
			t.Fatalf("Sweep removed %d entries, only %d had expired", n, expiring+1)
		}
		if u := f.usage("p"); u.Entries != 3 || u.Bytes != 3*size("a", "stays") {
			t.Fatalf("Usage after Sweep = %+v, want the 3 live entries (%d bytes)", u, 3*size("a", "stays"))
		}
		if u := f.usage("q"); u.Entries != 0 || u.Bytes != 0 {
			t.Fatalf("Usage(q) after Sweep = %+v, want nothing", u)
		}
		for _, k := range live {
			f.wantValue("p", k, "stays")
		}
		if n, err := f.s.Sweep(f.ctx); err != nil || n != 0 {
			t.Fatalf("Sweep with nothing expired = (%d, %v), want (0, nil)", n, err)
		}
	})

	t.Run("KeepsUnexpired", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "a", "v", 1000*f.ttl)
		f.set("p", "b", "v", 0)
		if n, err := f.s.Sweep(f.ctx); err != nil || n != 0 {
			t.Fatalf("Sweep with nothing expired = (%d, %v), want (0, nil)", n, err)
		}
		f.wantValue("p", "a", "v")
		f.wantValue("p", "b", "v")
	})
}
