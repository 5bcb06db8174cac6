package storetest

import (
	"fmt"
	"slices"
	"strconv"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
)

func testList(t *testing.T, h Harness) {
	t.Run("ByteOrder", func(t *testing.T) {
		f := open(t, h, Options{})
		keys := []string{"b", "a", "B", "é", "a0", "a/", "ab", "~", "Z", "10", "9", "日", "a\x00"}
		for _, k := range keys {
			f.set("p", k, "v", 0)
		}
		want := slices.Clone(keys)
		slices.Sort(want) // Go compares strings bytewise
		if got := f.keys("p"); !slices.Equal(got, want) {
			t.Fatalf("List keys = %q, want byte order %q", got, want)
		}
	})

	t.Run("Prefix", func(t *testing.T) {
		f := open(t, h, Options{})
		for _, k := range []string{"user:1", "user:2", "user:10", "users", "use", "admin:1", "user"} {
			f.set("p", k, "v", 0)
		}
		for _, tc := range []struct {
			prefix string
			want   []string
		}{
			{"user:", []string{"user:1", "user:10", "user:2"}},
			{"user", []string{"user", "user:1", "user:10", "user:2", "users"}},
			{"admin:1", []string{"admin:1"}},
			{"", []string{"admin:1", "use", "user", "user:1", "user:10", "user:2", "users"}},
			{"zzz", nil},
			{"user:3", nil},
			{"%", nil},
		} {
			page := f.list("p", store.ListOptions{Prefix: tc.prefix})
			if got := entryKeys(page); !slices.Equal(got, tc.want) || page.More {
				t.Errorf("List(Prefix %q) = %q (More %v), want %q (More false)", tc.prefix, got, page.More, tc.want)
			}
		}
	})

	t.Run("Pagination", func(t *testing.T) {
		f := open(t, h, Options{})
		var want []string
		var items []store.Item
		for i := range 137 {
			k := fmt.Sprintf("k%03d", i)
			want = append(want, k)
			items = append(items, item(k, "value of "+k, 0))
			items = append(items, item("other"+strconv.Itoa(i), "v", 0))
		}
		f.setMany("p", items...)

		var got []string
		opts := store.ListOptions{Prefix: "k", Limit: 10, Values: true}
		for pages := 1; ; pages++ {
			if pages > 15 {
				t.Fatalf("List did not finish after %d pages of 10 for 137 keys", pages-1)
			}
			page := f.list("p", opts)
			if len(page.Entries) > 10 {
				t.Fatalf("page %d has %d entries, Limit is 10", pages, len(page.Entries))
			}
			for _, e := range page.Entries {
				if string(e.Value) != "value of "+e.Key {
					t.Fatalf("entry %q has value %q", e.Key, e.Value)
				}
				got = append(got, e.Key)
			}
			if !page.More {
				if pages != 14 {
					t.Fatalf("List ended after %d pages, want 14 (13 full, one of 7)", pages)
				}
				break
			}
			if len(page.Entries) != 10 {
				t.Fatalf("page %d has %d entries and More set, want a full page", pages, len(page.Entries))
			}
			opts.After = page.Entries[len(page.Entries)-1].Key
		}
		if !slices.Equal(got, want) {
			t.Fatalf("pages gave %d keys %q…, want the %d keys in order without gaps or repeats", len(got), got[:min(len(got), 5)], len(want))
		}
	})

	t.Run("CursorKeyMayBeGone", func(t *testing.T) {
		f := open(t, h, Options{})
		for _, k := range []string{"a", "b", "c", "d", "e"} {
			f.set("p", k, "v", 0)
		}
		page := f.list("p", store.ListOptions{Limit: 2})
		f.del("p", "b") // the cursor's key goes away between pages
		next := f.list("p", store.ListOptions{Limit: 2, After: page.Entries[1].Key})
		if got := entryKeys(next); !slices.Equal(got, []string{"c", "d"}) || !next.More {
			t.Fatalf("page after a deleted cursor key = %q (More %v), want [c d] (More true)", got, next.More)
		}
	})

	t.Run("After", func(t *testing.T) {
		f := open(t, h, Options{})
		for _, k := range []string{"a", "b", "bb", "c", "x1", "x2"} {
			f.set("p", k, "v", 0)
		}
		for _, tc := range []struct {
			opts store.ListOptions
			want []string
		}{
			{store.ListOptions{After: "a"}, []string{"b", "bb", "c", "x1", "x2"}},
			{store.ListOptions{After: "b"}, []string{"bb", "c", "x1", "x2"}},
			{store.ListOptions{After: "ba"}, []string{"bb", "c", "x1", "x2"}},
			{store.ListOptions{After: "x2"}, nil},
			{store.ListOptions{After: "zzz"}, nil},
			{store.ListOptions{After: "a", Prefix: "x"}, []string{"x1", "x2"}},
			{store.ListOptions{After: "x1", Prefix: "x"}, []string{"x2"}},
			{store.ListOptions{After: "y", Prefix: "x"}, nil},
		} {
			page := f.list("p", tc.opts)
			if got := entryKeys(page); !slices.Equal(got, tc.want) || page.More {
				t.Errorf("List(%+v) = %q (More %v), want %q (More false)", tc.opts, got, page.More, tc.want)
			}
		}
	})

	t.Run("Limit", func(t *testing.T) {
		f := open(t, h, Options{})
		var items []store.Item
		for i := range store.MaxListLimit {
			items = append(items, item(fmt.Sprintf("k%04d", i), "", 0))
		}
		f.setMany("p", items...)
		f.set("p", "zlast", "", 0)
		for _, tc := range []struct {
			limit int
			want  int
			more  bool
		}{
			{0, store.MaxListLimit, true},
			{-1, store.MaxListLimit, true},
			{store.MaxListLimit + 1, store.MaxListLimit, true},
			{1, 1, true},
			{store.MaxListLimit, store.MaxListLimit, true},
		} {
			page := f.list("p", store.ListOptions{Limit: tc.limit})
			if len(page.Entries) != tc.want || page.More != tc.more {
				t.Errorf("List(Limit %d) of %d keys = %d entries (More %v), want %d (More %v)",
					tc.limit, store.MaxListLimit+1, len(page.Entries), page.More, tc.want, tc.more)
			}
		}
		// More is false when the page ends exactly at the last match.
		page := f.list("p", store.ListOptions{Prefix: "k000", Limit: 10})
		if len(page.Entries) != 10 || page.More {
			t.Errorf("List(Prefix k000, Limit 10) = %d entries (More %v), want exactly 10 (More false)", len(page.Entries), page.More)
		}
		page = f.list("p", store.ListOptions{Prefix: "k000", Limit: 9})
		if len(page.Entries) != 9 || !page.More {
			t.Errorf("List(Prefix k000, Limit 9) = %d entries (More %v), want 9 (More true)", len(page.Entries), page.More)
		}
	})

	t.Run("ValuesAndSize", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "a", "12345", 0)
		f.set("p", "empty", "", 0)
		for _, values := range []bool{false, true} {
			page := f.list("p", store.ListOptions{Values: values})
			if len(page.Entries) != 2 {
				t.Fatalf("List = %+v, want 2 entries", page)
			}
			a, empty := page.Entries[0], page.Entries[1]
			if a.Size != size("a", "12345") || empty.Size != size("empty", "") {
				t.Errorf("List(Values %v) sizes = %d, %d, want %d, %d (key + value bytes, with or without values)",
					values, a.Size, empty.Size, size("a", "12345"), size("empty", ""))
			}
			if !values && (a.Value != nil || empty.Value != nil) {
				t.Errorf("List without Values returned values %q, %q", a.Value, empty.Value)
			}
			if values && (string(a.Value) != "12345" || len(empty.Value) != 0) {
				t.Errorf("List with Values = %q, %q, want 12345 and empty", a.Value, empty.Value)
			}
		}
	})

	t.Run("SkipsExpired", func(t *testing.T) {
		f := open(t, h, Options{})
		f.parallelIfReal()
		for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"} {
			ttl := 0 * f.ttl
			if k == "b" || k == "d" || k == "e" {
				ttl = f.ttl
			}
			f.set("p", k, "v", ttl)
		}
		f.set("p", "z0", "v", 0)
		f.set("p", "z1", "v", 0)
		f.set("p", "z2", "v", f.ttl)
		f.set("p", "z3", "v", f.ttl)
		f.expire()

		var pages [][]string
		var mores []bool
		opts := store.ListOptions{Limit: 3}
		for range 10 {
			page := f.list("p", opts)
			pages = append(pages, entryKeys(page))
			mores = append(mores, page.More)
			if !page.More {
				break
			}
			opts.After = page.Entries[len(page.Entries)-1].Key
		}
		// The last page is full and only expired keys follow it.
		want := [][]string{{"a", "c", "f"}, {"g", "h", "i"}, {"j", "z0", "z1"}}
		if !slices.EqualFunc(pages, want, slices.Equal) || !slices.Equal(mores, []bool{true, true, false}) {
			t.Fatalf("pages of 3 = %q (More %v), want %q (More [true true false]): expired keys neither fill a page nor set More",
				pages, mores, want)
		}
	})

	t.Run("EmptyProject", func(t *testing.T) {
		f := open(t, h, Options{})
		page := f.list("nobody", store.ListOptions{Values: true})
		if len(page.Entries) != 0 || page.More {
			t.Fatalf("List of an empty project = %+v, want no entries, More false", page)
		}
	})
}

func entryKeys(page store.Page) []string {
	var keys []string
	for _, e := range page.Entries {
		keys = append(keys, e.Key)
	}
	return keys
}
