package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// model is the reference behaviour of one project: what the store should
// hold and refuse, written as plainly as possible.
type model struct {
	entries map[string]modelEntry
	quota   int64
	now     func() time.Time
}

type modelEntry struct {
	value   string
	expires time.Time // zero: never
}

// live returns the entry of key if it exists and has not expired.
func (m *model) live(key string) (modelEntry, bool) {
	e, ok := m.entries[key]
	if !ok || (!e.expires.IsZero() && !m.now().Before(e.expires)) {
		return modelEntry{}, false
	}
	return e, true
}

// liveState returns the live entries and their usage.
func (m *model) liveState() (map[string]string, int64) {
	state := map[string]string{}
	var used int64
	for k := range m.entries {
		if e, ok := m.live(k); ok {
			state[k] = e.value
			used += size(k, e.value)
		}
	}
	return state, used
}

// set applies a Set or SetMany, or returns the refusal the store must give.
func (m *model) set(items []store.Item) error {
	_, used := m.liveState()
	sizes := map[string]int64{}
	var growth int64
	for _, it := range items {
		old, seen := sizes[it.Key]
		if !seen {
			if e, ok := m.live(it.Key); ok {
				old = size(it.Key, e.value)
			}
		}
		growth += size(it.Key, string(it.Value)) - old
		sizes[it.Key] = size(it.Key, string(it.Value))
	}
	if growth > 0 && used+growth > m.quota {
		return store.ErrQuotaExceeded
	}
	for _, it := range items {
		e := modelEntry{value: string(it.Value)}
		if it.TTL > 0 {
			e.expires = m.now().Add(it.TTL)
		}
		m.entries[it.Key] = e
	}
	return nil
}

func (m *model) delete(key string) bool {
	_, ok := m.live(key)
	delete(m.entries, key)
	return ok
}

func (m *model) incr(key string, delta int64, ttl time.Duration) (int64, error) {
	e, found := m.live(key)
	value, n, err := store.Increment([]byte(e.value), found, delta)
	if err != nil {
		return 0, err
	}
	if !found && ttl > 0 {
		e.expires = m.now().Add(ttl)
	} else if !found {
		e.expires = time.Time{}
	}
	if err := m.set([]store.Item{{Key: key, Value: value}}); err != nil {
		return 0, err
	}
	e.value = string(value)
	m.entries[key] = e
	return n, nil
}

// testUsageModel drives a store and the model through the same random
// operations and checks after each that they agree: on what was refused, on
// Usage.Bytes, and (often) on the whole content.
func testUsageModel(t *testing.T, h Harness) {
	for seed := range uint64(3) {
		t.Run("seed"+strconv.FormatUint(seed, 10), func(t *testing.T) {
			const modelQuota = 2000
			f := open(t, h, Options{DefaultQuota: modelQuota})
			now := time.Now
			if !f.realClock() {
				now = f.clock.Now
			}
			m := &model{entries: map[string]modelEntry{}, quota: modelQuota, now: now}
			rng := rand.New(rand.NewPCG(seed, 42))
			keys := []string{"a", "b", "c", "counter", "user:1", "user:2", "user:10", "a-much-longer-key-name-than-the-rest", "é", "x"}
			pick := func() string { return keys[rng.IntN(len(keys))] }
			randValue := func() string {
				switch rng.IntN(4) {
				case 0:
					return strconv.Itoa(rng.IntN(2000) - 1000) // an integer incr can use
				case 1:
					return ""
				default:
					return value(rng.IntN(400))
				}
			}
			// TTLs in whole milliseconds of 10k+5 and clock steps of 10 ms
			// keep the model and the store off the exact expiry instant,
			// where "expired" could be argued either way.
			randTTL := func() time.Duration {
				if f.realClock() || rng.IntN(3) > 0 {
					return 0
				}
				return time.Duration(10*rng.IntN(50)+5) * time.Millisecond
			}

			const steps = 300
			for step := range steps {
				var what string
				var got, want error
				switch op := rng.IntN(100); {
				case op < 35:
					k, v, ttl := pick(), randValue(), randTTL()
					what = fmt.Sprintf("Set(%q, %d bytes, ttl %v)", k, len(v), ttl)
					want = m.set([]store.Item{item(k, v, ttl)})
					got = f.s.Set(f.ctx, "p", k, []byte(v), ttl)
				case op < 45:
					n := 1 + rng.IntN(4)
					items := make([]store.Item, n)
					for i := range items {
						items[i] = item(pick(), randValue(), randTTL())
					}
					what = fmt.Sprintf("SetMany(%d items)", n)
					want = m.set(items)
					got = f.s.SetMany(f.ctx, "p", items)
				case op < 58:
					k := pick()
					what = fmt.Sprintf("Delete(%q)", k)
					existed, err := f.s.Delete(f.ctx, "p", k)
					got = err
					if wantExisted := m.delete(k); err == nil && existed != wantExisted {
						t.Fatalf("step %d: %s = %v, want %v", step, what, existed, wantExisted)
					}
				case op < 63:
					ks := []string{pick(), pick()}
					if ks[0] == ks[1] {
						ks = ks[:1]
					}
					what = fmt.Sprintf("DeleteMany(%q)", ks)
					existed, err := f.s.DeleteMany(f.ctx, "p", ks)
					got = err
					for i, k := range ks {
						if wantExisted := m.delete(k); err == nil && existed[i] != wantExisted {
							t.Fatalf("step %d: %s[%d] = %v, want %v", step, what, i, existed[i], wantExisted)
						}
					}
				case op < 80:
					k, delta, ttl := pick(), int64(rng.IntN(200)-100), randTTL()
					what = fmt.Sprintf("Incr(%q, %d, ttl %v)", k, delta, ttl)
					n, err := f.s.Incr(f.ctx, "p", k, delta, ttl)
					wantN, wantErr := m.incr(k, delta, ttl)
					got, want = err, wantErr
					if err == nil && wantErr == nil && n != wantN {
						t.Fatalf("step %d: %s = %d, want %d", step, what, n, wantN)
					}
				case op < 82:
					what = "Clear"
					state, _ := m.liveState()
					n, err := f.s.Clear(f.ctx, "p")
					got = err
					if err == nil && n != int64(len(state)) {
						t.Fatalf("step %d: Clear = %d, want %d live entries", step, n, len(state))
					}
					clear(m.entries)
				case op < 86:
					what = "Sweep"
					_, got = f.s.Sweep(f.ctx)
				default:
					if f.realClock() {
						continue
					}
					d := time.Duration(10*rng.IntN(30)) * time.Millisecond
					what = fmt.Sprintf("clock advance by %v", d)
					f.clock.Advance(d)
				}
				if !sameOutcome(got, want) {
					t.Fatalf("step %d: %s = %v, want %v", step, what, got, want)
				}

				state, used := m.liveState()
				if u := f.usage("p"); u.Bytes != used {
					t.Fatalf("step %d, after %s: Usage.Bytes = %d, want %d (live entries %v)", step, what, u.Bytes, used, sortedKeys(state))
				}
				if step%25 == 0 || step == steps-1 {
					checkContent(t, f, "p", state)
				}
			}
			state, used := m.liveState()
			f.sweepAll()
			if u := f.usage("p"); u.Bytes != used || u.Entries != int64(len(state)) {
				t.Fatalf("Usage after the run and a full Sweep = %+v, want %d bytes, %d entries", u, used, len(state))
			}
		})
	}
}

// sameOutcome reports whether a store error is the outcome the model
// predicted: both nil, or the same store sentinel.
func sameOutcome(got, want error) bool {
	if want == nil || got == nil {
		return got == want
	}
	for _, sentinel := range []error{store.ErrQuotaExceeded, store.ErrNotInteger, store.ErrOverflow} {
		if errors.Is(want, sentinel) {
			return errors.Is(got, sentinel)
		}
	}
	return false
}

// checkContent fails unless the project holds exactly state, as seen by
// List, GetMany and Usage.Entries.
func checkContent(t *testing.T, f *fixture, project string, state map[string]string) {
	t.Helper()
	got := map[string]string{}
	opts := store.ListOptions{Values: true, Limit: 7}
	for {
		page := f.list(project, opts)
		for _, e := range page.Entries {
			got[e.Key] = string(e.Value)
			if e.Size != size(e.Key, string(e.Value)) {
				t.Fatalf("List entry %q has Size %d, want %d", e.Key, e.Size, size(e.Key, string(e.Value)))
			}
		}
		if !page.More {
			break
		}
		opts.After = page.Entries[len(page.Entries)-1].Key
	}
	if len(got) != len(state) {
		t.Fatalf("List = keys %v, want %v", sortedKeys(got), sortedKeys(state))
	}
	keys := sortedKeys(state)
	values, err := f.s.GetMany(f.ctx, project, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if got[k] != state[k] || values[i] == nil || string(values[i]) != state[k] {
			t.Fatalf("key %q: List gives %q, GetMany %q, want %q", k, short(got[k]), short(string(values[i])), short(state[k]))
		}
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
