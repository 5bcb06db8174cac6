package bolt

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/binary"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/kvsidecar/kvsidecar/store"
)

// The admin calls (store.Admin). Reads run in one read-only transaction
// each and walk the project's data bucket with a cursor, keeping only what
// their result holds; Import is a write request like SetMany's.

// Limits returns the size limits the store enforces.
func (s *Store) Limits() store.Limits { return s.limits }

// viewAll runs fn in a read-only transaction over the whole file.
func (s *Store) viewAll(ctx context.Context, fn func(tx *bbolt.Tx, now int64) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	return s.db.View(func(tx *bbolt.Tx) error { return fn(tx, s.nowMs()) })
}

// DefaultQuota returns the quota of projects without an override.
func (s *Store) DefaultQuota(ctx context.Context) (int64, error) {
	var q int64
	err := s.viewAll(ctx, func(tx *bbolt.Tx, _ int64) error {
		q = (&projectTx{tx: tx}).quota()
		return nil
	})
	return q, err
}

// projectUsage is what p's live entries use at now, and its quotas.
func projectUsage(p *projectTx, now int64) store.ProjectUsage {
	expiredEntries, expiredBytes := p.expiredUsage(now)
	u := store.ProjectUsage{
		Name: p.name,
		Usage: store.Usage{
			Bytes:   p.bytes - expiredBytes,
			Entries: p.entries - expiredEntries,
			Quota:   p.quota(),
		},
	}
	if p.b != nil {
		if q := p.b.Get(keyQuota); q != nil {
			u.Override = decodeInt(q)
		}
	}
	return u
}

// Projects returns a page of the projects in the file. See store.Admin.
func (s *Store) Projects(ctx context.Context, after string, limit int) (store.ProjectPage, error) {
	limit = store.PageLimit(limit)
	var page store.ProjectPage
	err := s.viewAll(ctx, func(tx *bbolt.Tx, now int64) error {
		c := tx.Bucket(bucketProjects).Cursor()
		k, v := c.Seek([]byte(after))
		if after != "" && bytes.Equal(k, []byte(after)) {
			k, v = c.Next()
		}
		for ; k != nil; k, v = c.Next() {
			if v != nil {
				continue // not a bucket
			}
			if len(page.Projects) == limit {
				page.More = true
				break
			}
			page.Projects = append(page.Projects, projectUsage(openProject(tx, string(k)), now))
		}
		return nil
	})
	if err != nil {
		return store.ProjectPage{}, err
	}
	return page, nil
}

// ProjectUsage returns one project's usage and quotas. See store.Admin.
func (s *Store) ProjectUsage(ctx context.Context, project string) (store.ProjectUsage, error) {
	var u store.ProjectUsage
	err := s.view(ctx, project, true, func(p *projectTx, now int64) error {
		u = projectUsage(p, now)
		return nil
	})
	return u, err
}

// SearchKeys returns a page of live keys by prefix and substring. See
// store.Admin. A substring search walks the keys under the prefix; it stops
// after Config.SearchScan keys, so that a rare substring in a large project
// never holds one read transaction for long (a long one delays writers
// that must grow the file), and the caller goes on from KeyPage.Next.
func (s *Store) SearchKeys(ctx context.Context, project string, opts store.SearchOptions) (store.KeyPage, error) {
	limit := store.PageLimit(opts.Limit)
	search := []byte(opts.Search)
	var page store.KeyPage
	err := s.view(ctx, project, false, func(p *projectTx, now int64) error {
		if p.data == nil {
			return nil
		}
		prefix := []byte(opts.Prefix)
		c := p.data.Cursor()
		k, rec := seekPage(c, opts.Prefix, opts.After)
		scanned := 0
		var last []byte // the last key scanned, in the transaction's memory
		for ; k != nil && bytes.HasPrefix(k, prefix); k, rec = c.Next() {
			if scanned == s.cfg.SearchScan {
				page.Next = string(last) // the caller goes on from here
				return nil
			}
			scanned++
			last = k
			if expired(recordExpiry(rec), now) || !bytes.Contains(k, search) {
				continue
			}
			if len(page.Entries) == limit {
				page.Next = page.Entries[limit-1].Key
				return nil
			}
			page.Entries = append(page.Entries, entryOf(k, rec, false))
		}
		return nil
	})
	if err != nil {
		return store.KeyPage{}, err
	}
	return page, nil
}

// entryOf builds the Entry of a record, copying out of the transaction.
func entryOf(k, rec []byte, withValue bool) store.Entry {
	e := store.Entry{Key: string(k), Size: recordSize(k, rec), Version: recordVersion(rec)}
	if withValue {
		e.Value = bytes.Clone(recordValue(rec))
	}
	if expiry := recordExpiry(rec); expiry != 0 {
		e.Expires = time.UnixMilli(expiry).UTC()
	}
	return e
}

// Entry returns the live entry of key with its value. See store.Admin.
func (s *Store) Entry(ctx context.Context, project, key string) (store.Entry, bool, error) {
	if err := s.limits.CheckKey(key); err != nil {
		return store.Entry{}, false, err
	}
	var e store.Entry
	var found bool
	err := s.view(ctx, project, false, func(p *projectTx, now int64) error {
		if rec := p.live([]byte(key), now); rec != nil {
			e, found = entryOf([]byte(key), rec, true), true
		}
		return nil
	})
	return e, found, err
}

// scanLive calls fn for every live entry of the project, in key order, in
// read transactions of at most Config.SearchScan keys each, so that a scan
// of a large project never holds one transaction for long (a long one
// delays a writer that must grow the file). The scan is therefore not a
// snapshot. k and rec are valid only during fn.
func (s *Store) scanLive(ctx context.Context, project string, fn func(k, rec []byte)) error {
	var from []byte // where the next transaction starts; nil: at the first key
	for {
		var resume []byte
		err := s.view(ctx, project, false, func(p *projectTx, now int64) error {
			if p.data == nil {
				return nil
			}
			c := p.data.Cursor()
			k, rec := c.First()
			if from != nil {
				k, rec = c.Seek(from)
			}
			for n := 0; k != nil; k, rec = c.Next() {
				if n == s.cfg.SearchScan {
					resume = bytes.Clone(k)
					return nil
				}
				n++
				if !expired(recordExpiry(rec), now) {
					fn(k, rec)
				}
			}
			return nil
		})
		if err != nil || resume == nil {
			return err
		}
		from = resume
	}
}

// PrefixUsage groups live entries by key prefix. See store.Admin. The keys
// that share a prefix are contiguous in key order, so one pass over the
// keys finishes each group before the next starts, and only the largest
// limit groups are kept.
func (s *Store) PrefixUsage(ctx context.Context, project, delimiter string, limit int) ([]store.PrefixUsage, error) {
	if err := store.CheckDelimiter(delimiter); err != nil {
		return nil, err
	}
	limit = store.PageLimit(limit)
	delim := []byte(delimiter)
	top := newTopK(limit, func(a, b store.PrefixUsage) bool {
		return a.Bytes > b.Bytes || (a.Bytes == b.Bytes && a.Prefix < b.Prefix)
	})
	none := store.PrefixUsage{Prefix: ""}
	var cur store.PrefixUsage
	var curPrefix []byte // a copy: it outlives the transaction
	err := s.scanLive(ctx, project, func(k, rec []byte) {
		size := recordSize(k, rec)
		if curPrefix != nil && bytes.HasPrefix(k, curPrefix) {
			cur.Bytes += size
			cur.Entries++
			return
		}
		i := bytes.Index(k, delim)
		if i < 0 {
			none.Bytes += size
			none.Entries++
			return
		}
		if curPrefix != nil {
			top.add(cur)
		}
		curPrefix = bytes.Clone(k[:i+len(delim)])
		cur = store.PrefixUsage{Prefix: string(curPrefix), Bytes: size, Entries: 1}
	})
	if err != nil {
		return nil, err
	}
	if curPrefix != nil {
		top.add(cur)
	}
	if none.Entries > 0 {
		top.add(none)
	}
	return top.result(), nil
}

// LargestKeys returns the largest live entries. See store.Admin.
func (s *Store) LargestKeys(ctx context.Context, project string, limit int) ([]store.Entry, error) {
	top := newTopK(store.PageLimit(limit), func(a, b store.Entry) bool {
		return a.Size > b.Size || (a.Size == b.Size && a.Key < b.Key)
	})
	err := s.scanLive(ctx, project, func(k, rec []byte) {
		top.add(entryOf(k, rec, false))
	})
	if err != nil {
		return nil, err
	}
	return top.result(), nil
}

// ExpiringBytes sums the live entries expiring within each window. See
// store.Admin. It walks the expiry index from now to the longest window.
// An entry that expires or is rewritten during the walk may be counted by
// the instant the walk started, or missed.
func (s *Store) ExpiringBytes(ctx context.Context, project string, windows ...time.Duration) ([]int64, error) {
	sums := make([]int64, len(windows))
	var longest time.Duration
	for _, w := range windows {
		longest = max(longest, w)
	}
	// Like scanLive, in read transactions of at most Config.SearchScan
	// index rows, all measured from the first one's clock.
	now := int64(-1)
	var from []byte // the index row the next transaction starts at
	for {
		var resume []byte
		err := s.view(ctx, project, true, func(p *projectTx, txNow int64) error {
			if now < 0 {
				now = txNow
				from = binary.BigEndian.AppendUint64(nil, uint64(now+1))
			}
			if p.exp == nil {
				return nil
			}
			end := now + longest.Milliseconds()
			c := p.exp.Cursor()
			n := 0
			for k, _ := c.Seek(from); k != nil; k, _ = c.Next() {
				e := int64(binary.BigEndian.Uint64(k))
				if e > end {
					return nil
				}
				if n == s.cfg.SearchScan {
					resume = bytes.Clone(k)
					return nil
				}
				n++
				rec := p.data.Get(k[8:])
				if rec == nil {
					continue
				}
				size := recordSize(k[8:], rec)
				for i, w := range windows {
					if e <= now+w.Milliseconds() {
						sums[i] += size
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if resume == nil {
			return sums, nil
		}
		from = resume
	}
}

// Import writes entries with their absolute expiries, atomically. See
// store.Admin. Expiries are stored in milliseconds; one with a finer part is
// rounded up, so an entry never expires before the instant it was given.
func (s *Store) Import(ctx context.Context, project string, entries []store.Entry) (int, error) {
	if err := store.CheckProject(project); err != nil {
		return 0, err
	}
	if err := s.limits.CheckImport(entries); err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		return 0, s.closedOr(ctx)
	}
	size := 0
	for _, e := range entries {
		size += len(e.Key) + len(e.Value)
	}
	res := s.submit(ctx, request{project: project, size: size, apply: func(w *writeTx) (result, error) {
		// The last entry of each key wins; expired ones are left out.
		last := make(map[string]int, len(entries))
		for i, e := range entries {
			last[e.Key] = i
		}
		items := make([]store.Item, 0, len(entries))
		expiries := make([]int64, 0, len(entries))
		for i, e := range entries {
			if last[e.Key] != i {
				continue
			}
			var expiry int64
			if !e.Expires.IsZero() {
				expiry = e.Expires.UnixMilli()
				if e.Expires.After(time.UnixMilli(expiry)) {
					expiry++
				}
				if expiry <= w.now {
					continue // expired already (or before 1970, which 0 cannot mean)
				}
			}
			items = append(items, store.Item{Key: e.Key, Value: e.Value})
			expiries = append(expiries, expiry)
		}
		if len(items) == 0 {
			return result{}, nil
		}
		// An import is one write: its entries share the project's next version.
		return w.putAll(w.project(project), items, func(i int) int64 { return expiries[i] })
	}})
	return int(res.n), res.err
}

// topK keeps the k first items of a stream in the order of less, in memory
// proportional to k: a heap whose root is the last of those kept.
type topK[T any] struct {
	k    int
	less func(a, b T) bool
	h    topHeap[T]
}

func newTopK[T any](k int, less func(a, b T) bool) *topK[T] {
	return &topK[T]{k: k, less: less, h: topHeap[T]{less: less}}
}

func (t *topK[T]) add(v T) {
	switch {
	case len(t.h.items) < t.k:
		heap.Push(&t.h, v)
	case t.less(v, t.h.items[0]):
		t.h.items[0] = v
		heap.Fix(&t.h, 0)
	}
}

// result returns the kept items in the order of less.
func (t *topK[T]) result() []T {
	out := slices.Clone(t.h.items)
	slices.SortFunc(out, func(a, b T) int {
		switch {
		case t.less(a, b):
			return -1
		case t.less(b, a):
			return 1
		}
		return 0
	})
	if out == nil {
		out = []T{}
	}
	return out
}

// topHeap is a heap.Interface whose root is the item that comes last in the
// order of less.
type topHeap[T any] struct {
	items []T
	less  func(a, b T) bool
}

func (h topHeap[T]) Len() int           { return len(h.items) }
func (h topHeap[T]) Less(i, j int) bool { return h.less(h.items[j], h.items[i]) }
func (h topHeap[T]) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *topHeap[T]) Push(x any)        { h.items = append(h.items, x.(T)) }
func (h *topHeap[T]) Pop() any {
	v := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return v
}
