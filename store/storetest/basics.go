package storetest

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
)

func testBasics(t *testing.T, h Harness) {
	t.Run("GetMissing", func(t *testing.T) {
		f := open(t, h, Options{})
		v, found, err := f.s.Get(f.ctx, "p", "nope")
		if err != nil || found || v != nil {
			t.Fatalf("Get of a key never set = (%q, %v, %v), want (nil, false, nil)", v, found, err)
		}
		if f.has("p", "nope") {
			t.Fatal("Has of a key never set = true")
		}
	})

	t.Run("SetGet", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			value []byte
		}{
			{"text", []byte("hello")},
			{"JSON", []byte(`{"name":"John","tags":["a","b"],"n":1.5,"ok":true,"x":null}`)},
			{"binary", []byte{0, 255, 0, 1, '\n', 0x80}},
			{"empty", []byte{}},
			{"64KiB", bytes.Repeat([]byte("0123456789abcdef"), 4096)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := open(t, h, Options{})
				if err := f.s.Set(f.ctx, "p", "k", tc.value, 0); err != nil {
					t.Fatalf("Set = %v", err)
				}
				got, found, err := f.s.Get(f.ctx, "p", "k")
				if err != nil || !found || !bytes.Equal(got, tc.value) || got == nil {
					t.Fatalf("Get = (%q, %v, %v), want (%q, true, nil) with a non-nil value", short(string(got)), found, err, short(string(tc.value)))
				}
				if !f.has("p", "k") {
					t.Fatal("Has = false after Set")
				}
				if u := f.usage("p"); u.Bytes != int64(1+len(tc.value)) || u.Entries != 1 {
					t.Fatalf("Usage = %+v, want Bytes %d, Entries 1", u, 1+len(tc.value))
				}
			})
		}
	})

	t.Run("Overwrite", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "k", "first value", 0)
		f.set("p", "k", "second", 0)
		f.wantValue("p", "k", "second")
		if u := f.usage("p"); u.Bytes != size("k", "second") || u.Entries != 1 {
			t.Fatalf("Usage after overwrite = %+v, want Bytes %d, Entries 1", u, size("k", "second"))
		}
	})

	t.Run("Delete", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "k", "v", 0)
		if !f.del("p", "k") {
			t.Fatal("Delete of an existing key = false, want true")
		}
		f.wantMissing("p", "k")
		if f.del("p", "k") {
			t.Fatal("second Delete of the key = true, want false")
		}
		if f.del("p", "never") {
			t.Fatal("Delete of a key never set = true, want false")
		}
		if u := f.usage("p"); u.Bytes != 0 || u.Entries != 0 {
			t.Fatalf("Usage after Delete = %+v, want 0 bytes, 0 entries", u)
		}
	})

	t.Run("Clear", func(t *testing.T) {
		f := open(t, h, Options{})
		for _, k := range []string{"a", "b", "c"} {
			f.set("p", k, "v", 0)
		}
		f.set("q", "a", "other", 0)
		f.set("q", "z", "other", 0)
		n, err := f.s.Clear(f.ctx, "p")
		if err != nil || n != 3 {
			t.Fatalf("Clear = (%d, %v), want (3, nil)", n, err)
		}
		for _, k := range []string{"a", "b", "c"} {
			f.wantMissing("p", k)
		}
		if keys := f.keys("p"); len(keys) != 0 {
			t.Fatalf("List after Clear = %q, want nothing", keys)
		}
		if u := f.usage("p"); u.Bytes != 0 || u.Entries != 0 {
			t.Fatalf("Usage after Clear = %+v, want 0 bytes, 0 entries", u)
		}
		f.wantValue("q", "a", "other")
		f.wantValue("q", "z", "other")
		if n, err := f.s.Clear(f.ctx, "p"); err != nil || n != 0 {
			t.Fatalf("Clear of an empty project = (%d, %v), want (0, nil)", n, err)
		}
		if n, err := f.s.Clear(f.ctx, "never-used"); err != nil || n != 0 {
			t.Fatalf("Clear of an unknown project = (%d, %v), want (0, nil)", n, err)
		}
		f.set("p", "a", "again", 0)
		f.wantValue("p", "a", "again")
	})

	t.Run("ValuesAreCopies", func(t *testing.T) {
		f := open(t, h, Options{})
		// Enough data that a backend keeping it in pages or buffers of its
		// own does not happen to hand out private copies anyway.
		f.set("p", "filler", value(64<<10), 0)
		buf := []byte("abc")
		if err := f.s.Set(f.ctx, "p", "k", buf, 0); err != nil {
			t.Fatal(err)
		}
		buf[0] = 'X'
		f.wantValue("p", "k", "abc")

		got, _, _ := f.s.Get(f.ctx, "p", "k")
		got[0] = 'Y'
		many, _ := f.s.GetMany(f.ctx, "p", []string{"k"})
		many[0][0] = 'Z'
		page := f.list("p", store.ListOptions{Values: true})
		page.Entries[0].Value[0] = 'W'
		f.wantValue("p", "k", "abc")
	})

	t.Run("KeysAreAnyUTF8", func(t *testing.T) {
		f := open(t, h, Options{})
		keys := []string{"user:123", "a b", "é", "日本語", "emoji 🎉", "\x00", "tab\there", "a/b\\c", "'quote\"", "%_*"}
		for i, k := range keys {
			f.set("p", k, strconv.Itoa(i), 0)
		}
		for i, k := range keys {
			f.wantValue("p", k, strconv.Itoa(i))
		}
		want := slices.Clone(keys)
		slices.Sort(want)
		if got := f.keys("p"); !slices.Equal(got, want) {
			t.Fatalf("List keys = %q, want %q", got, want)
		}
	})

	t.Run("Ping", func(t *testing.T) {
		f := open(t, h, Options{})
		if err := f.s.Ping(f.ctx); err != nil {
			t.Fatalf("Ping of an open store = %v", err)
		}
	})

	t.Run("ProjectNameRequired", func(t *testing.T) {
		f := open(t, h, Options{})
		for name, call := range map[string]func() error{
			"Get":   func() error { _, _, err := f.s.Get(f.ctx, "", "k"); return err },
			"Set":   func() error { return f.s.Set(f.ctx, "", "k", []byte("v"), 0) },
			"Incr":  func() error { _, err := f.s.Incr(f.ctx, "", "k", 1, 0); return err },
			"List":  func() error { _, err := f.s.List(f.ctx, "", store.ListOptions{}); return err },
			"Usage": func() error { _, err := f.s.Usage(f.ctx, ""); return err },
			"Clear": func() error { _, err := f.s.Clear(f.ctx, ""); return err },
		} {
			wantErr(t, name+` with project ""`, call(), store.ErrBadArgument)
		}
	})
}

func testMany(t *testing.T, h Harness) {
	t.Run("GetMany", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "a", "1", 0)
		f.set("p", "e", "", 0)
		got, err := f.s.GetMany(f.ctx, "p", []string{"a", "missing", "e", "a"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 4 || string(got[0]) != "1" || got[1] != nil || got[2] == nil || len(got[2]) != 0 || string(got[3]) != "1" {
			t.Fatalf("GetMany(a, missing, empty, a) = %q (nil marks missing: %v), want [1 <nil> \"\" 1] with the empty value non-nil",
				got, nilMask(got))
		}
	})

	t.Run("HasMany", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "a", "1", 0)
		f.set("p", "e", "", 0)
		got, err := f.s.HasMany(f.ctx, "p", []string{"a", "missing", "e"})
		if err != nil || !slices.Equal(got, []bool{true, false, true}) {
			t.Fatalf("HasMany(a, missing, empty) = (%v, %v), want [true false true]", got, err)
		}
	})

	t.Run("SetMany", func(t *testing.T) {
		f := open(t, h, Options{})
		f.setMany("p", item("a", "1", 0), item("b", "22", 0), item("c", "", 0))
		f.wantValue("p", "a", "1")
		f.wantValue("p", "b", "22")
		f.wantValue("p", "c", "")
		if u := f.usage("p"); u.Bytes != 2+3+1 || u.Entries != 3 {
			t.Fatalf("Usage = %+v, want Bytes 6, Entries 3", u)
		}
	})

	t.Run("SetManyDuplicateKeyTakesLast", func(t *testing.T) {
		f := open(t, h, Options{})
		f.setMany("p", item("k", "first", 0), item("j", "x", 0), item("k", "last!!", 0))
		f.wantValue("p", "k", "last!!")
		f.wantValue("p", "j", "x")
		if u := f.usage("p"); u.Bytes != size("k", "last!!")+size("j", "x") || u.Entries != 2 {
			t.Fatalf("Usage = %+v, want Bytes %d, Entries 2", u, size("k", "last!!")+size("j", "x"))
		}
	})

	t.Run("DeleteMany", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "a", "1", 0)
		f.set("p", "b", "2", 0)
		f.set("p", "keep", "3", 0)
		got, err := f.s.DeleteMany(f.ctx, "p", []string{"a", "missing", "b"})
		if err != nil || !slices.Equal(got, []bool{true, false, true}) {
			t.Fatalf("DeleteMany(a, missing, b) = (%v, %v), want [true false true]", got, err)
		}
		f.wantMissing("p", "a")
		f.wantMissing("p", "b")
		f.wantValue("p", "keep", "3")
		f.wantBytes("p", size("keep", "3"))
	})

	t.Run("Empty", func(t *testing.T) {
		f := open(t, h, Options{})
		if got, err := f.s.GetMany(f.ctx, "p", nil); err != nil || len(got) != 0 {
			t.Fatalf("GetMany() = (%q, %v), want an empty result", got, err)
		}
		if got, err := f.s.HasMany(f.ctx, "p", nil); err != nil || len(got) != 0 {
			t.Fatalf("HasMany() = (%v, %v), want an empty result", got, err)
		}
		if err := f.s.SetMany(f.ctx, "p", nil); err != nil {
			t.Fatalf("SetMany() = %v, want success", err)
		}
		if got, err := f.s.DeleteMany(f.ctx, "p", nil); err != nil || len(got) != 0 {
			t.Fatalf("DeleteMany() = (%v, %v), want an empty result", got, err)
		}
	})

	t.Run("TooManyItems", func(t *testing.T) {
		f := open(t, h, Options{})
		keys := make([]string, store.MaxBatchItems+1)
		items := make([]store.Item, store.MaxBatchItems+1)
		for i := range keys {
			keys[i] = "k" + strconv.Itoa(i)
			items[i] = item(keys[i], "v", 0)
		}
		_, err := f.s.GetMany(f.ctx, "p", keys)
		wantErr(t, "GetMany of 1001 keys", err, store.ErrTooManyItems)
		_, err = f.s.HasMany(f.ctx, "p", keys)
		wantErr(t, "HasMany of 1001 keys", err, store.ErrTooManyItems)
		_, err = f.s.DeleteMany(f.ctx, "p", keys)
		wantErr(t, "DeleteMany of 1001 keys", err, store.ErrTooManyItems)
		wantErr(t, "SetMany of 1001 items", f.s.SetMany(f.ctx, "p", items), store.ErrTooManyItems)
		if u := f.usage("p"); u.Entries != 0 {
			t.Fatalf("Usage after a refused SetMany = %+v, want nothing written", u)
		}
		// Exactly at the bound is fine.
		f.setMany("p", items[:store.MaxBatchItems]...)
		if u := f.usage("p"); u.Entries != store.MaxBatchItems {
			t.Fatalf("Usage after SetMany of %d items = %+v", store.MaxBatchItems, u)
		}
	})
}

func nilMask(values [][]byte) []bool {
	mask := make([]bool, len(values))
	for i, v := range values {
		mask[i] = v == nil
	}
	return mask
}

func testValidation(t *testing.T, h Harness) {
	// Small limits, so the suite checks they are configurable and that errors
	// name the configured limit rather than the default.
	limits := store.Limits{MaxKeyBytes: 16, MaxValueBytes: 64}

	badKeys := []struct {
		name  string
		key   string
		want  error
		names string // the error message must contain this
	}{
		{"empty", "", store.ErrEmptyKey, ""},
		{"one byte over", strings.Repeat("k", 17), store.ErrKeyTooLarge, "16"},
		{"multibyte over", strings.Repeat("é", 9), store.ErrKeyTooLarge, "16"},
		{"invalid UTF-8", "a\xffb", store.ErrInvalidKey, ""},
		{"truncated UTF-8", "\xe6\x97", store.ErrInvalidKey, ""},
	}
	ops := []struct {
		name string
		call func(f *fixture, key string) error
	}{
		{"Get", func(f *fixture, k string) error { _, _, err := f.s.Get(f.ctx, "p", k); return err }},
		{"Has", func(f *fixture, k string) error { _, err := f.s.Has(f.ctx, "p", k); return err }},
		{"Set", func(f *fixture, k string) error { return f.s.Set(f.ctx, "p", k, []byte("v"), 0) }},
		{"Delete", func(f *fixture, k string) error { _, err := f.s.Delete(f.ctx, "p", k); return err }},
		{"Incr", func(f *fixture, k string) error { _, err := f.s.Incr(f.ctx, "p", k, 1, 0); return err }},
		{"GetMany", func(f *fixture, k string) error { _, err := f.s.GetMany(f.ctx, "p", []string{"ok", k}); return err }},
		{"HasMany", func(f *fixture, k string) error { _, err := f.s.HasMany(f.ctx, "p", []string{"ok", k}); return err }},
		{"DeleteMany", func(f *fixture, k string) error { _, err := f.s.DeleteMany(f.ctx, "p", []string{"ok", k}); return err }},
		{"SetMany", func(f *fixture, k string) error {
			return f.s.SetMany(f.ctx, "p", []store.Item{item("new", "v", 0), item(k, "v", 0)})
		}},
	}
	t.Run("BadKeys", func(t *testing.T) {
		f := open(t, h, Options{Limits: limits})
		f.set("p", "ok", "kept", 0)
		for _, op := range ops {
			for _, bk := range badKeys {
				err := op.call(f, bk.key)
				what := op.name + " with a key that is " + bk.name
				wantErr(t, what, err, bk.want)
				if !strings.Contains(err.Error(), bk.names) {
					t.Errorf("%s = %q, want the message to name the limit %s", what, err, bk.names)
				}
			}
		}
		// Nothing was written, nothing deleted.
		f.wantValue("p", "ok", "kept")
		f.wantMissing("p", "new")
		if u := f.usage("p"); u.Entries != 1 || u.Bytes != size("ok", "kept") {
			t.Fatalf("Usage after refused calls = %+v, want only the first entry", u)
		}
	})

	t.Run("KeyAtLimit", func(t *testing.T) {
		f := open(t, h, Options{Limits: limits})
		for _, k := range []string{strings.Repeat("k", 16), strings.Repeat("é", 8)} {
			f.set("p", k, "v", 0)
			f.wantValue("p", k, "v")
		}
		if keys := f.keys("p"); len(keys) != 2 {
			t.Fatalf("List = %q, want both keys at the limit", keys)
		}
	})

	t.Run("Values", func(t *testing.T) {
		f := open(t, h, Options{Limits: limits})
		f.set("p", "max", value(64), 0)
		f.wantValue("p", "max", value(64))

		err := f.s.Set(f.ctx, "p", "max", []byte(value(65)), 0)
		wantErr(t, "Set of a value one byte over the limit", err, store.ErrValueTooLarge)
		if !strings.Contains(err.Error(), "64") {
			t.Errorf("Set of a too large value = %q, want the message to name the limit 64", err)
		}
		f.wantValue("p", "max", value(64))

		err = f.s.SetMany(f.ctx, "p", []store.Item{item("fits", "v", 0), item("big", value(65), 0)})
		wantErr(t, "SetMany with one value over the limit", err, store.ErrValueTooLarge)
		f.wantMissing("p", "fits")
		f.wantMissing("p", "big")
	})

	t.Run("DefaultLimits", func(t *testing.T) {
		f := open(t, h, Options{})
		k := strings.Repeat("k", store.DefaultMaxKeyBytes)
		f.set("p", k, "v", 0)
		f.wantValue("p", k, "v")
		err := f.s.Set(f.ctx, "p", k+"k", []byte("v"), 0)
		wantErr(t, "Set of a 1025-byte key", err, store.ErrKeyTooLarge)
		if !strings.Contains(err.Error(), "1024") {
			t.Errorf("Set of a 1025-byte key = %q, want the message to name the limit 1024", err)
		}

		v := value(store.DefaultMaxValueBytes)
		f.set("p", "big", v, 0)
		f.wantValue("p", "big", v)
		err = f.s.Set(f.ctx, "p", "big", []byte(v+"v"), 0)
		wantErr(t, "Set of a value of 1 MiB + 1 byte", err, store.ErrValueTooLarge)
		if !strings.Contains(err.Error(), strconv.Itoa(store.DefaultMaxValueBytes)) {
			t.Errorf("Set of a too large value = %q, want the message to name the limit %d", err, store.DefaultMaxValueBytes)
		}
	})

	t.Run("NegativeTTL", func(t *testing.T) {
		f := open(t, h, Options{})
		wantErr(t, "Set with a negative TTL", f.s.Set(f.ctx, "p", "a", []byte("v"), -1), store.ErrNegativeTTL)
		err := f.s.SetMany(f.ctx, "p", []store.Item{item("b", "v", 0), item("c", "v", -1)})
		wantErr(t, "SetMany with a negative TTL", err, store.ErrNegativeTTL)
		_, err = f.s.Incr(f.ctx, "p", "d", 1, -1)
		wantErr(t, "Incr with a negative TTL", err, store.ErrNegativeTTL)
		for _, k := range []string{"a", "b", "c", "d"} {
			f.wantMissing("p", k)
		}
	})
}

func testIsolation(t *testing.T, h Harness) {
	t.Run("SameKeyTwoProjects", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "k", "from p", 0)
		f.set("q", "k", "from q, longer", 0)
		f.wantValue("p", "k", "from p")
		f.wantValue("q", "k", "from q, longer")
		f.set("p", "only-p", "1", 0)
		if f.has("q", "only-p") {
			t.Fatal("Has in q of a key set only in p = true")
		}
		if got, _ := f.s.GetMany(f.ctx, "q", []string{"only-p"}); got[0] != nil {
			t.Fatalf("GetMany in q of a key set only in p = %q", got[0])
		}
		if keys := f.keys("q"); !slices.Equal(keys, []string{"k"}) {
			t.Fatalf("List of q = %q, want [k]", keys)
		}
		if u := f.usage("q"); u.Bytes != size("k", "from q, longer") || u.Entries != 1 {
			t.Fatalf("Usage(q) = %+v, want only q's entry", u)
		}
		if n := f.incr("q", "counter", 5, 0); n != 5 {
			t.Fatalf("Incr in q = %d, want 5", n)
		}
		if n := f.incr("p", "counter", 1, 0); n != 1 {
			t.Fatalf("Incr in p after q's counter = %d, want 1", n)
		}
	})

	t.Run("DeleteAndClearStayInProject", func(t *testing.T) {
		f := open(t, h, Options{})
		f.set("p", "k", "p", 0)
		f.set("q", "k", "q", 0)
		f.set("q", "j", "q", 0)
		if !f.del("p", "k") {
			t.Fatal("Delete in p = false")
		}
		f.wantValue("q", "k", "q")
		if existed, _ := f.s.DeleteMany(f.ctx, "p", []string{"j"}); existed[0] {
			t.Fatal("DeleteMany in p of a key only q has = true")
		}
		f.wantValue("q", "j", "q")
		f.set("p", "k", "p", 0)
		if n, err := f.s.Clear(f.ctx, "p"); err != nil || n != 1 {
			t.Fatalf("Clear(p) = (%d, %v), want (1, nil)", n, err)
		}
		f.wantValue("q", "k", "q")
		f.wantValue("q", "j", "q")
		if u := f.usage("q"); u.Entries != 2 || u.Bytes != 4 {
			t.Fatalf("Usage(q) after Clear(p) = %+v, want 2 entries, 4 bytes", u)
		}
	})

	t.Run("NamesDoNotRunTogether", func(t *testing.T) {
		// A backend that joins project and key into one string must not let
		// these pairs meet.
		f := open(t, h, Options{})
		pairs := [][2]string{
			{"ab", "c"}, {"a", "bc"},
			{"a/b", "c"}, {"a", "b/c"},
			{"a:b", "c"}, {"a", "b:c"},
			{"a b", "c"}, {"a", " b c"},
		}
		for _, pk := range pairs {
			f.set(pk[0], pk[1], pk[0]+"|"+pk[1], 0)
		}
		for _, pk := range pairs {
			f.wantValue(pk[0], pk[1], pk[0]+"|"+pk[1])
		}
		if keys := f.keys("a"); !slices.Equal(keys, []string{" b c", "b/c", "b:c", "bc"}) {
			t.Fatalf("List of project a = %q, want only its own keys", keys)
		}
		if u := f.usage("ab"); u.Entries != 1 {
			t.Fatalf("Usage(ab) = %+v, want 1 entry", u)
		}
	})

	t.Run("QuotaIsPerProject", func(t *testing.T) {
		f := open(t, h, Options{DefaultQuota: 100})
		f.setQuota("p", 10)
		if u := f.usage("q"); u.Quota != 100 {
			t.Fatalf("Usage(q).Quota = %d after SetQuota(p), want 100", u.Quota)
		}
		f.set("p", "k", value(9), 0)
		f.set("q", "k", value(99), 0)
		wantQuotaErr(t, "Set in full p", f.s.Set(f.ctx, "p", "j", nil, 0))
		wantQuotaErr(t, "Set in full q", f.s.Set(f.ctx, "q", "j", nil, 0))
		f.set("r", "k", value(99), 0)
	})
}
