package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
	"github.com/kvsidecar/kvsidecar/store"
)

// start starts a daemon and dials it; both are closed when the test ends.
func start(t testing.TB, opts sidecartest.Options) (*sidecartest.Daemon, *client.Client) {
	t.Helper()
	d := sidecartest.Start(t, opts)
	c, err := client.Dial(context.Background(), d.Socket)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return d, c
}

func TestDialSocketFromEnv(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{Project: "shop"})
	t.Setenv(client.SocketEnv, d.Socket)
	c, err := client.Dial(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Project(); got != "shop" {
		t.Errorf("Project() = %q, want shop", got)
	}
	if l := c.Limits(); l.MaxKey != store.DefaultMaxKeyBytes || l.MaxValue != store.DefaultMaxValueBytes || l.MaxBatch <= 0 || l.MaxFrame <= 0 {
		t.Errorf("Limits() = %+v", l)
	}
	if err := c.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestDialNoDaemon(t *testing.T) {
	_, err := client.Dial(t.Context(), filepath.Join(t.TempDir(), "nothing.sock"))
	if !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	t.Log(err)
}

func TestDialForbidden(t *testing.T) {
	uidMap := filepath.Join(t.TempDir(), "uids")
	other := os.Getuid() + 1
	if err := os.WriteFile(uidMap, fmt.Appendf(nil, "%d someone-else\n", other), 0o600); err != nil {
		t.Fatal(err)
	}
	d := sidecartest.Start(t, sidecartest.Options{UIDMap: uidMap})
	c, err := client.Dial(t.Context(), d.Socket)
	if err == nil {
		c.Close()
		t.Fatal("Dial succeeded for a caller whose uid is not mapped")
	}
	if !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("err = %v, want ErrForbidden", err)
	}
	t.Log(err)
	if !strings.Contains(err.Error(), fmt.Sprint(os.Getuid())) {
		t.Errorf("error %q does not name the caller's uid", err)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	ctx := t.Context()
	type user struct {
		Name  string   `json:"name"`
		Age   int      `json:"age"`
		Tags  []string `json:"tags"`
		Admin bool     `json:"admin"`
	}
	cases := []struct {
		name   string
		value  any
		stored string // the JSON text the daemon holds
		into   func() any
	}{
		{"object", map[string]any{"name": "John", "n": 1.5}, `{"n":1.5,"name":"John"}`, func() any { return new(map[string]any) }},
		{"struct", user{Name: "Ann", Age: 41, Tags: []string{"a", "b"}}, `{"name":"Ann","age":41,"tags":["a","b"],"admin":false}`, func() any { return new(user) }},
		{"array", []any{1.0, "two", nil, true}, `[1,"two",null,true]`, func() any { return new([]any) }},
		{"string", "héllo <b>&</b>", `"héllo <b>&</b>"`, func() any { return new(string) }},
		{"empty string", "", `""`, func() any { return new(string) }},
		{"integer", int64(1) << 53, `9007199254740992`, func() any { return new(int64) }},
		{"float", 3.25, `3.25`, func() any { return new(float64) }},
		{"false", false, `false`, func() any { return new(bool) }},
		{"null", nil, `null`, func() any { return new(any) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := "json:" + tc.name
			if err := c.Set(ctx, key, tc.value, 0); err != nil {
				t.Fatal(err)
			}
			raw, found, err := c.GetBytes(ctx, key)
			if err != nil || !found || string(raw) != tc.stored {
				t.Fatalf("GetBytes = %q, %v, %v; want %q", raw, found, err, tc.stored)
			}
			dst := tc.into()
			found, err = c.Get(ctx, key, dst)
			if err != nil || !found {
				t.Fatalf("Get = %v, %v", found, err)
			}
			if got := reflect.ValueOf(dst).Elem().Interface(); !reflect.DeepEqual(got, tc.value) {
				t.Errorf("round trip: got %#v, want %#v", got, tc.value)
			}
		})
	}
}

func TestGetMissingLeavesValue(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	v := "untouched"
	found, err := c.Get(t.Context(), "missing", &v)
	if err != nil || found || v != "untouched" {
		t.Fatalf("Get(missing) = %v, %v, v=%q", found, err, v)
	}
	b, found, err := c.GetBytes(t.Context(), "missing")
	if err != nil || found || b != nil {
		t.Fatalf("GetBytes(missing) = %q, %v, %v", b, found, err)
	}
	if err := c.SetBytes(t.Context(), "empty", []byte{}, 0); err != nil {
		t.Fatal(err)
	}
	if b, found, err := c.GetBytes(t.Context(), "empty"); err != nil || !found || b == nil || len(b) != 0 {
		t.Fatalf("GetBytes(empty) = %q (nil %v), %v, %v", b, b == nil, found, err)
	}
}

func TestDeleteHasClear(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	ctx := t.Context()
	for _, k := range []string{"a", "b", "c"} {
		if err := c.Set(ctx, k, k, 0); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := c.Has(ctx, "a"); err != nil || !ok {
		t.Fatalf("Has(a) = %v, %v", ok, err)
	}
	if existed, err := c.Delete(ctx, "a"); err != nil || !existed {
		t.Fatalf("Delete(a) = %v, %v", existed, err)
	}
	if existed, err := c.Delete(ctx, "a"); err != nil || existed {
		t.Fatalf("second Delete(a) = %v, %v", existed, err)
	}
	if ok, err := c.Has(ctx, "a"); err != nil || ok {
		t.Fatalf("Has(a) after delete = %v, %v", ok, err)
	}
	if n, err := c.Clear(ctx); err != nil || n != 2 {
		t.Fatalf("Clear = %d, %v; want 2", n, err)
	}
	if ok, err := c.Has(ctx, "b"); err != nil || ok {
		t.Fatalf("Has(b) after clear = %v, %v", ok, err)
	}
	if u, err := c.Usage(ctx); err != nil || u.Bytes != 0 || u.Entries != 0 {
		t.Fatalf("Usage after clear = %+v, %v", u, err)
	}
}

func TestIncr(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	ctx := t.Context()
	for i, want := range []int64{5, 3, 3} {
		delta := []int64{5, -2, 0}[i]
		n, err := c.Incr(ctx, "hits", delta, time.Hour)
		if err != nil || n != want {
			t.Fatalf("Incr(%d) = %d, %v; want %d", delta, n, err, want)
		}
	}
	var n int64
	if found, err := c.Get(ctx, "hits", &n); err != nil || !found || n != 3 {
		t.Fatalf("Get(hits) = %d, %v, %v", n, found, err)
	}
	if err := c.Set(ctx, "name", "John", 0); err != nil {
		t.Fatal(err)
	}
	_, err := c.Incr(ctx, "name", 1, 0)
	if !errors.Is(err, client.ErrNotInteger) {
		t.Fatalf("Incr on a string: %v, want ErrNotInteger", err)
	}
	if err := c.Set(ctx, "big", int64(1<<62), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Incr(ctx, "big", 1<<62, 0); !errors.Is(err, client.ErrOverflow) {
		t.Fatalf("Incr past int64: %v, want ErrOverflow", err)
	}
}

func TestTTL(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	ctx := t.Context()
	if err := c.Set(ctx, "short", "v", 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// A sub-millisecond TTL rounds up to 1ms; it must not become "no expiry".
	if err := c.Set(ctx, "tiny", "v", time.Nanosecond); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "long", "v", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Incr(ctx, "counter", 1, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitGone(t, c, "short", "tiny", "counter")
	if ok, err := c.Has(ctx, "long"); err != nil || !ok {
		t.Fatalf("Has(long) = %v, %v", ok, err)
	}
	if err := c.Set(ctx, "k", "v", -time.Second); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("negative TTL: %v, want ErrBadRequest", err)
	}
}

// waitGone waits until every key has expired, failing after a few seconds.
func waitGone(t *testing.T, c *client.Client, keys ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		found, err := c.HasMany(t.Context(), keys)
		if err != nil {
			t.Fatal(err)
		}
		if !slicesContains(found, true) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys %q still present: %v", keys, found)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func slicesContains(s []bool, v bool) bool {
	for _, b := range s {
		if b == v {
			return true
		}
	}
	return false
}

func TestMany(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	ctx := t.Context()
	type point struct{ X, Y int }
	err := c.SetMany(ctx, []client.Item{
		{Key: "p:1", Value: point{1, 2}},
		{Key: "p:2", Value: point{3, 4}, TTL: time.Hour},
		{Key: "p:1", Value: point{5, 6}}, // a key given twice takes the later item
	})
	if err != nil {
		t.Fatal(err)
	}
	var pts []point
	found, err := c.GetMany(ctx, []string{"p:1", "nope", "p:2"}, &pts)
	if err != nil {
		t.Fatal(err)
	}
	if want := []point{{5, 6}, {}, {3, 4}}; !reflect.DeepEqual(pts, want) {
		t.Errorf("GetMany values = %v, want %v", pts, want)
	}
	if want := []bool{true, false, true}; !reflect.DeepEqual(found, want) {
		t.Errorf("GetMany found = %v, want %v", found, want)
	}
	if _, err := c.GetMany(ctx, []string{"p:1"}, pts); err == nil {
		t.Error("GetMany into a non-pointer succeeded")
	}

	if err := c.SetManyBytes(ctx, []client.BytesItem{{Key: "b:1", Value: []byte(`1`)}, {Key: "b:2", Value: []byte{}}}); err != nil {
		t.Fatal(err)
	}
	vals, err := c.GetManyBytes(ctx, []string{"b:1", "b:2", "b:3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vals) != 3 || string(vals[0]) != "1" || vals[1] == nil || len(vals[1]) != 0 || vals[2] != nil {
		t.Errorf("GetManyBytes = %q", vals)
	}

	has, err := c.HasMany(ctx, []string{"b:1", "b:3", "p:2"})
	if err != nil || !reflect.DeepEqual(has, []bool{true, false, true}) {
		t.Errorf("HasMany = %v, %v", has, err)
	}
	existed, err := c.DeleteMany(ctx, []string{"b:1", "b:3", "b:1"})
	if err != nil || !reflect.DeepEqual(existed, []bool{true, false, false}) {
		t.Errorf("DeleteMany = %v, %v", existed, err)
	}
	if got, err := c.HasMany(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("HasMany(nil) = %v, %v", got, err)
	}

	tooMany := make([]string, c.Limits().MaxBatch+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprint("k", i)
	}
	if _, err := c.HasMany(ctx, tooMany); !errors.Is(err, client.ErrBadRequest) || !strings.Contains(err.Error(), "too many keys") {
		t.Errorf("HasMany over MaxBatch: %v, want ErrBadRequest naming the limit", err)
	}
}

func TestListAndScan(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	ctx := t.Context()
	const n = 250
	items := make([]client.Item, 0, n)
	for i := range n {
		items = append(items, client.Item{Key: fmt.Sprintf("user:%03d", i), Value: i})
	}
	if err := c.SetMany(ctx, items); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "other", 1, 0); err != nil {
		t.Fatal(err)
	}

	page, err := c.List(ctx, client.ListOptions{Prefix: "user:", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Keys) != 100 || page.Keys[0] != "user:000" || page.Keys[99] != "user:099" || page.Values != nil || page.Cursor == "" {
		t.Fatalf("first page: %d keys %q..%q, values %v, cursor %q", len(page.Keys), page.Keys[0], page.Keys[len(page.Keys)-1], page.Values != nil, page.Cursor)
	}
	page, err = c.List(ctx, client.ListOptions{Prefix: "user:", Cursor: page.Cursor, Limit: 100, Values: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Keys) != 100 || page.Keys[0] != "user:100" || len(page.Values) != 100 || string(page.Values[0]) != "100" {
		t.Fatalf("second page: %d keys from %q, %d values", len(page.Keys), page.Keys[0], len(page.Values))
	}

	i := 0
	for e, err := range c.Scan(ctx, client.ListOptions{Prefix: "user:", Limit: 30, Values: true}) {
		if err != nil {
			t.Fatal(err)
		}
		var v int
		if err := e.Decode(&v); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("user:%03d", i); e.Key != want || v != i {
			t.Fatalf("entry %d = %q:%d, want %q:%d", i, e.Key, v, want, i)
		}
		i++
	}
	if i != n {
		t.Fatalf("Scan yielded %d entries, want %d", i, n)
	}
	for e, err := range c.Scan(ctx, client.ListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Value != nil {
			t.Fatal("Scan without Values returned values")
		}
		break // stopping early must be fine
	}
}

func TestUsage(t *testing.T) {
	_, c := start(t, sidecartest.Options{DefaultQuota: 1 << 20})
	ctx := t.Context()
	if err := c.SetBytes(ctx, "abc", []byte("12345"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.SetBytes(ctx, "de", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	u, err := c.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (client.Usage{Bytes: 3 + 5 + 2 + 1, Entries: 2, Quota: 1 << 20}); u != want {
		t.Fatalf("Usage = %+v, want %+v", u, want)
	}
}

func TestQuotaExceeded(t *testing.T) {
	_, c := start(t, sidecartest.Options{DefaultQuota: 1000})
	ctx := t.Context()
	if err := c.SetBytes(ctx, "a", make([]byte, 900), 0); err != nil {
		t.Fatal(err)
	}
	err := c.SetBytes(ctx, "b", make([]byte, 200), 0)
	if !errors.Is(err, client.ErrQuotaExceeded) {
		t.Fatalf("err = %v, want ErrQuotaExceeded", err)
	}
	if !strings.Contains(err.Error(), "quota exceeded") {
		t.Errorf("message %q does not contain \"quota exceeded\"", err)
	}
	err = c.SetMany(ctx, []client.Item{{Key: "c", Value: 1}, {Key: "d", Value: strings.Repeat("x", 200)}})
	if !errors.Is(err, client.ErrQuotaExceeded) {
		t.Fatalf("SetMany: err = %v, want ErrQuotaExceeded", err)
	}
	if has, err := c.HasMany(ctx, []string{"b", "c", "d"}); err != nil || slicesContains(has, true) {
		t.Fatalf("a refused write left entries: %v, %v", has, err)
	}
	// Freeing space makes room at once.
	if _, err := c.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetBytes(ctx, "b", make([]byte, 200), 0); err != nil {
		t.Fatal(err)
	}
}

func TestErrors(t *testing.T) {
	_, c := start(t, sidecartest.Options{Limits: store.Limits{MaxKeyBytes: 16, MaxValueBytes: 64 << 10}})
	ctx := t.Context()
	big := make([]byte, 60<<10)
	cases := []struct {
		name string
		call func() error
		want error
		msg  string
	}{
		{"key too large", func() error { return c.Set(ctx, strings.Repeat("k", 17), 1, 0) }, client.ErrKeyTooLarge, "the limit is 16"},
		{"key too large in get", func() error { _, err := c.Has(ctx, strings.Repeat("k", 17)); return err }, client.ErrKeyTooLarge, "key too large"},
		{"key too large in batch", func() error { _, err := c.GetManyBytes(ctx, []string{"ok", strings.Repeat("k", 17)}); return err }, client.ErrKeyTooLarge, "key too large"},
		{"value too large", func() error { return c.SetBytes(ctx, "k", make([]byte, 64<<10+1), 0) }, client.ErrValueTooLarge, "value too large"},
		{"empty key", func() error { return c.Set(ctx, "", 1, 0) }, client.ErrBadRequest, "key"},
		{"invalid utf-8 key", func() error { _, err := c.Delete(ctx, "\xff"); return err }, client.ErrBadRequest, "UTF-8"},
		{"not an integer", func() error { _, err := c.Incr(ctx, "str", 1, 0); return err }, client.ErrNotInteger, "integer"},
		{"frame too large", func() error {
			items := make([]client.BytesItem, 40)
			for i := range items {
				items[i] = client.BytesItem{Key: fmt.Sprint("big", i), Value: big}
			}
			return c.SetManyBytes(ctx, items)
		}, client.ErrFrameTooLarge, "frame too large"},
	}
	if err := c.Set(ctx, "str", "abc", 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q does not contain %q", err, tc.msg)
			}
			// The connection stays usable after a request error.
			if err := c.Ping(ctx); err != nil {
				t.Fatalf("ping after the error: %v", err)
			}
		})
	}
}

func TestConcurrentCalls(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	ctx := t.Context()
	const workers, ops = 64, 100
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				for i := range ops {
					key := fmt.Sprintf("w%d:%d", w, i%10)
					want := map[string]int{"w": w, "i": i}
					if err := c.Set(ctx, key, want, 0); err != nil {
						return err
					}
					var got map[string]int
					if found, err := c.Get(ctx, key, &got); err != nil || !found || !reflect.DeepEqual(got, want) {
						return fmt.Errorf("get %s = %v, %v, %v; want %v", key, got, found, err, want)
					}
					// Writes of one connection to one key are applied one after
					// another, each durable, so the shared key is hit sparingly.
					if i%10 == 0 {
						if _, err := c.Incr(ctx, "shared", 1, 0); err != nil {
							return err
						}
					}
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var total int
	if _, err := c.Get(ctx, "shared", &total); err != nil || total != workers*ops/10 {
		t.Fatalf("shared counter = %d, %v; want %d", total, err, workers*ops/10)
	}
}

// Callers whose contexts end at any moment — before their request leaves,
// while they read the socket for everyone, while they wait for another to
// read — never get another caller's answer, never hang, and leave the
// connection working.
func TestConcurrentCallsGivingUp(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	const workers, ops = 32, 200
	for w := range workers {
		if err := c.SetBytes(t.Context(), fmt.Sprint("w", w), []byte(fmt.Sprint(w)), 0); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var answered, gaveUp atomic.Int64
	for w := range workers {
		wg.Go(func() {
			key, want := fmt.Sprint("w", w), fmt.Sprint(w)
			for i := range ops {
				// Cancelled after 0–2 ms, a few round trips (more under -race), so that
				// contexts end at every stage of a call. (Cancelled, not
				// timed out: a deadline would travel to the daemon.)
				ctx, cancel := context.WithCancel(t.Context())
				time.AfterFunc(time.Duration((w*7+i*13)%2000)*time.Microsecond, cancel)
				start := time.Now()
				v, found, err := c.GetBytes(ctx, key)
				elapsed := time.Since(start)
				cancel()
				switch {
				case err == nil && (!found || string(v) != want):
					t.Errorf("get %s = %q, %v; want %q", key, v, found, want)
					return
				case err == nil:
					answered.Add(1)
				case errors.Is(err, context.Canceled):
					gaveUp.Add(1)
				default:
					t.Errorf("get %s: %v", key, err)
					return
				}
				if elapsed > 5*time.Second {
					t.Errorf("get %s returned after %v, its context ended within 2ms", key, elapsed)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d calls answered, %d gave up", answered.Load(), gaveUp.Load())
	for w := range workers {
		if v, _, err := c.GetBytes(t.Context(), fmt.Sprint("w", w)); err != nil || string(v) != fmt.Sprint(w) {
			t.Fatalf("get w%d afterwards = %q, %v", w, v, err)
		}
	}
}

// TestCallsTimingOutAndCancelled: callers whose deadlines (sent to the
// daemon, so that it gives up on some requests itself) and cancellations
// end at every stage of a call, mixed on one connection, get either their
// own value or their context's error, and the daemon goes on serving. A
// store that looked at a request after answering it once answered some
// twice here, and the daemon crashed.
func TestCallsTimingOutAndCancelled(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	const workers, ops = 32, 300
	for w := range workers {
		if err := c.SetBytes(t.Context(), fmt.Sprint("w", w), []byte(fmt.Sprint(w)), 0); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			key, want := fmt.Sprint("w", w), fmt.Sprint(w)
			for i := range ops {
				var ctx context.Context
				var cancel context.CancelFunc
				if i%3 != 2 {
					ctx, cancel = context.WithTimeout(t.Context(), time.Duration((w*7+i*13)%300)*time.Microsecond)
				} else {
					ctx, cancel = context.WithCancel(t.Context())
					time.AfterFunc(time.Duration((w*11+i*17)%300)*time.Microsecond, cancel)
				}
				v, found, err := c.GetBytes(ctx, key)
				cancel()
				switch {
				case err == nil && (!found || string(v) != want):
					t.Errorf("get %s = %q, %v; want %q", key, v, found, want)
					return
				case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
					errors.Is(err, client.ErrUnavailable):
				default:
					t.Errorf("get %s: %v", key, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for w := range workers {
		if v, _, err := c.GetBytes(t.Context(), fmt.Sprint("w", w)); err != nil || string(v) != fmt.Sprint(w) {
			t.Fatalf("get w%d afterwards = %q, %v", w, v, err)
		}
	}
}

func TestConnsPool(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{})
	c, err := client.DialOptions(t.Context(), client.Options{Socket: d.Socket, Conns: 3, ClientName: "pool-test/1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 50 {
				if _, err := c.Incr(t.Context(), "n", 1, 0); err != nil {
					t.Errorf("%d/%d: %v", i, j, err)
					return
				}
			}
		})
	}
	wg.Wait()
	var n int
	if _, err := c.Get(t.Context(), "n", &n); err != nil || n != 16*50 {
		t.Fatalf("n = %d, %v", n, err)
	}
}

func TestContextEnded(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	startAt := time.Now()
	if err := c.Set(cancelled, "k", 1, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("Set with a cancelled ctx: %v, want context.Canceled", err)
	}
	expired, cancel2 := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel2()
	if _, _, err := c.GetBytes(expired, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get with an expired ctx: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(startAt); d > time.Second {
		t.Errorf("ended contexts took %v to be honoured", d)
	}
	if ok, err := c.Has(t.Context(), "k"); err != nil || ok {
		t.Fatalf("Has(k) = %v, %v: the cancelled set must not have been sent", ok, err)
	}
}

func TestReconnectAfterRestart(t *testing.T) {
	d, c := start(t, sidecartest.Options{Project: "shop"})
	ctx := t.Context()
	if err := c.Set(ctx, "k", "before", 0); err != nil {
		t.Fatal(err)
	}
	d.Restart()
	// The first call after the restart re-dials by itself.
	var v string
	if found, err := c.Get(ctx, "k", &v); err != nil || !found || v != "before" {
		t.Fatalf("Get after restart = %q, %v, %v", v, found, err)
	}
	if c.Project() != "shop" {
		t.Errorf("Project() = %q after reconnect", c.Project())
	}

	d.Stop()
	if err := c.Ping(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("Ping with the daemon stopped: %v, want ErrUnavailable", err)
	}
	d.Restart() // Stop was already done; this starts it again
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping after the daemon came back: %v", err)
	}
}

func TestInFlightCallsFailWhenDaemonStops(t *testing.T) {
	d, c := start(t, sidecartest.Options{})
	ctx := t.Context()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var (
		mu       sync.Mutex
		failures []error
	)
	for i := range 16 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.Set(ctx, fmt.Sprint("k", i), n, 0); err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	d.Restart()
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d calls failed across the restart", len(failures))
	for _, e := range failures[:min(3, len(failures))] {
		t.Log(e)
	}
	for _, err := range failures {
		if !errors.Is(err, client.ErrUnavailable) {
			t.Errorf("a call failed with %v, want an error matching ErrUnavailable", err)
		}
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping after restart: %v", err)
	}
}

func TestClose(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	if err := c.Set(t.Context(), "k", 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Has(t.Context(), "k"); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("call after Close: %v, want ErrClosed", err)
	}
}
