package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/kvsidecar/kvsidecar/protocol"
)

// Versions and conditional writes (PROTOCOL.md §5.3): every entry has a
// version that changes on each write of its key and never repeats, also
// after a delete and re-create. A write conditional on a version fails with
// ErrConflict, writing nothing, when the key has changed since.

// Cond is the condition of a conditional write; the zero Cond is none.
type Cond struct {
	check   bool
	version uint64
}

// IfVersion is the condition that the key exists with version v (as
// GetVersioned returned it); IfVersion(0) is IfAbsent.
func IfVersion(v uint64) Cond { return Cond{check: true, version: v} }

// IfAbsent is the condition that the key does not exist (or has expired).
func IfAbsent() Cond { return Cond{check: true} }

func (c Cond) apply(has *bool, version *uint64) { *has, *version = c.check, c.version }

// ConflictKeys returns the keys whose conditions failed, when err is a
// conflict, or nil.
func ConflictKeys(err error) []string {
	var perr *protocol.Error
	if errors.As(err, &perr) && perr.Code == protocol.CodeConflict {
		return perr.Keys
	}
	return nil
}

// GetVersioned decodes the JSON value of key into v, as Get does, and
// returns its version.
func (c *Client) GetVersioned(ctx context.Context, key string, v any) (version uint64, found bool, err error) {
	cl, err := c.keyCall(ctx, protocol.OpGet, key)
	if err != nil {
		return 0, false, err
	}
	defer putCall(cl)
	if !cl.resp.Found {
		return 0, false, nil
	}
	if err := json.Unmarshal(cl.resp.Value, v); err != nil {
		return 0, true, opError(protocol.OpGet, key, fmt.Errorf("decode value: %w", err))
	}
	return cl.resp.Version, true, nil
}

// SetIf stores v, encoded as JSON, under key if the key's version is
// ifVersion — or, with ifVersion 0, if the key does not exist — and returns
// the new version. When the condition fails nothing is written and the error
// matches ErrConflict.
func (c *Client) SetIf(ctx context.Context, key string, v any, ttl time.Duration, ifVersion uint64) (uint64, error) {
	return c.set(ctx, key, v, ttl, IfVersion(ifVersion))
}

// SetIfAbsent stores v under key only if the key does not exist (or has
// expired), and reports whether it did. With a TTL it is a lock that frees
// itself: the caller that gets true holds it until it deletes the key or the
// TTL passes.
func (c *Client) SetIfAbsent(ctx context.Context, key string, v any, ttl time.Duration) (bool, error) {
	_, err := c.set(ctx, key, v, ttl, IfAbsent())
	if errors.Is(err, ErrConflict) {
		return false, nil
	}
	return err == nil, err
}

func (c *Client) set(ctx context.Context, key string, v any, ttl time.Duration, cond Cond) (uint64, error) {
	jb := getJSONBuffer()
	defer putJSONBuffer(jb)
	b, err := jb.marshal(v)
	if err != nil {
		return 0, opError(protocol.OpSet, key, fmt.Errorf("encode value: %w", err))
	}
	ms, err := c.checkSet(key, b, ttl)
	if err != nil {
		return 0, opError(protocol.OpSet, key, err)
	}
	cl := newCall(protocol.OpSet)
	defer putCall(cl)
	cl.req.Key, cl.req.Value, cl.req.TTL = key, b, ms
	cond.apply(&cl.req.HasIfVersion, &cl.req.IfVersion)
	if err := c.do(ctx, cl); err != nil {
		return 0, opError(protocol.OpSet, key, err)
	}
	return cl.resp.Version, nil
}

// DeleteIf removes key if its version is version, and reports whether it
// existed. When the key has another version, or none, nothing is deleted
// and the error matches ErrConflict.
func (c *Client) DeleteIf(ctx context.Context, key string, version uint64) (existed bool, err error) {
	if err := c.checkKey(key); err != nil {
		return false, opError(protocol.OpDelete, key, err)
	}
	cl := newCall(protocol.OpDelete)
	defer putCall(cl)
	cl.req.Key = key
	IfVersion(version).apply(&cl.req.HasIfVersion, &cl.req.IfVersion)
	if err := c.do(ctx, cl); err != nil {
		return false, opError(protocol.OpDelete, key, err)
	}
	return cl.resp.Bool, nil
}

// TTL returns the time key has left to live (0 when it does not expire)
// and whether it exists.
func (c *Client) TTL(ctx context.Context, key string) (time.Duration, bool, error) {
	cl, err := c.keyCall(ctx, protocol.OpTTL, key)
	if err != nil {
		return 0, false, err
	}
	defer putCall(cl)
	return time.Duration(cl.resp.Int) * time.Millisecond, cl.resp.Found, nil
}

// Expire gives key a new TTL from now (0: no expiry) without rewriting its
// value, and reports whether the key existed; a missing key is left alone.
func (c *Client) Expire(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ms, err := c.checkSet(key, nil, ttl)
	if err != nil {
		return false, opError(protocol.OpExpire, key, err)
	}
	cl := newCall(protocol.OpExpire)
	defer putCall(cl)
	cl.req.Key, cl.req.TTL = key, ms
	if err := c.do(ctx, cl); err != nil {
		return false, opError(protocol.OpExpire, key, err)
	}
	return cl.resp.Bool, nil
}

// Update bounds and backoff of Update.
const (
	// UpdateAttempts is how often Update tries before it gives up with
	// ErrConflict. Each failed attempt means another writer changed the key
	// in between, so under any realistic contention a few suffice; the bound
	// is high so that even dozens of writers hammering one key all get
	// through, and finite so that a key rewritten in a tight loop cannot
	// hold a caller forever.
	UpdateAttempts = 1000
	// updateBackoffMin and updateBackoffMax bound the pause between
	// attempts: it doubles from the minimum up to the maximum, and each
	// pause is drawn at random below it (full jitter) so that writers that
	// collided do not collide again in step.
	updateBackoffMin = 500 * time.Microsecond
	updateBackoffMax = 50 * time.Millisecond
)

// Update applies fn to the value of key and stores the result, without
// losing a concurrent write: fn gets the current value (nil and found false
// when the key does not exist) and returns the new one; the write is
// conditional on the version read, and on a conflict Update reads again and
// calls fn again, after a short random pause. fn may thus run several times
// and must not have side effects beyond computing the value; an error from
// fn ends Update with that error, writing nothing. An existing key keeps its
// expiry (what was left of its TTL when read); a new one gets none. After
// UpdateAttempts conflicts Update fails with an error matching ErrConflict.
// It returns the value stored.
func Update[T any](ctx context.Context, c *Client, key string, fn func(old *T, found bool) (T, error)) (T, error) {
	var zero T
	backoff := updateBackoffMin
	for attempt := 1; ; attempt++ {
		var old T
		version, found, err := c.GetVersioned(ctx, key, &old)
		if err != nil {
			return zero, err
		}
		var ttl time.Duration
		if found {
			left, live, err := c.TTL(ctx, key)
			if err != nil {
				return zero, err
			}
			// A key that expired or changed since the get fails the
			// condition below, and the next attempt reads it again.
			if live {
				ttl = left
			}
		}
		var next T
		if found {
			next, err = fn(&old, true)
		} else {
			next, err = fn(nil, false)
		}
		if err != nil {
			return zero, err
		}
		_, err = c.SetIf(ctx, key, next, ttl, version)
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, ErrConflict) {
			return zero, err
		}
		if attempt == UpdateAttempts {
			return zero, fmt.Errorf("kv update %q: gave up after %d conflicting writes: %w", key, attempt, err)
		}
		pause := time.NewTimer(rand.N(backoff) + 1)
		select {
		case <-ctx.Done():
			pause.Stop()
			return zero, opError(protocol.OpSet, key, ctx.Err())
		case <-pause.C:
		}
		backoff = min(2*backoff, updateBackoffMax)
	}
}
