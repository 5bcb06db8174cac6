package identity

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseUIDMap(t *testing.T) {
	cases := []struct {
		name  string
		text  string
		rules []Rule
		err   string
	}{
		{"empty", "# nothing\n\n", nil, ""},
		{"single and range", "1000 shop\n2000-2999 blog # tenants\n", []Rule{{1000, 1000, "shop"}, {2000, 2999, "blog"}}, ""},
		{"sorted", "5 b\n1 a\n", []Rule{{1, 1, "a"}, {5, 5, "b"}}, ""},
		{"overlap", "1-10 a\n10 b\n", nil, "uid 10 is mapped twice"},
		{"missing project", "1000\n", nil, "line 1: want"},
		{"extra field", "1 a b\n", nil, "line 1: want"},
		{"bad uid", "x a\n", nil, `bad uid "x"`},
		{"reversed range", "9-3 a\n", nil, "the end is below the start"},
		{"too large", "4294967296 a\n", nil, "bad uid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := ParseUIDMap(strings.NewReader(tc.text))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rules) != len(tc.rules) {
				t.Fatalf("rules = %v, want %v", rules, tc.rules)
			}
			for i := range rules {
				if rules[i] != tc.rules[i] {
					t.Fatalf("rules = %v, want %v", rules, tc.rules)
				}
			}
		})
	}
}

func TestUIDMapResolveAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "uids")
	os.WriteFile(path, []byte("100 a\n200-299 b\n"), 0o644)
	m, err := LoadUIDMap(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	for uid, want := range map[uint32]string{100: "a", 200: "b", 250: "b", 299: "b"} {
		if got, err := m.Resolve(t.Context(), Peer{UID: uid}); err != nil || got != want {
			t.Errorf("uid %d: %q, %v; want %q", uid, got, err, want)
		}
	}
	for _, uid := range []uint32{0, 99, 101, 300} {
		if _, err := m.Resolve(t.Context(), Peer{UID: uid}); !errors.Is(err, ErrUnmapped) {
			t.Errorf("uid %d: err = %v, want ErrUnmapped", uid, err)
		}
	}
	// A broken file keeps the previous map in force.
	os.WriteFile(path, []byte("oops\n"), 0o644)
	if err := m.Reload(t.Context()); err == nil {
		t.Fatal("reload of a broken map succeeded")
	}
	if got, _ := m.Resolve(t.Context(), Peer{UID: 100}); got != "a" {
		t.Fatalf("after a failed reload uid 100 -> %q", got)
	}
	// So does an empty one, which would lock every caller out.
	os.WriteFile(path, []byte("# all gone\n"), 0o644)
	if err := m.Reload(t.Context()); !errors.Is(err, ErrEmptyMap) {
		t.Fatalf("reload of an empty map: %v, want ErrEmptyMap", err)
	}
	if got, _ := m.Resolve(t.Context(), Peer{UID: 100}); got != "a" {
		t.Fatalf("after an empty reload uid 100 -> %q", got)
	}
	os.WriteFile(path, []byte("101 c\n"), 0o644)
	if err := m.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Resolve(t.Context(), Peer{UID: 100}); !errors.Is(err, ErrUnmapped) {
		t.Fatal("uid 100 still mapped after reload removed it")
	}
	if got, _ := m.Resolve(t.Context(), Peer{UID: 101}); got != "c" {
		t.Fatalf("uid 101 -> %q", got)
	}
}
