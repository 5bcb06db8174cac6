package pebble

import (
	"bytes"
	"context"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// Get returns the value of key. See store.Store.
func (s *Store) Get(ctx context.Context, project, key string) ([]byte, bool, error) {
	v, found, err := s.GetVersioned(ctx, project, key)
	return v.Value, found, err
}

// GetVersioned returns the value of key and its version. See store.Store.
func (s *Store) GetVersioned(ctx context.Context, project, key string) (store.Versioned, bool, error) {
	if err := s.limits.CheckKey(key); err != nil {
		return store.Versioned{}, false, err
	}
	var v store.Versioned
	err := s.readProject(ctx, project, func(r reader, now int64) error {
		rec, err := r.live(project, []byte(key), now)
		if rec != nil {
			v = store.Versioned{Value: recordValue(rec), Version: recordVersion(rec)}
		}
		return err
	})
	if err != nil {
		return store.Versioned{}, false, err
	}
	return v, v.Value != nil, nil
}

// GetMany returns the value of each key. See store.Store.
func (s *Store) GetMany(ctx context.Context, project string, keys []string) ([][]byte, error) {
	vs, err := s.GetManyVersioned(ctx, project, keys)
	if err != nil {
		return nil, err
	}
	values := make([][]byte, len(vs))
	for i, v := range vs {
		values[i] = v.Value
	}
	return values, nil
}

// GetManyVersioned returns the value and version of each key. See
// store.Store.
func (s *Store) GetManyVersioned(ctx context.Context, project string, keys []string) ([]store.Versioned, error) {
	if err := s.limits.CheckKeys(keys); err != nil {
		return nil, err
	}
	vs := make([]store.Versioned, len(keys))
	err := s.readProject(ctx, project, func(r reader, now int64) error {
		for i, k := range keys {
			rec, err := r.live(project, []byte(k), now)
			if err != nil {
				return err
			}
			if rec != nil {
				vs[i] = store.Versioned{Value: recordValue(rec), Version: recordVersion(rec)}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return vs, nil
}

// TTL returns the remaining time to live of key. See store.Store.
func (s *Store) TTL(ctx context.Context, project, key string) (time.Duration, bool, error) {
	if err := s.limits.CheckKey(key); err != nil {
		return 0, false, err
	}
	var (
		ttl   time.Duration
		found bool
	)
	err := s.readProject(ctx, project, func(r reader, now int64) error {
		rec, err := r.live(project, []byte(key), now)
		if rec != nil {
			found = true
			if e := recordExpiry(rec); e != 0 {
				ttl = time.Duration(e-now) * time.Millisecond
			}
		}
		return err
	})
	return ttl, found, err
}

// Has reports whether key exists. See store.Store.
func (s *Store) Has(ctx context.Context, project, key string) (bool, error) {
	found, err := s.HasMany(ctx, project, []string{key})
	if err != nil {
		return false, err
	}
	return found[0], nil
}

// HasMany reports whether each key exists. See store.Store.
func (s *Store) HasMany(ctx context.Context, project string, keys []string) ([]bool, error) {
	if err := s.limits.CheckKeys(keys); err != nil {
		return nil, err
	}
	found := make([]bool, len(keys))
	err := s.readProject(ctx, project, func(r reader, now int64) error {
		for i, k := range keys {
			rec, err := r.live(project, []byte(k), now)
			if err != nil {
				return err
			}
			found[i] = rec != nil
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}

// List returns a page of live entries in key order. See store.Store.
func (s *Store) List(ctx context.Context, project string, opts store.ListOptions) (store.Page, error) {
	limit := opts.Limit
	if limit <= 0 || limit > store.MaxListLimit {
		limit = store.MaxListLimit
	}
	var page store.Page
	err := s.readProject(ctx, project, func(r reader, now int64) error {
		base := projectPrefix(kindData, project, len(opts.Prefix))
		lower, upper := pageBounds(base, opts.Prefix)
		it, err := r.iter(lower, upper)
		if err != nil {
			return err
		}
		seekPage(it, base, opts.Prefix, opts.After)
		for ; it.Valid(); it.Next() {
			k, rec := it.Key()[len(base):], it.Value()
			if !validRecord(rec) {
				continue
			}
			expiry := recordExpiry(rec)
			if expired(expiry, now) {
				continue
			}
			if len(page.Entries) == limit {
				page.More = true
				break
			}
			e := store.Entry{Key: string(k), Size: recordSize(k, rec), Version: recordVersion(rec)}
			if opts.Values {
				e.Value = bytes.Clone(recordValue(rec))
			}
			if expiry != 0 {
				e.Expires = time.UnixMilli(expiry).UTC()
			}
			page.Entries = append(page.Entries, e)
		}
		return closeIter(it)
	})
	if err != nil {
		return store.Page{}, err
	}
	return page, nil
}

// pageBounds are the iterator bounds of the keys under base that start
// with prefix.
func pageBounds(base []byte, prefix string) (lower, upper []byte) {
	lower = append(bytes.Clone(base), prefix...)
	return lower, prefixEnd(lower)
}

// seekPage positions it at the first key of a page of keys with prefix:
// the first key with it, or, when the caller goes on from a cursor, the
// first key after after. base is the key prefix of the project's range.
func seekPage(it interface {
	First() bool
	SeekGE([]byte) bool
	Next() bool
	Valid() bool
	Key() []byte
}, base []byte, prefix, after string) {
	if after < prefix {
		it.First()
		return
	}
	start := append(bytes.Clone(base), after...)
	it.SeekGE(start)
	if after != "" && it.Valid() && bytes.Equal(it.Key(), start) {
		it.Next()
	}
}

// Usage returns the project's live usage and quota. See store.Store.
func (s *Store) Usage(ctx context.Context, project string) (store.Usage, error) {
	var u store.Usage
	err := s.readProject(ctx, project, func(r reader, now int64) error {
		pu, err := r.projectUsage(project, now)
		u = pu.Usage
		return err
	})
	return u, err
}

// projectUsage is what the project's live entries use at now, and its
// quotas.
func (r reader) projectUsage(name string, now int64) (store.ProjectUsage, error) {
	st, _, err := r.state(name)
	if err != nil {
		return store.ProjectUsage{}, err
	}
	def, err := r.defaultQuota()
	if err != nil {
		return store.ProjectUsage{}, err
	}
	expiredEntries, expiredBytes, err := r.expiredUsage(name, now)
	if err != nil {
		return store.ProjectUsage{}, err
	}
	return store.ProjectUsage{
		Name: name,
		Usage: store.Usage{
			Bytes:   st.bytes - expiredBytes,
			Entries: st.entries - expiredEntries,
			Quota:   quotaOf(st, def),
		},
		Override: st.quota,
	}, nil
}
