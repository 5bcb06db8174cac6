package store

import (
	"context"
	"fmt"
	"time"
)

// Admin is what the admin API needs from a backend beyond the calls the
// socket serves: listing projects, searching and reading keys with their
// sizes and expiries, analysing usage, and writing entries with the expiries
// an export recorded. Every Store implements it.
//
// The admin names projects itself (the socket's callers never can), so
// every call takes any valid project name; a project that has never been
// written reads as empty, with the default quota.
//
// Nothing here loads a whole project into memory: pages are bounded by
// their limits, and aggregates are computed while scanning (on Pebble, in
// short reads, each on its own snapshot, so not from one snapshot) or by
// the database (on PostgreSQL).
type Admin interface {
	// Limits returns the key and value size limits the store enforces.
	Limits() Limits
	// DefaultQuota returns the quota of projects without an override.
	DefaultQuota(ctx context.Context) (int64, error)
	// Projects returns the projects the store knows (every project that was
	// ever written or given a quota override) whose name sorts after after,
	// in byte order of names, at most limit of them (<= 0 or more than
	// MaxListLimit means MaxListLimit).
	Projects(ctx context.Context, after string, limit int) (ProjectPage, error)
	// ProjectUsage returns one project's usage, quota and override.
	ProjectUsage(ctx context.Context, project string) (ProjectUsage, error)
	// SearchKeys returns live entries, without values, whose key starts with
	// opts.Prefix, contains opts.Search and sorts after opts.After, in byte
	// order of keys, at most opts.Limit of them. A backend may end a page
	// early, after scanning a bounded number of keys (see KeyPage).
	SearchKeys(ctx context.Context, project string, opts SearchOptions) (KeyPage, error)
	// Entry returns the live entry of key with its value, size and expiry.
	Entry(ctx context.Context, project, key string) (Entry, bool, error)
	// PrefixUsage groups the project's live entries by the part of their key
	// up to and including the first delimiter (keys without it fall under
	// ""), and returns the limit groups that use the most bytes, largest
	// first (ties in prefix order).
	PrefixUsage(ctx context.Context, project, delimiter string, limit int) ([]PrefixUsage, error)
	// LargestKeys returns the limit live entries that use the most bytes,
	// largest first (ties in key order), without values.
	LargestKeys(ctx context.Context, project string, limit int) ([]Entry, error)
	// ExpiringBytes returns, for each window, what the project's live
	// entries that expire within it (from now) use.
	ExpiringBytes(ctx context.Context, project string, windows ...time.Duration) ([]int64, error)
	// Import writes entries with absolute expiries (zero Expires: none),
	// atomically: all of them or none. Entries whose expiry has passed when
	// the write is applied are skipped; it returns how many keys were written.
	// It checks the quota as SetMany does; a key given twice takes the last
	// entry's value. At most MaxBatchItems entries.
	Import(ctx context.Context, project string, entries []Entry) (written int, err error)
}

// ProjectUsage is one project's storage use and quota.
type ProjectUsage struct {
	Name string
	Usage
	// Override is the project's own quota in bytes, or 0 when the default
	// applies.
	Override int64
}

// ProjectPage is one page of Projects. More is true when projects beyond
// this page exist; the next page starts after the last one's name.
type ProjectPage struct {
	Projects []ProjectUsage
	More     bool
}

// SearchOptions selects a page of SearchKeys.
type SearchOptions struct {
	Prefix string // only keys starting with Prefix
	Search string // only keys containing Search (bytes, case-sensitive); "" matches all
	After  string // only keys sorting strictly after After
	Limit  int    // at most this many; <= 0 or > MaxListLimit means MaxListLimit
}

// KeyPage is one page of SearchKeys. Next is "" when no key after the page
// matches; otherwise the next page starts After Next. Next is the last
// entry's key, or — when the backend stopped scanning before the page was
// full, so that one search never holds the store for long — the last key
// it scanned: such a page may hold fewer entries than asked, or none.
type KeyPage struct {
	Entries []Entry
	Next    string
}

// PrefixUsage is what the live entries under one key prefix use.
type PrefixUsage struct {
	Prefix  string
	Bytes   int64
	Entries int64
}

// CheckImport validates the entries of an Import against the limits.
func (l Limits) CheckImport(entries []Entry) error {
	if len(entries) > MaxBatchItems {
		return fmt.Errorf("%w: %d entries, the limit is %d", ErrTooManyItems, len(entries), MaxBatchItems)
	}
	for i, e := range entries {
		if err := l.CheckKey(e.Key); err != nil {
			return fmt.Errorf("entries[%d]: %w", i, err)
		}
		if err := l.CheckValue(e.Value); err != nil {
			return fmt.Errorf("entries[%d]: %w", i, err)
		}
	}
	return nil
}

// CheckDelimiter validates the delimiter of a PrefixUsage.
func CheckDelimiter(delimiter string) error {
	if delimiter == "" {
		return fmt.Errorf("%w: delimiter is empty", ErrBadArgument)
	}
	return nil
}

// PageLimit turns a requested page size into the one a backend uses: <= 0
// or more than MaxListLimit means MaxListLimit.
func PageLimit(limit int) int {
	if limit <= 0 || limit > MaxListLimit {
		return MaxListLimit
	}
	return limit
}
