package postgres

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestLongestTTLStillExpires sets entries with the longest TTL a Duration
// holds, through the one-round-trip path (Set) and the general one (Incr),
// and checks that they keep an expiry about 292 years away rather than
// losing it to an overflow.
func TestLongestTTLStillExpires(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	ctx := context.Background()
	s := openStore(t, testConfig(dsn))
	const ttl = time.Duration(math.MaxInt64)
	before := time.Now()
	if err := s.Set(ctx, "p", "set", []byte("v"), ttl); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Incr(ctx, "p", "incr", 1, ttl); err != nil {
		t.Fatal(err)
	}
	page, err := s.List(ctx, "p", store.ListOptions{})
	if err != nil || len(page.Entries) != 2 {
		t.Fatalf("List = %+v, %v", page, err)
	}
	for _, e := range page.Entries {
		if e.Expires.IsZero() || e.Expires.Before(before.Add(ttl-time.Hour)) {
			t.Errorf("%s expires at %v, want about %v", e.Key, e.Expires, before.Add(ttl))
		}
	}
}
