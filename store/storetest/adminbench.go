package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
)

// AdminBenchEntries is the size of the project BenchmarkAdmin analyses:
// 100k entries of about 100 bytes, under 20 key prefixes.
const AdminBenchEntries = 100_000

// BenchmarkAdmin measures the admin's reads of one project of
// AdminBenchEntries entries on s (which must be empty): a page of keys, a
// search for a substring that no key holds (every key is scanned, page
// after page), usage by prefix, the largest keys, and bytes due to expire.
func BenchmarkAdmin(b *testing.B, s store.Store) {
	ctx := context.Background()
	items := make([]store.Item, 0, store.MaxBatchItems)
	for i := range AdminBenchEntries {
		ttl := fakeTTL
		if i%4 != 0 {
			ttl = 0
		}
		items = append(items, store.Item{
			Key:   fmt.Sprintf("prefix%02d:user:%07d", i%20, i),
			Value: []byte(fmt.Sprintf(`{"user":%d,"name":"John Example","plan":"pro","visits":4711,"flags":["a","b"],"ok":true}`, i)),
			TTL:   ttl,
		})
		if len(items) == cap(items) {
			if err := s.SetMany(ctx, "p", items); err != nil {
				b.Fatal(err)
			}
			items = items[:0]
		}
	}
	for _, bm := range []struct {
		name string
		run  func() error
	}{
		{"KeysPage", func() error {
			_, err := s.SearchKeys(ctx, "p", store.SearchOptions{Prefix: "prefix07:", Limit: 100})
			return err
		}},
		{"SearchAbsent", func() error {
			opts := store.SearchOptions{Search: "absent", Limit: 100}
			for {
				page, err := s.SearchKeys(ctx, "p", opts)
				if err != nil || page.Next == "" {
					return err
				}
				opts.After = page.Next
			}
		}},
		{"PrefixUsage", func() error { _, err := s.PrefixUsage(ctx, "p", ":", 100); return err }},
		{"LargestKeys", func() error { _, err := s.LargestKeys(ctx, "p", 100); return err }},
		{"ExpiringBytes", func() error { _, err := s.ExpiringBytes(ctx, "p", fakeTTL); return err }},
	} {
		b.Run(bm.name, func(b *testing.B) {
			for b.Loop() {
				if err := bm.run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
