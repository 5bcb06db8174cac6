package client_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
)

func TestConditionalWrites(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	ctx := t.Context()

	v1, err := c.SetIf(ctx, "cart", []string{"apple"}, 0, 0)
	if err != nil || v1 == 0 {
		t.Fatalf("SetIf(missing key, 0) = (%d, %v), want a version", v1, err)
	}
	var cart []string
	v, found, err := c.GetVersioned(ctx, "cart", &cart)
	if err != nil || !found || v != v1 || !slices.Equal(cart, []string{"apple"}) {
		t.Fatalf("GetVersioned = (%d, %v, %v) %v, want version %d [apple]", v, found, err, cart, v1)
	}
	v2, err := c.SetIf(ctx, "cart", []string{"apple", "pear"}, 0, v1)
	if err != nil || v2 <= v1 {
		t.Fatalf("SetIf(current version) = (%d, %v)", v2, err)
	}
	_, err = c.SetIf(ctx, "cart", []string{"plum"}, 0, v1)
	if !errors.Is(err, client.ErrConflict) || !slices.Equal(client.ConflictKeys(err), []string{"cart"}) {
		t.Fatalf("SetIf(stale version) = %v (keys %v), want ErrConflict on cart", err, client.ConflictKeys(err))
	}
	if _, err := c.DeleteIf(ctx, "cart", v1); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("DeleteIf(stale version) = %v, want ErrConflict", err)
	}
	if existed, err := c.DeleteIf(ctx, "cart", v2); err != nil || !existed {
		t.Fatalf("DeleteIf(current version) = (%v, %v)", existed, err)
	}
	if _, found, _ := c.GetVersioned(ctx, "cart", &cart); found {
		t.Fatal("cart still there after DeleteIf")
	}

	// SetMany with conditions: all or nothing.
	err = c.SetMany(ctx, []client.Item{
		{Key: "a", Value: 1, If: client.IfAbsent()},
		{Key: "b", Value: 2, If: client.IfVersion(v2)},
		{Key: "c", Value: 3, If: client.IfVersion(v1)},
	})
	if !errors.Is(err, client.ErrConflict) || !slices.Equal(client.ConflictKeys(err), []string{"b", "c"}) {
		t.Fatalf("SetMany with two failing conditions = %v (keys %v)", err, client.ConflictKeys(err))
	}
	if ok, _ := c.Has(ctx, "a"); ok {
		t.Fatal("a refused SetMany wrote a")
	}
	if err := c.SetMany(ctx, []client.Item{{Key: "a", Value: 1, If: client.IfAbsent()}, {Key: "b", Value: 2}}); err != nil {
		t.Fatal(err)
	}
}

func TestSetIfAbsentIsALock(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	ctx := t.Context()
	got, err := c.SetIfAbsent(ctx, "lock:job", "worker-1", time.Hour)
	if err != nil || !got {
		t.Fatalf("first SetIfAbsent = (%v, %v), want the lock", got, err)
	}
	got, err = c.SetIfAbsent(ctx, "lock:job", "worker-2", time.Hour)
	if err != nil || got {
		t.Fatalf("second SetIfAbsent = (%v, %v), want (false, nil)", got, err)
	}
	var holder string
	if _, err := c.Get(ctx, "lock:job", &holder); err != nil || holder != "worker-1" {
		t.Fatalf("holder %q (%v)", holder, err)
	}
	if ttl, found, err := c.TTL(ctx, "lock:job"); err != nil || !found || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("TTL(lock) = (%v, %v, %v), want about an hour", ttl, found, err)
	}
	// A short lock frees itself.
	if got, _ := c.SetIfAbsent(ctx, "lock:short", "w", 50*time.Millisecond); !got {
		t.Fatal("SetIfAbsent of a new short lock failed")
	}
	time.Sleep(100 * time.Millisecond)
	if got, err := c.SetIfAbsent(ctx, "lock:short", "w2", time.Second); err != nil || !got {
		t.Fatalf("SetIfAbsent after the lock's TTL = (%v, %v), want the lock", got, err)
	}
}

func TestTTLAndExpire(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	ctx := t.Context()
	if err := c.Set(ctx, "s", "x", 0); err != nil {
		t.Fatal(err)
	}
	if ttl, found, err := c.TTL(ctx, "s"); err != nil || !found || ttl != 0 {
		t.Fatalf("TTL without expiry = (%v, %v, %v), want (0, true)", ttl, found, err)
	}
	if _, found, err := c.TTL(ctx, "missing"); err != nil || found {
		t.Fatalf("TTL(missing) = (%v, %v)", found, err)
	}
	if existed, err := c.Expire(ctx, "s", 30*time.Second); err != nil || !existed {
		t.Fatalf("Expire = (%v, %v)", existed, err)
	}
	if ttl, _, _ := c.TTL(ctx, "s"); ttl <= 29*time.Second || ttl > 30*time.Second {
		t.Fatalf("TTL after Expire(30s) = %v", ttl)
	}
	if existed, err := c.Expire(ctx, "missing", time.Second); err != nil || existed {
		t.Fatalf("Expire(missing) = (%v, %v)", existed, err)
	}
	if _, err := c.Expire(ctx, "s", -time.Second); !errors.Is(err, client.ErrBadRequest) {
		t.Fatalf("Expire(negative) = %v, want ErrBadRequest", err)
	}
}

func TestUpdate(t *testing.T) {
	_, c := start(t, sidecartest.Options{})
	ctx := t.Context()
	type session struct{ Views int }
	add := func(old *session, found bool) (session, error) {
		if !found {
			return session{Views: 1}, nil
		}
		return session{Views: old.Views + 1}, nil
	}
	for range 3 {
		if _, err := client.Update(ctx, c, "sess", add); err != nil {
			t.Fatal(err)
		}
	}
	var s session
	if _, err := c.Get(ctx, "sess", &s); err != nil || s.Views != 3 {
		t.Fatalf("after three updates: %+v (%v)", s, err)
	}

	// An existing key keeps its expiry.
	if err := c.Set(ctx, "ttl-doc", session{}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Update(ctx, c, "ttl-doc", add); err != nil {
		t.Fatal(err)
	}
	if ttl, found, _ := c.TTL(ctx, "ttl-doc"); !found || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("TTL after Update = %v (found %v), want the hour kept", ttl, found)
	}

	// An error from fn writes nothing.
	boom := errors.New("refused")
	_, err := client.Update(ctx, c, "sess", func(*session, bool) (session, error) { return session{Views: 99}, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("Update with a failing fn = %v, want its error", err)
	}
	if _, err := c.Get(ctx, "sess", &s); err != nil || s.Views != 3 {
		t.Fatalf("after a failed update: %+v", s)
	}
}
