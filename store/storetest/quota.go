package storetest

import (
	"strconv"
	"strings"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
)

// quota is the default quota of the quota tests: small enough to count by
// hand.
const quota = 100

func testQuota(t *testing.T, h Harness) {
	t.Run("Default", func(t *testing.T) {
		f := open(t, h, Options{})
		if u := f.usage("p"); u.Quota != store.DefaultQuota || u.Bytes != 0 || u.Entries != 0 {
			t.Fatalf("Usage of a new project = %+v, want 0 bytes, 0 entries, quota %d", u, store.DefaultQuota)
		}
		f = open(t, h, Options{DefaultQuota: quota})
		if u := f.usage("p"); u.Quota != quota {
			t.Fatalf("Usage.Quota = %d, want the configured default %d", u.Quota, quota)
		}
	})

	// Each case starts with "a" holding 89 bytes (usage 90 of 100) and makes
	// one write that lands exactly on the quota or one byte over it.
	t.Run("ExactLimit", func(t *testing.T) {
		for _, tc := range []struct {
			name      string
			write     func(f *fixture) error
			usage     int64 // usage after the write when it fits
			untouched []string
		}{
			{"Set fits", func(f *fixture) error { return f.s.Set(f.ctx, "p", "b", []byte(value(9)), 0) }, 100, nil},
			{"Set over", func(f *fixture) error { return f.s.Set(f.ctx, "p", "b", []byte(value(10)), 0) }, 0, []string{"b"}},
			{"overwrite fits", func(f *fixture) error { return f.s.Set(f.ctx, "p", "a", []byte(value(99)), 0) }, 100, nil},
			{"overwrite over", func(f *fixture) error { return f.s.Set(f.ctx, "p", "a", []byte(value(100)), 0) }, 0, nil},
			{"SetMany fits", func(f *fixture) error {
				return f.s.SetMany(f.ctx, "p", []store.Item{item("b", value(4), 0), item("c", value(4), 0)})
			}, 100, nil},
			{"SetMany over writes nothing", func(f *fixture) error {
				return f.s.SetMany(f.ctx, "p", []store.Item{item("b", value(4), 0), item("c", value(5), 0)})
			}, 0, []string{"b", "c"}},
			{"SetMany with a duplicate key counts its last value", func(f *fixture) error {
				return f.s.SetMany(f.ctx, "p", []store.Item{item("b", value(30), 0), item("b", value(9), 0)})
			}, 100, nil},
			{"SetMany over by an overwrite", func(f *fixture) error {
				return f.s.SetMany(f.ctx, "p", []store.Item{item("b", value(1), 0), item("a", value(98), 0)})
			}, 0, []string{"b"}},
			{"Incr fits", func(f *fixture) error { _, err := f.s.Incr(f.ctx, "p", "nn", 12345678, 0); return err }, 100, nil},
			{"Incr over", func(f *fixture) error { _, err := f.s.Incr(f.ctx, "p", "nn", 123456789, 0); return err }, 0, []string{"nn"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := open(t, h, Options{DefaultQuota: quota})
				f.set("p", "a", value(89), 0)
				err := tc.write(f)
				if tc.usage != 0 {
					if err != nil {
						t.Fatalf("write to exactly the quota = %v, want success", err)
					}
					if u := f.usage("p"); u.Bytes != tc.usage {
						t.Fatalf("Usage.Bytes = %d, want %d", u.Bytes, tc.usage)
					}
					return
				}
				wantQuotaErr(t, "write one byte over the quota", err)
				f.wantValue("p", "a", value(89))
				for _, k := range tc.untouched {
					f.wantMissing("p", k)
				}
				if u := f.usage("p"); u.Bytes != 90 || u.Entries != 1 {
					t.Fatalf("Usage after a refused write = %+v, want 90 bytes, 1 entry as before", u)
				}
			})
		}
	})

	t.Run("OverwriteCountsDifference", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: quota})
		f.set("p", "k", value(99), 0) // 100 of 100
		f.set("p", "k", value(99), 0) // same size: still fits
		f.set("p", "k", value(49), 0) // shrinks to 50
		f.wantBytes("p", 50)
		f.set("p", "j", value(49), 0) // uses the freed 50
		f.wantBytes("p", 100)
		wantQuotaErr(t, "overwrite growing by one byte at full quota", f.s.Set(f.ctx, "p", "k", []byte(value(50)), 0))
		f.wantValue("p", "k", value(49))
		f.wantBytes("p", 100)
	})

	// Each case fills the quota with "a" and "b" (50 bytes each), frees
	// space, then stores "c" of 49 bytes, which fits only if the space was
	// freed at once.
	t.Run("FreedAtOnce", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			free func(f *fixture) error
		}{
			{"Delete", func(f *fixture) error { _, err := f.s.Delete(f.ctx, "p", "a"); return err }},
			{"DeleteMany", func(f *fixture) error { _, err := f.s.DeleteMany(f.ctx, "p", []string{"a"}); return err }},
			{"Clear", func(f *fixture) error { _, err := f.s.Clear(f.ctx, "p"); return err }},
			{"shrinking overwrite", func(f *fixture) error { return f.s.Set(f.ctx, "p", "a", nil, 0) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := open(t, h, Options{DefaultQuota: quota})
				f.set("p", "a", value(49), 0)
				f.set("p", "b", value(49), 0)
				wantQuotaErr(t, "Set at full quota", f.s.Set(f.ctx, "p", "c", []byte(value(48)), 0))
				if err := tc.free(f); err != nil {
					t.Fatal(err)
				}
				f.set("p", "c", value(48), 0)
				f.wantValue("p", "c", value(48))
			})
		}
	})

	// Each case fills the quota with entries that then expire; the write
	// needs the whole quota and must succeed without anyone calling Sweep.
	t.Run("ExpiredNeverRefuse", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: quota})
		f.parallelIfReal()
		cases := []struct {
			name    string
			write   func(f *fixture, p string) error
			usage   int64
			refused bool
		}{
			{"Set", func(f *fixture, p string) error { return f.s.Set(f.ctx, p, "n", []byte(value(99)), 0) }, 100, false},
			{"overwrite of an expired key", func(f *fixture, p string) error {
				return f.s.Set(f.ctx, p, "t1", []byte(value(98)), 0)
			}, 100, false},
			{"SetMany", func(f *fixture, p string) error {
				return f.s.SetMany(f.ctx, p, []store.Item{item("n1", value(48), 0), item("n2", value(48), 0)})
			}, 100, false},
			{"Incr", func(f *fixture, p string) error { _, err := f.s.Incr(f.ctx, p, "n", 1, 0); return err }, 2, false},
			{"beside live entries, fits", func(f *fixture, p string) error {
				return f.s.Set(f.ctx, p, "n", []byte(value(49)), 0)
			}, 100, false},
			{"beside live entries, one byte over", func(f *fixture, p string) error {
				return f.s.Set(f.ctx, p, "n", []byte(value(50)), 0)
			}, 50, true},
		}
		// Fill every case's project first so that one wait serves them all.
		for i, tc := range cases {
			p := "p" + strconv.Itoa(i)
			f.set(p, "t1", value(48), f.ttl)
			if strings.HasPrefix(tc.name, "beside") {
				f.set(p, "live", value(46), 0)
			} else {
				f.set(p, "t2", value(48), f.ttl)
			}
			wantQuotaErr(t, "Set at full quota before expiry", f.s.Set(f.ctx, p, "x", nil, 0))
		}
		f.expire()
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				p := "p" + strconv.Itoa(i)
				err := tc.write(f, p)
				if tc.refused {
					wantQuotaErr(t, "write one byte over the live usage", err)
				} else if err != nil {
					t.Fatalf("write that fits once expired entries are discounted = %v, want success", err)
				}
				f.wantBytes(p, tc.usage)
				f.wantMissing(p, "t2")
			})
		}
	})

	t.Run("SetQuota", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: quota})
		f.setQuota("p", 10)
		if u := f.usage("p"); u.Quota != 10 {
			t.Fatalf("Usage.Quota after SetQuota(10) = %d", u.Quota)
		}
		f.set("p", "k", value(9), 0)
		wantQuotaErr(t, "Set over the override", f.s.Set(f.ctx, "p", "j", nil, 0))

		f.setQuota("p", 200)
		f.set("p", "j", value(189), 0)
		f.wantBytes("p", 200)

		f.setQuota("p", 0) // back to the default, below the usage
		if u := f.usage("p"); u.Quota != quota || u.Bytes != 200 {
			t.Fatalf("Usage after removing the override = %+v, want quota %d and the data kept", u, quota)
		}
		f.wantValue("p", "j", value(189))
	})

	t.Run("QuotaBelowUsage", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: quota})
		f.set("p", "a", value(49), 0)
		f.set("p", "b", value(49), 0)
		f.setQuota("p", 60)
		f.wantValue("p", "a", value(49))
		wantQuotaErr(t, "growing overwrite over a lowered quota", f.s.Set(f.ctx, "p", "a", []byte(value(50)), 0))
		wantQuotaErr(t, "new key over a lowered quota", f.s.Set(f.ctx, "p", "c", nil, 0))
		f.set("p", "a", value(40), 0) // shrinking is allowed
		f.wantBytes("p", 91)
		f.del("p", "b")
		f.set("p", "c", value(18), 0) // 41 + 19 = 60
		f.wantBytes("p", 60)
	})

	t.Run("SetDefaultQuota", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: quota})
		f.setQuota("p", 10)
		if err := f.s.SetDefaultQuota(f.ctx, 300); err != nil {
			t.Fatal(err)
		}
		if u := f.usage("q"); u.Quota != 300 {
			t.Fatalf("Usage(q).Quota = %d, want the new default 300", u.Quota)
		}
		if u := f.usage("p"); u.Quota != 10 {
			t.Fatalf("Usage(p).Quota = %d, want its override 10 to stay", u.Quota)
		}
		f.set("q", "k", value(299), 0)
		f.setQuota("p", 0)
		if u := f.usage("p"); u.Quota != 300 {
			t.Fatalf("Usage(p).Quota after removing its override = %d, want 300", u.Quota)
		}
	})

	t.Run("BadQuota", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: quota})
		wantErr(t, "SetQuota(-1)", f.s.SetQuota(f.ctx, "p", -1), store.ErrBadArgument)
		wantErr(t, "SetDefaultQuota(-1)", f.s.SetDefaultQuota(f.ctx, -1), store.ErrBadArgument)
		if u := f.usage("p"); u.Quota != quota {
			t.Fatalf("Usage.Quota after refused changes = %d, want %d", u.Quota, quota)
		}
	})

	t.Run("OverrideOutlivesClear", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: quota})
		f.setQuota("p", 10)
		f.set("p", "k", "v", 0)
		if _, err := f.s.Clear(f.ctx, "p"); err != nil {
			t.Fatal(err)
		}
		if u := f.usage("p"); u.Quota != 10 {
			t.Fatalf("Usage.Quota after Clear = %d, want the override 10", u.Quota)
		}
	})
}
