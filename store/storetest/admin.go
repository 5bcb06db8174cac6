package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// adminCalls returns every store.Admin method that can fail, as a call on
// project "p", for the cancelled-context and closed-store checks.
func adminCalls(ctx context.Context, s store.Store) map[string]func() error {
	return map[string]func() error{
		"DefaultQuota": func() error { _, err := s.DefaultQuota(ctx); return err },
		"Projects":     func() error { _, err := s.Projects(ctx, "", 0); return err },
		"ProjectUsage": func() error { _, err := s.ProjectUsage(ctx, "p"); return err },
		"SearchKeys":   func() error { _, err := s.SearchKeys(ctx, "p", store.SearchOptions{Search: "k"}); return err },
		"Entry":        func() error { _, _, err := s.Entry(ctx, "p", "k"); return err },
		"PrefixUsage":  func() error { _, err := s.PrefixUsage(ctx, "p", ":", 0); return err },
		"LargestKeys":  func() error { _, err := s.LargestKeys(ctx, "p", 0); return err },
		"ExpiringBytes": func() error {
			_, err := s.ExpiringBytes(ctx, "p", time.Hour)
			return err
		},
		"Import": func() error {
			_, err := s.Import(ctx, "p", []store.Entry{{Key: "k", Value: []byte("v")}})
			return err
		},
	}
}

// now is the store's clock as the suite sees it.
func (f *fixture) now() time.Time {
	if f.realClock() {
		return time.Now()
	}
	return f.clock.Now()
}

func (f *fixture) search(project string, opts store.SearchOptions) store.KeyPage {
	f.t.Helper()
	page, err := f.s.SearchKeys(f.ctx, project, opts)
	if err != nil {
		f.t.Fatalf("SearchKeys(%q, %+v) = %v", project, opts, err)
	}
	return page
}

func (f *fixture) projectUsage(project string) store.ProjectUsage {
	f.t.Helper()
	u, err := f.s.ProjectUsage(f.ctx, project)
	if err != nil {
		f.t.Fatalf("ProjectUsage(%q) = %v", project, err)
	}
	return u
}

// allProjects lists every project, pageSize at a time, following More.
func (f *fixture) allProjects(pageSize int) []store.ProjectUsage {
	f.t.Helper()
	var all []store.ProjectUsage
	after := ""
	for {
		page, err := f.s.Projects(f.ctx, after, pageSize)
		if err != nil {
			f.t.Fatalf("Projects(after %q, %d) = %v", after, pageSize, err)
		}
		if len(page.Projects) > pageSize {
			f.t.Fatalf("Projects(after %q, %d) returned %d projects", after, pageSize, len(page.Projects))
		}
		all = append(all, page.Projects...)
		if !page.More {
			return all
		}
		if len(page.Projects) == 0 {
			f.t.Fatalf("Projects(after %q) returned an empty page with More set", after)
		}
		after = page.Projects[len(page.Projects)-1].Name
	}
}

func testAdmin(t *testing.T, h Harness) {
	t.Run("Projects", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: 1000})
		f.set("b", "k", "vv", 0)
		f.set("b", "gone", "v", f.ttl)
		f.set("a", "k1", "v", 0)
		f.set("a", "k2", "v", 0)
		f.setQuota("c", 500) // an override alone makes a project known
		f.set("d", "k", "v", 0)
		f.expire()
		want := []store.ProjectUsage{
			{Name: "a", Usage: store.Usage{Bytes: 6, Entries: 2, Quota: 1000}},
			{Name: "b", Usage: store.Usage{Bytes: 3, Entries: 1, Quota: 1000}},
			{Name: "c", Usage: store.Usage{Quota: 500}, Override: 500},
			{Name: "d", Usage: store.Usage{Bytes: 2, Entries: 1, Quota: 1000}},
		}
		for _, pageSize := range []int{1, 2, 3, 1000} {
			if got := f.allProjects(pageSize); !slices.Equal(got, want) {
				t.Fatalf("Projects in pages of %d = %+v, want %+v", pageSize, got, want)
			}
		}
		page, err := f.s.Projects(f.ctx, "b", 1)
		if err != nil || len(page.Projects) != 1 || page.Projects[0].Name != "c" || !page.More {
			t.Fatalf("Projects(after b, 1) = %+v, %v; want c with More", page, err)
		}
		if got := f.projectUsage("b"); got != want[1] {
			t.Fatalf("ProjectUsage(b) = %+v, want %+v", got, want[1])
		}
		if got := f.projectUsage("never"); got != (store.ProjectUsage{Name: "never", Usage: store.Usage{Quota: 1000}}) {
			t.Fatalf("ProjectUsage(never) = %+v, want empty with the default quota", got)
		}
	})

	t.Run("DefaultQuota", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: 1234})
		if q, err := f.s.DefaultQuota(f.ctx); err != nil || q != 1234 {
			t.Fatalf("DefaultQuota = %d, %v; want 1234", q, err)
		}
		if err := f.s.SetDefaultQuota(f.ctx, 99); err != nil {
			t.Fatal(err)
		}
		if q, err := f.s.DefaultQuota(f.ctx); err != nil || q != 99 {
			t.Fatalf("DefaultQuota after SetDefaultQuota(99) = %d, %v", q, err)
		}
		f.setQuota("p", 7)
		f.setQuota("p", 0)
		if u := f.projectUsage("p"); u.Quota != 99 || u.Override != 0 {
			t.Fatalf("ProjectUsage after removing the override = %+v, want quota 99 and no override", u)
		}
	})

	t.Run("SearchKeys", func(t *testing.T) {
		f := open(t, h, Options{})
		for _, k := range []string{"user:1:name", "user:2:mail", "user:10:name", "users", "cache:name", "Name", "user:3:name"} {
			f.set("p", k, "value", 0)
		}
		f.set("p", "user:4:name", "v", f.ttl)
		f.set("other", "user:9:name", "v", 0)
		f.expire()
		for _, tc := range []struct {
			prefix, search string
			want           []string
		}{
			{"", "name", []string{"cache:name", "user:10:name", "user:1:name", "user:3:name"}},
			{"user:", "name", []string{"user:10:name", "user:1:name", "user:3:name"}},
			{"user:", "", []string{"user:10:name", "user:1:name", "user:2:mail", "user:3:name"}},
			{"", "Name", []string{"Name"}}, // case-sensitive
			{"cache:", "user", nil},
			{"", "", []string{"Name", "cache:name", "user:10:name", "user:1:name", "user:2:mail", "user:3:name", "users"}},
			{"", "%", nil},
			{"", "_", nil},
		} {
			// One key per page, so that every page boundary is crossed.
			var got []string
			opts := store.SearchOptions{Prefix: tc.prefix, Search: tc.search, Limit: 1}
			for {
				page := f.search("p", opts)
				if len(page.Entries) > 1 {
					t.Fatalf("SearchKeys(%+v) returned %d entries", opts, len(page.Entries))
				}
				for _, e := range page.Entries {
					got = append(got, e.Key)
					if e.Size != size(e.Key, "value") || e.Value != nil || !e.Expires.IsZero() {
						t.Fatalf("SearchKeys entry %+v, want size %d, no value, no expiry", e, size(e.Key, "value"))
					}
				}
				if page.Next == "" {
					break
				}
				if page.Next <= opts.After {
					t.Fatalf("SearchKeys(%+v).Next = %q does not move forward", opts, page.Next)
				}
				opts.After = page.Next
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("SearchKeys(prefix %q, search %q) = %q, want %q", tc.prefix, tc.search, got, tc.want)
			}
		}
	})

	t.Run("SearchKeysExpiry", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "k", "v", time.Hour)
		page := f.search("p", store.SearchOptions{})
		if len(page.Entries) != 1 {
			t.Fatalf("SearchKeys = %+v, want one entry", page)
		}
		if d := page.Entries[0].Expires.Sub(f.now()); d < time.Hour-time.Minute || d > time.Hour {
			t.Fatalf("SearchKeys expiry in %v, want about an hour", d)
		}
	})

	t.Run("Entry", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "k", `{"a":1}`, time.Hour)
		f.set("p", "empty", "", 0)
		f.set("p", "brief", "v", f.ttl)
		f.expire()
		e, found, err := f.s.Entry(f.ctx, "p", "k")
		if err != nil || !found || string(e.Value) != `{"a":1}` || e.Key != "k" || e.Size != 8 {
			t.Fatalf("Entry(k) = %+v, %v, %v", e, found, err)
		}
		if d := e.Expires.Sub(f.now()); d <= 0 || d > time.Hour {
			t.Fatalf("Entry(k) expires in %v, want within the hour", d)
		}
		e, found, err = f.s.Entry(f.ctx, "p", "empty")
		if err != nil || !found || e.Value == nil || len(e.Value) != 0 || !e.Expires.IsZero() || e.Size != 5 {
			t.Fatalf("Entry(empty) = %+v, %v, %v; want a present empty value without expiry", e, found, err)
		}
		for _, k := range []string{"brief", "absent"} {
			if e, found, err := f.s.Entry(f.ctx, "p", k); err != nil || found {
				t.Fatalf("Entry(%s) = %+v, %v, %v; want not found", k, e, found, err)
			}
		}
		if _, found, err := f.s.Entry(f.ctx, "other", "k"); err != nil || found {
			t.Fatalf("Entry(other, k) = %v, %v; want another project's key not found", found, err)
		}
		_, _, err = f.s.Entry(f.ctx, "p", "")
		wantErr(t, `Entry("")`, err, store.ErrEmptyKey)
	})

	t.Run("PrefixUsage", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "user:1", value(10), 0)         // 16
		f.set("p", "user:2:x", value(10), 0)       // 18
		f.set("p", "cache:a", value(40), 0)        // 47
		f.set("p", "plain", value(3), 0)           // 8
		f.set("p", "zz", value(1), 0)              // 3
		f.set("p", "session:1", value(100), f.ttl) // expires
		f.set("p", "a:", "", 0)                    // 2
		f.set("p", "b:", "", 0)                    // 2
		f.set("other", "huge:1", value(1000), 0)
		f.expire()
		got, err := f.s.PrefixUsage(f.ctx, "p", ":", 0)
		if err != nil {
			t.Fatal(err)
		}
		want := []store.PrefixUsage{
			prefixUsage("cache:", 47, 1), prefixUsage("user:", 34, 2), prefixUsage("", 11, 2),
			prefixUsage("a:", 2, 1), prefixUsage("b:", 2, 1),
		}
		if !slices.Equal(got, want) {
			t.Fatalf("PrefixUsage(:) = %+v, want %+v", got, want)
		}
		if got, err := f.s.PrefixUsage(f.ctx, "p", ":", 2); err != nil || !slices.Equal(got, want[:2]) {
			t.Fatalf("PrefixUsage(:, 2) = %+v, %v; want %+v", got, err, want[:2])
		}
		got, err = f.s.PrefixUsage(f.ctx, "p", "er:", 0)
		if err != nil {
			t.Fatal(err)
		}
		if want := []store.PrefixUsage{prefixUsage("", 62, 5), prefixUsage("user:", 34, 2)}; !slices.Equal(got, want) {
			t.Fatalf("PrefixUsage(er:) = %+v, want %+v", got, want)
		}
		if got, err := f.s.PrefixUsage(f.ctx, "empty", ":", 0); err != nil || len(got) != 0 {
			t.Fatalf("PrefixUsage of an empty project = %+v, %v", got, err)
		}
		_, err = f.s.PrefixUsage(f.ctx, "p", "", 0)
		wantErr(t, "PrefixUsage with no delimiter", err, store.ErrBadArgument)
	})

	t.Run("LargestKeys", func(t *testing.T) {
		f := open(t, h, Options{})
		var items []store.Item
		for i := range 50 {
			items = append(items, item(fmt.Sprintf("k%02d", i), value(i%10), 0))
		}
		f.setMany("p", items...)
		f.set("p", "big", value(500), f.ttl)
		f.expire()
		got, err := f.s.LargestKeys(f.ctx, "p", 7)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, e := range got {
			keys = append(keys, e.Key)
			if e.Size != 3+int64(e.Key[2]-'0') || e.Value != nil {
				t.Fatalf("LargestKeys entry %+v: wrong size, or a value", e)
			}
		}
		// Sizes 12 (k09 … k49), then 11 (k08, k18): ties in key order.
		want := []string{"k09", "k19", "k29", "k39", "k49", "k08", "k18"}
		if !slices.Equal(keys, want) {
			t.Fatalf("LargestKeys(7) = %q, want %q", keys, want)
		}
		if got, err := f.s.LargestKeys(f.ctx, "empty", 7); err != nil || len(got) != 0 {
			t.Fatalf("LargestKeys of an empty project = %+v, %v", got, err)
		}
	})

	t.Run("ExpiringBytes", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "soon", value(10), 30*time.Minute)  // 14
		f.set("p", "today", value(20), 5*time.Hour)    // 25
		f.set("p", "later", value(30), 48*time.Hour)   // 35
		f.set("p", "never", value(40), 0)              // 45
		f.set("other", "soon", value(99), time.Minute) // not p's
		got, err := f.s.ExpiringBytes(f.ctx, "p", time.Hour, 24*time.Hour)
		if err != nil || !slices.Equal(got, []int64{14, 39}) {
			t.Fatalf("ExpiringBytes(1h, 24h) = %v, %v; want [14 39]", got, err)
		}
		if f.realClock() {
			return
		}
		f.sleep(31 * time.Minute) // "soon" has expired: it is not due any more
		if got, err := f.s.ExpiringBytes(f.ctx, "p", time.Hour, 24*time.Hour); err != nil || !slices.Equal(got, []int64{0, 25}) {
			t.Fatalf("ExpiringBytes after 31 minutes = %v, %v; want [0 25]", got, err)
		}
	})

	t.Run("Import", func(t *testing.T) {
		f := open(t, h, Options{})
		now := f.now().Truncate(time.Millisecond)
		exp := now.Add(time.Hour).UTC()
		vOld := f.setV("p", "old", "replaced", 0)
		n, err := f.s.Import(f.ctx, "p", []store.Entry{
			{Key: "a", Value: []byte(`"x"`), Expires: exp},
			{Key: "old", Value: []byte("new")},
			{Key: "dead", Value: []byte("v"), Expires: now.Add(-time.Second)},
			{Key: "twice", Value: []byte("1")},
			{Key: "twice", Value: []byte("2")},
			{Key: "empty", Value: nil},
		})
		if err != nil || n != 4 {
			t.Fatalf("Import = %d, %v; want 4 written (one expired skipped, one key twice)", n, err)
		}
		e, found, err := f.s.Entry(f.ctx, "p", "a")
		if err != nil || !found || string(e.Value) != `"x"` || !e.Expires.Equal(exp) {
			t.Fatalf("Entry(a) = %+v, %v, %v; want expiry %v exactly", e, found, err, exp)
		}
		f.wantValue("p", "old", "new")
		if _, v, _ := f.getV("p", "old"); v <= vOld {
			t.Fatalf("Import left old with version %d, want more than %d: an import is a write", v, vOld)
		}
		if _, v, _ := f.getV("p", "a"); v != e.Version || v == 0 {
			t.Fatalf("Entry(a).Version = %d, GetVersioned says %d", e.Version, v)
		}
		f.wantValue("p", "twice", "2")
		f.wantValue("p", "empty", "")
		f.wantMissing("p", "dead")
		u := f.usage("p")
		if want := size("a", `"x"`) + size("old", "new") + size("twice", "2") + size("empty", ""); u.Bytes != want || u.Entries != 4 {
			t.Fatalf("Usage after Import = %+v, want %d bytes in 4 entries", u, want)
		}
		if !f.realClock() {
			f.sleep(time.Hour)
			f.wantMissing("p", "a")
		}
		if n, err := f.s.Import(f.ctx, "p", nil); err != nil || n != 0 {
			t.Fatalf("Import(nil) = %d, %v", n, err)
		}
	})

	t.Run("ImportQuota", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: 100})
		f.set("p", "x", value(39), f.ttl) // 40 bytes, about to expire
		f.set("p", "y", value(19), 0)     // 20 bytes
		f.expire()
		// 60 bytes more fit once the expired entry no longer counts.
		if n, err := f.s.Import(f.ctx, "p", []store.Entry{{Key: "a", Value: []byte(value(59))}}); err != nil || n != 1 {
			t.Fatalf("Import of 60 bytes into 20 of 100 = %d, %v", n, err)
		}
		_, err := f.s.Import(f.ctx, "p", []store.Entry{
			{Key: "b", Value: []byte(value(9))},
			{Key: "c", Value: []byte(value(20))}, // 10 + 21 > 20 left
		})
		wantQuotaErr(t, "Import over the quota", err)
		f.wantMissing("p", "b") // nothing of a refused Import is written
		f.wantBytes("p", 80)
		// Overwrites count the difference.
		if n, err := f.s.Import(f.ctx, "p", []store.Entry{{Key: "a", Value: []byte(value(79))}}); err != nil || n != 1 {
			t.Fatalf("Import overwriting 60 bytes with 80 = %d, %v", n, err)
		}
		f.wantBytes("p", 100)
	})

	t.Run("ImportValidation", func(t *testing.T) {
		f := open(t, h, Options{Limits: store.Limits{MaxKeyBytes: 8, MaxValueBytes: 8}})
		for _, tc := range []struct {
			entry store.Entry
			err   error
		}{
			{store.Entry{Key: "", Value: []byte("v")}, store.ErrEmptyKey},
			{store.Entry{Key: "123456789", Value: []byte("v")}, store.ErrKeyTooLarge},
			{store.Entry{Key: "k", Value: []byte("123456789")}, store.ErrValueTooLarge},
			{store.Entry{Key: "\xff", Value: []byte("v")}, store.ErrInvalidKey},
		} {
			_, err := f.s.Import(f.ctx, "p", []store.Entry{{Key: "fine", Value: []byte("v")}, tc.entry})
			wantErr(t, fmt.Sprintf("Import(%+v)", tc.entry), err, tc.err)
		}
		f.wantMissing("p", "fine")
		_, err := f.s.Import(f.ctx, "p", make([]store.Entry, store.MaxBatchItems+1))
		wantErr(t, "Import of too many entries", err, store.ErrTooManyItems)
	})
}

func prefixUsage(prefix string, bytes, entries int64) store.PrefixUsage {
	return store.PrefixUsage{Prefix: prefix, Bytes: bytes, Entries: entries}
}
