package pebble_test

import (
	"context"
	"slices"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/pebble"
)

// TestSearchScanIsBounded: a search stops after Config.SearchScan keys and
// says where to go on, so a rare substring never means one long read.
func TestSearchScanIsBounded(t *testing.T) {
	s := open(t, pebble.Config{SearchScan: 3})
	ctx := context.Background()
	var items []store.Item
	for _, k := range []string{"a", "bx", "c", "d", "e", "f", "g", "h", "i", "jx"} {
		items = append(items, store.Item{Key: k, Value: []byte("1")})
	}
	if err := s.SetMany(ctx, "p", items); err != nil {
		t.Fatal(err)
	}
	var got, nexts []string
	opts := store.SearchOptions{Search: "x", Limit: 10}
	for {
		page, err := s.SearchKeys(ctx, "p", opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entries {
			got = append(got, e.Key)
		}
		if page.Next == "" {
			break
		}
		nexts = append(nexts, page.Next)
		opts.After = page.Next
	}
	if !slices.Equal(got, []string{"bx", "jx"}) || !slices.Equal(nexts, []string{"c", "f", "i"}) {
		t.Fatalf("search in pages of 3 scanned keys found %q, going on after %q; want [bx jx] after [c f i]", got, nexts)
	}
}
