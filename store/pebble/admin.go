package pebble

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/binary"
	"slices"
	"time"

	"github.com/kvsidecar/kvsidecar/store"
)

// The admin calls (store.Admin). Reads run on a snapshot each and walk the
// project's data range with an iterator, keeping only what their result
// holds; Import is a write request like SetMany's.

// Limits returns the size limits the store enforces.
func (s *Store) Limits() store.Limits { return s.limits }

// DefaultQuota returns the quota of projects without an override.
func (s *Store) DefaultQuota(ctx context.Context) (int64, error) {
	var q int64
	err := s.read(ctx, func(r reader, _ int64) error {
		def, err := r.defaultQuota()
		q = quotaOf(projectState{}, def)
		return err
	})
	return q, err
}

// Projects returns a page of the projects in the store. See store.Admin.
func (s *Store) Projects(ctx context.Context, after string, limit int) (store.ProjectPage, error) {
	limit = store.PageLimit(limit)
	var page store.ProjectPage
	err := s.read(ctx, func(r reader, now int64) error {
		base := []byte{kindProject}
		it, err := r.iter(base, prefixEnd(base))
		if err != nil {
			return err
		}
		// Collect the names first: each project's usage is a read of its own.
		var names []string
		seekPage(it, base, "", after)
		for ; it.Valid(); it.Next() {
			if len(names) == limit {
				page.More = true
				break
			}
			names = append(names, string(it.Key()[1:]))
		}
		if err := closeIter(it); err != nil {
			return err
		}
		for _, name := range names {
			u, err := r.projectUsage(name, now)
			if err != nil {
				return err
			}
			page.Projects = append(page.Projects, u)
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
	err := s.readProject(ctx, project, func(r reader, now int64) error {
		var err error
		u, err = r.projectUsage(project, now)
		return err
	})
	return u, err
}

// SearchKeys returns a page of live keys by prefix and substring. See
// store.Admin. A substring search walks the keys under the prefix; it stops
// after Config.SearchScan keys, so that one search never holds a snapshot
// (and the files it pins) for long, and the caller goes on from
// KeyPage.Next.
func (s *Store) SearchKeys(ctx context.Context, project string, opts store.SearchOptions) (store.KeyPage, error) {
	limit := store.PageLimit(opts.Limit)
	search := []byte(opts.Search)
	var page store.KeyPage
	err := s.readProject(ctx, project, func(r reader, now int64) error {
		base := projectPrefix(kindData, project, len(opts.Prefix))
		lower, upper := pageBounds(base, opts.Prefix)
		it, err := r.iter(lower, upper)
		if err != nil {
			return err
		}
		seekPage(it, base, opts.Prefix, opts.After)
		scanned := 0
		var last []byte
		for ; it.Valid(); it.Next() {
			k, rec := it.Key()[len(base):], it.Value()
			if scanned == s.cfg.SearchScan {
				page.Next = string(last) // the caller goes on from here
				break
			}
			scanned++
			last = append(last[:0], k...)
			if !validRecord(rec) || expired(recordExpiry(rec), now) || !bytes.Contains(k, search) {
				continue
			}
			if len(page.Entries) == limit {
				page.Next = page.Entries[limit-1].Key
				break
			}
			page.Entries = append(page.Entries, entryOf(k, rec, false))
		}
		return closeIter(it)
	})
	if err != nil {
		return store.KeyPage{}, err
	}
	return page, nil
}

// entryOf builds the Entry of a record, copying it.
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
	err := s.readProject(ctx, project, func(r reader, now int64) error {
		rec, err := r.live(project, []byte(key), now)
		if rec != nil {
			e, found = entryOf([]byte(key), rec, true), true
		}
		return err
	})
	return e, found, err
}

// scanLive calls fn for every live entry of the project, in key order, in
// reads of at most Config.SearchScan keys each, each on the snapshot
// current when it starts: the scan is therefore not one snapshot. k and rec
// are valid only during fn.
func (s *Store) scanLive(ctx context.Context, project string, fn func(k, rec []byte)) error {
	base := projectPrefix(kindData, project, 0)
	from := base // where the next read starts
	for {
		var resume []byte
		err := s.readProject(ctx, project, func(r reader, now int64) error {
			it, err := r.iter(from, prefixEnd(base))
			if err != nil {
				return err
			}
			n := 0
			for it.First(); it.Valid(); it.Next() {
				if n == s.cfg.SearchScan {
					resume = bytes.Clone(it.Key())
					break
				}
				n++
				k, rec := it.Key()[len(base):], it.Value()
				if validRecord(rec) && !expired(recordExpiry(rec), now) {
					fn(k, rec)
				}
			}
			return closeIter(it)
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
	base := projectPrefix(kindExp, project, 8)
	// Like scanLive, in reads of at most Config.SearchScan index rows, all
	// measured from the first one's clock.
	now := int64(-1)
	var from []byte // the index row the next read starts at
	for {
		var resume []byte
		err := s.readProject(ctx, project, func(r reader, txNow int64) error {
			if now < 0 {
				now = txNow
				from = binary.BigEndian.AppendUint64(bytes.Clone(base), uint64(now+1))
			}
			end := binary.BigEndian.AppendUint64(bytes.Clone(base), uint64(now+longest.Milliseconds()+1))
			it, err := r.iter(from, end)
			if err != nil {
				return err
			}
			n := 0
			for it.First(); it.Valid(); it.Next() {
				row := it.Key()[len(base):]
				if len(row) < 8 {
					continue
				}
				if n == s.cfg.SearchScan {
					resume = bytes.Clone(it.Key())
					break
				}
				n++
				e, key := int64(binary.BigEndian.Uint64(row)), row[8:]
				rec, err := r.live(project, key, -1)
				if err != nil {
					_ = it.Close()
					return err
				}
				if rec == nil {
					continue
				}
				size := recordSize(key, rec)
				for i, w := range windows {
					if e <= now+w.Milliseconds() {
						sums[i] += size
					}
				}
			}
			return closeIter(it)
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
