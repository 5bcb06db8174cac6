package bolt

import (
	"bytes"
	"context"
	"time"

	"go.etcd.io/bbolt"

	"github.com/kvsidecar/kvsidecar/store"
)

// view runs fn in a read-only transaction on the project: with its data
// bucket only, or (full) with its expiry index and usage too. Values fn
// takes out of the transaction must be copies: bbolt's memory is valid only
// inside it.
func (s *Store) view(ctx context.Context, name string, full bool, fn func(p *projectTx, now int64) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := store.CheckProject(name); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	return s.db.View(func(tx *bbolt.Tx) error {
		if full {
			return fn(openProject(tx, name), s.nowMs())
		}
		return fn(openProjectData(tx, name), s.nowMs())
	})
}

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
	err := s.view(ctx, project, false, func(p *projectTx, now int64) error {
		if rec := p.live([]byte(key), now); rec != nil {
			v = store.Versioned{Value: bytes.Clone(recordValue(rec)), Version: recordVersion(rec)}
		}
		return nil
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
	err := s.view(ctx, project, false, func(p *projectTx, now int64) error {
		for i, k := range keys {
			if rec := p.live([]byte(k), now); rec != nil {
				vs[i] = store.Versioned{Value: bytes.Clone(recordValue(rec)), Version: recordVersion(rec)}
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
	err := s.view(ctx, project, false, func(p *projectTx, now int64) error {
		if rec := p.live([]byte(key), now); rec != nil {
			found = true
			if e := recordExpiry(rec); e != 0 {
				ttl = time.Duration(e-now) * time.Millisecond
			}
		}
		return nil
	})
	return ttl, found, err
}

// Has reports whether key exists. See store.Store.
func (s *Store) Has(ctx context.Context, project, key string) (bool, error) {
	if err := s.limits.CheckKey(key); err != nil {
		return false, err
	}
	var found bool
	err := s.view(ctx, project, false, func(p *projectTx, now int64) error {
		found = p.live([]byte(key), now) != nil
		return nil
	})
	return found, err
}

// HasMany reports whether each key exists. See store.Store.
func (s *Store) HasMany(ctx context.Context, project string, keys []string) ([]bool, error) {
	if err := s.limits.CheckKeys(keys); err != nil {
		return nil, err
	}
	found := make([]bool, len(keys))
	err := s.view(ctx, project, false, func(p *projectTx, now int64) error {
		for i, k := range keys {
			found[i] = p.live([]byte(k), now) != nil
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
	err := s.view(ctx, project, false, func(p *projectTx, now int64) error {
		if p.data == nil {
			return nil
		}
		prefix := []byte(opts.Prefix)
		c := p.data.Cursor()
		k, rec := seekPage(c, opts.Prefix, opts.After)
		for ; k != nil && bytes.HasPrefix(k, prefix); k, rec = c.Next() {
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
		return nil
	})
	if err != nil {
		return store.Page{}, err
	}
	return page, nil
}

// Usage returns the project's live usage and quota. See store.Store.
func (s *Store) Usage(ctx context.Context, project string) (store.Usage, error) {
	var u store.Usage
	err := s.view(ctx, project, true, func(p *projectTx, now int64) error {
		expiredEntries, expiredBytes := p.expiredUsage(now)
		u = store.Usage{
			Bytes:   p.bytes - expiredBytes,
			Entries: p.entries - expiredEntries,
			Quota:   p.quota(),
		}
		return nil
	})
	return u, err
}

// seekPage positions c at the first key of a page of keys with prefix: the
// first key with it, or, when the caller goes on from a cursor, the first
// key after after.
func seekPage(c *bbolt.Cursor, prefix, after string) (k, v []byte) {
	start := []byte(prefix)
	if after >= prefix {
		start = []byte(after)
	}
	k, v = c.Seek(start)
	if after != "" && bytes.Equal(k, []byte(after)) {
		k, v = c.Next()
	}
	return k, v
}
