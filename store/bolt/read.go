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
	if err := s.limits.CheckKey(key); err != nil {
		return nil, false, err
	}
	var value []byte
	err := s.view(ctx, project, false, func(p *projectTx, now int64) error {
		if rec := p.live([]byte(key), now); rec != nil {
			value = bytes.Clone(recordValue(rec))
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return value, value != nil, nil
}

// GetMany returns the value of each key. See store.Store.
func (s *Store) GetMany(ctx context.Context, project string, keys []string) ([][]byte, error) {
	if err := s.limits.CheckKeys(keys); err != nil {
		return nil, err
	}
	values := make([][]byte, len(keys))
	err := s.view(ctx, project, false, func(p *projectTx, now int64) error {
		for i, k := range keys {
			if rec := p.live([]byte(k), now); rec != nil {
				values[i] = bytes.Clone(recordValue(rec))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return values, nil
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
		start := prefix
		if opts.After >= opts.Prefix {
			start = []byte(opts.After)
		}
		c := p.data.Cursor()
		k, rec := c.Seek(start)
		if opts.After != "" && bytes.Equal(k, []byte(opts.After)) {
			k, rec = c.Next()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, rec = c.Next() {
			expiry := recordExpiry(rec)
			if expired(expiry, now) {
				continue
			}
			if len(page.Entries) == limit {
				page.More = true
				break
			}
			e := store.Entry{Key: string(k), Size: recordSize(k, rec)}
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
