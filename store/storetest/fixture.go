package storetest

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

const (
	// fakeTTL is the TTL expiry tests use on an injected clock; any value
	// works since the suite moves the clock itself.
	fakeTTL = time.Minute
	// realTTL is the TTL expiry tests use on a real clock: long enough that
	// a write and the reads that must still see it fit well inside it on a
	// loaded machine, short enough to keep the suite quick.
	realTTL = time.Second
	// realSlack is how long past a TTL the suite waits on a real clock
	// before it expects the entry gone: clock granularity and the time a
	// write takes to reach the store.
	realSlack = 150 * time.Millisecond
)

// fixture is one open store plus the clock a test drives.
type fixture struct {
	t     *testing.T
	s     store.Store
	clock *Clock // nil when the backend runs on a real clock
	ctx   context.Context
	ttl   time.Duration // a short TTL: see expire
}

// open opens a new, empty store for t.
func open(t *testing.T, h Harness, opts Options) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: context.Background(), ttl: realTTL}
	if !h.RealClock {
		f.clock = NewClock()
		opts.Now = f.clock.Now
		f.ttl = fakeTTL
	}
	f.s = h.Open(t, opts)
	return f
}

// realClock reports whether waiting means sleeping.
func (f *fixture) realClock() bool { return f.clock == nil }

// parallelIfReal lets tests that sleep on a real clock wait side by side.
func (f *fixture) parallelIfReal() {
	if f.realClock() {
		f.t.Parallel()
	}
}

// sleep lets d pass: it moves the fake clock, or sleeps on a real one.
func (f *fixture) sleep(d time.Duration) {
	if f.realClock() {
		time.Sleep(d)
		return
	}
	f.clock.Advance(d)
}

// expire lets every entry written so far with TTL f.ttl expire.
func (f *fixture) expire() {
	if f.realClock() {
		time.Sleep(f.ttl + realSlack)
		return
	}
	f.clock.Advance(f.ttl + time.Millisecond)
}

func (f *fixture) set(project, key, value string, ttl time.Duration) {
	f.t.Helper()
	if err := f.s.Set(f.ctx, project, key, []byte(value), ttl); err != nil {
		f.t.Fatalf("Set(%q, %q) = %v, want success", project, short(key), err)
	}
}

func (f *fixture) setMany(project string, items ...store.Item) {
	f.t.Helper()
	if err := f.s.SetMany(f.ctx, project, items); err != nil {
		f.t.Fatalf("SetMany(%q, %d items) = %v, want success", project, len(items), err)
	}
}

// get returns the value of key and whether it was found.
func (f *fixture) get(project, key string) (string, bool) {
	f.t.Helper()
	v, found, err := f.s.Get(f.ctx, project, key)
	if err != nil {
		f.t.Fatalf("Get(%q, %q) = %v", project, short(key), err)
	}
	if found != (v != nil) {
		f.t.Fatalf("Get(%q, %q) = (%q, found %v): a found value must be non-nil, a missing one nil", project, short(key), v, found)
	}
	return string(v), found
}

// wantValue fails unless key holds want.
func (f *fixture) wantValue(project, key, want string) {
	f.t.Helper()
	got, found := f.get(project, key)
	if !found || got != want {
		f.t.Fatalf("Get(%q, %q) = (%q, found %v), want %q", project, short(key), short(got), found, short(want))
	}
}

// wantMissing fails unless key is absent to Get and Has.
func (f *fixture) wantMissing(project, key string) {
	f.t.Helper()
	if got, found := f.get(project, key); found {
		f.t.Fatalf("Get(%q, %q) = %q, want not found", project, short(key), short(got))
	}
	if f.has(project, key) {
		f.t.Fatalf("Has(%q, %q) = true, want false", project, short(key))
	}
}

func (f *fixture) has(project, key string) bool {
	f.t.Helper()
	ok, err := f.s.Has(f.ctx, project, key)
	if err != nil {
		f.t.Fatalf("Has(%q, %q) = %v", project, short(key), err)
	}
	return ok
}

func (f *fixture) del(project, key string) bool {
	f.t.Helper()
	existed, err := f.s.Delete(f.ctx, project, key)
	if err != nil {
		f.t.Fatalf("Delete(%q, %q) = %v", project, short(key), err)
	}
	return existed
}

func (f *fixture) incr(project, key string, delta int64, ttl time.Duration) int64 {
	f.t.Helper()
	n, err := f.s.Incr(f.ctx, project, key, delta, ttl)
	if err != nil {
		f.t.Fatalf("Incr(%q, %q, %d) = %v", project, short(key), delta, err)
	}
	return n
}

func (f *fixture) usage(project string) store.Usage {
	f.t.Helper()
	u, err := f.s.Usage(f.ctx, project)
	if err != nil {
		f.t.Fatalf("Usage(%q) = %v", project, err)
	}
	return u
}

// wantBytes fails unless the project's usage is exactly bytes.
func (f *fixture) wantBytes(project string, bytes int64) {
	f.t.Helper()
	if u := f.usage(project); u.Bytes != bytes {
		f.t.Fatalf("Usage(%q).Bytes = %d, want %d", project, u.Bytes, bytes)
	}
}

func (f *fixture) list(project string, opts store.ListOptions) store.Page {
	f.t.Helper()
	page, err := f.s.List(f.ctx, project, opts)
	if err != nil {
		f.t.Fatalf("List(%q, %+v) = %v", project, opts, err)
	}
	return page
}

// keys lists every live key of the project, following More.
func (f *fixture) keys(project string) []string {
	f.t.Helper()
	var keys []string
	opts := store.ListOptions{}
	for {
		page := f.list(project, opts)
		for _, e := range page.Entries {
			keys = append(keys, e.Key)
		}
		if !page.More {
			return keys
		}
		if len(page.Entries) == 0 {
			f.t.Fatalf("List(%q) returned an empty page with More set", project)
		}
		opts.After = page.Entries[len(page.Entries)-1].Key
	}
}

func (f *fixture) setQuota(project string, quota int64) {
	f.t.Helper()
	if err := f.s.SetQuota(f.ctx, project, quota); err != nil {
		f.t.Fatalf("SetQuota(%q, %d) = %v", project, quota, err)
	}
}

// sweepAll calls Sweep until it finds nothing and returns the total.
func (f *fixture) sweepAll() int64 {
	f.t.Helper()
	var total int64
	for range 10000 {
		n, err := f.s.Sweep(f.ctx)
		if err != nil {
			f.t.Fatalf("Sweep() = %v", err)
		}
		if n < 0 {
			f.t.Fatalf("Sweep() = %d, want a count >= 0", n)
		}
		if n == 0 {
			return total
		}
		total += n
	}
	f.t.Fatalf("Sweep() kept finding entries after 10000 calls")
	return total
}

// wantErr fails unless err matches target.
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s = %v, want an error matching %q", what, err, target)
	}
}

// wantQuotaErr fails unless err is a quota refusal users can recognise.
func wantQuotaErr(t *testing.T, what string, err error) {
	t.Helper()
	wantErr(t, what, err, store.ErrQuotaExceeded)
	if !strings.Contains(err.Error(), "quota exceeded") {
		t.Fatalf("%s = %q, want a message containing %q", what, err, "quota exceeded")
	}
}

// value returns n bytes of printable data.
func value(n int) string { return strings.Repeat("v", n) }

// item builds a store.Item.
func item(key, value string, ttl time.Duration) store.Item {
	return store.Item{Key: key, Value: []byte(value), TTL: ttl}
}

// size is what an entry counts against the quota.
func size(key, value string) int64 { return int64(len(key) + len(value)) }

// short keeps long keys and values readable in failure messages.
func short(s string) string {
	if len(s) <= 40 {
		return s
	}
	return s[:20] + "…" + s[len(s)-10:] + " (" + strconv.Itoa(len(s)) + " bytes)"
}
