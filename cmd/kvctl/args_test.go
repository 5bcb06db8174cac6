package main

import (
	"flag"
	"io"
	"slices"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args, rest []string
		ttl        string
	}{
		{[]string{"k", "1", "--ttl", "1h"}, []string{"k", "1"}, "1h"},
		{[]string{"--ttl", "1h", "k", "1"}, []string{"k", "1"}, "1h"},
		{[]string{"k", "--ttl=2h", "1"}, []string{"k", "1"}, "2h"},
		{[]string{"n", "-5", "--ttl", "1h"}, []string{"n", "-5"}, "1h"},
		{[]string{"n", "-0.5"}, []string{"n", "-0.5"}, ""},
		{[]string{"--", "-odd", "--ttl"}, []string{"-odd", "--ttl"}, ""},
		{[]string{"k", "-"}, []string{"k", "-"}, ""},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		ttl := fs.String("ttl", "", "")
		rest, err := parseInterspersed(fs, tc.args)
		if err != nil || !slices.Equal(rest, tc.rest) || *ttl != tc.ttl {
			t.Errorf("parse %q = %q, ttl %q, %v; want %q, ttl %q", tc.args, rest, *ttl, err, tc.rest, tc.ttl)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := parseInterspersed(fs, []string{"k", "--nope"}); err == nil {
		t.Error("an unknown flag was accepted")
	}
}

// TestEntries: counts read as English, "1 entry" and not "1 entries".
func TestEntries(t *testing.T) {
	for n, want := range map[int64]string{0: "0 entries", 1: "1 entry", 2: "2 entries", 1000: "1000 entries"} {
		if got := entries(n); got != want {
			t.Errorf("entries(%d) = %q, want %q", n, got, want)
		}
	}
}
