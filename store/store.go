// Package store defines the key-value store that the sidecar serves, the
// semantics every backend keeps, and the errors callers match with errors.Is.
//
// Two backends implement Store: store/pebble (an embedded Pebble directory,
// for one daemon) and store/postgres (PostgreSQL, shared by every daemon of
// a cluster). store/storetest holds the conformance suite both must pass.
//
// # Semantics
//
//   - Every operation is confined to one project, named by the caller of the
//     Store (the sidecar, which learns it from the socket's peer credentials).
//   - Keys are non-empty UTF-8 strings of at most Limits.MaxKeyBytes bytes.
//     Values are opaque bytes of at most Limits.MaxValueBytes bytes.
//   - A TTL of 0 means no expiry; a negative TTL is an error. An entry whose
//     expiry has passed is invisible at once to Get, Has, the Many forms, List
//     and Incr, even before a sweeper removes it.
//   - Usage of a project is the sum of len(key)+len(value) over its live
//     entries. A write that would push usage above the project's quota fails
//     with ErrQuotaExceeded and writes nothing; overwrites count the
//     difference; Delete and Clear free space at once. Entries that have
//     already expired never cause a refusal.
//   - A write returns only after it is durable (fsync or database commit).
//   - A write that returned is seen by every read that starts after it.
//   - SetMany is atomic: every entry is written, or none is.
//   - An entry expires at its expiry instant: at now == expiry it is gone.
//   - Keys may hold any valid UTF-8, NUL included; they sort by their bytes.
//   - Empty *Many calls succeed with empty results. A negative SetQuota and
//     a SetDefaultQuota of 0 or less fail with ErrBadArgument.
//   - Incr keeps the value as a JSON integer (decimal ASCII digits with an
//     optional leading '-'); a missing or expired key counts as 0 and gets the
//     TTL given; an existing key keeps its expiry. Incr on a value that is not
//     a JSON integer fails with ErrNotInteger.
//
// # Versions and conditions
//
//   - Every entry has a version: a positive integer that changes on every
//     write of its key (Set, SetMany, Incr, Expire) and is strictly greater
//     than any version the key had before, also after a Delete, a Clear or an
//     expiry and a re-create, across restarts and across every daemon that
//     shares the store. Callers may compare versions for equality only.
//     Backends draw versions from one counter per project, kept with the
//     project's usage and advanced under the same lock (PostgreSQL) or by
//     the one committer, in the same batch (Pebble), as the write.
//   - A write may carry a Cond. IfAbsent holds when the key does not exist
//     or has expired; IfVersion(n) holds when the key is live with version
//     n. A write whose condition fails writes nothing and returns a
//     *ConflictError (errors.Is(err, ErrConflict)) that names every failing
//     key and whether it exists. A SetMany with conditions is all or
//     nothing: if any item's condition fails, no item is written, and the
//     error lists every failing item. A condition on a key given twice in
//     one SetMany is checked against the stored entry, not the earlier item.
//   - Conditions are decided before the quota: a write that fails its
//     condition reports the conflict even if it would not fit either.
//   - TTL reads a key's remaining time to live; Expire replaces it without
//     rewriting the value (0 removes the expiry). Neither changes the
//     project's usage: the entry's size is unchanged, so Expire is never
//     refused for quota.
package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Store is a project-scoped, persistent key-value store. Implementations are
// safe for concurrent use.
type Store interface {
	// Get returns the value of key, and whether it exists (and has not expired).
	Get(ctx context.Context, project, key string) (value []byte, found bool, err error)
	// GetMany returns one value per key, in order; nil marks a missing key
	// (a present empty value is a non-nil empty slice).
	GetMany(ctx context.Context, project string, keys []string) ([][]byte, error)
	// Has reports whether key exists.
	Has(ctx context.Context, project, key string) (bool, error)
	// HasMany reports, per key in order, whether it exists.
	HasMany(ctx context.Context, project string, keys []string) ([]bool, error)

	// Set stores value under key. ttl 0 means no expiry; an overwrite
	// replaces the expiry too.
	Set(ctx context.Context, project, key string, value []byte, ttl time.Duration) error
	// SetMany stores every item atomically: all are written or none is.
	// A key given twice takes the last item's value.
	SetMany(ctx context.Context, project string, items []Item) error
	// Delete removes key and reports whether it existed (and had not expired).
	Delete(ctx context.Context, project, key string) (existed bool, err error)
	// DeleteMany removes keys and reports, per key in order, whether it existed.
	DeleteMany(ctx context.Context, project string, keys []string) ([]bool, error)
	// Clear removes every entry of the project and returns how many live
	// entries it removed.
	Clear(ctx context.Context, project string) (int64, error)
	// Incr adds delta to the integer stored under key and returns the new
	// value. See the package doc for its rules.
	Incr(ctx context.Context, project, key string, delta int64, ttl time.Duration) (int64, error)

	// GetVersioned is Get with the entry's version.
	GetVersioned(ctx context.Context, project, key string) (v Versioned, found bool, err error)
	// GetManyVersioned is GetMany with each entry's version; a missing key
	// has a nil Value and version 0.
	GetManyVersioned(ctx context.Context, project string, keys []string) ([]Versioned, error)
	// SetIf stores value under key if cond holds and returns the entry's new
	// version. A failed condition is a *ConflictError and writes nothing.
	SetIf(ctx context.Context, project, key string, value []byte, ttl time.Duration, cond Cond) (version uint64, err error)
	// SetManyIf is SetMany returning each item's new version, in order.
	// Items' conditions are honoured by both: all hold, or nothing is
	// written and the *ConflictError lists every item whose condition failed.
	SetManyIf(ctx context.Context, project string, items []Item) (versions []uint64, err error)
	// DeleteIf removes key if cond holds and reports whether it existed. A
	// failed condition is a *ConflictError and deletes nothing.
	DeleteIf(ctx context.Context, project, key string, cond Cond) (existed bool, err error)
	// TTL returns the remaining time to live of key (0 when it does not
	// expire) and whether it exists.
	TTL(ctx context.Context, project, key string) (ttl time.Duration, found bool, err error)
	// Expire replaces the expiry of key with ttl from now (0: never), keeping
	// its value, and returns its new version and whether it existed. A
	// missing or expired key is left alone.
	Expire(ctx context.Context, project, key string, ttl time.Duration) (version uint64, existed bool, err error)

	// List returns live entries whose key starts with opts.Prefix and sorts
	// after opts.After, in byte order of keys, at most opts.Limit of them.
	List(ctx context.Context, project string, opts ListOptions) (Page, error)
	// Usage returns the project's bytes used, entry count and quota.
	Usage(ctx context.Context, project string) (Usage, error)

	// SetQuota sets a per-project quota in bytes; 0 removes the override so
	// the default quota applies again.
	SetQuota(ctx context.Context, project string, quota int64) error
	// SetDefaultQuota sets the quota of every project without an override.
	SetDefaultQuota(ctx context.Context, quota int64) error

	// Sweep removes one bounded batch of expired entries, frees their quota
	// and returns how many it removed. Backends call it from their own
	// background sweeper; tests call it to make removal happen now.
	Sweep(ctx context.Context) (int64, error)

	// Ping reports whether the store can serve requests now; the daemon's
	// readiness check calls it.
	Ping(ctx context.Context) error
	// Close finishes queued writes, stops background work and releases the
	// store. Calls after Close, a second Close included, fail with ErrClosed.
	Close() error

	// Admin holds what the admin API needs (see admin.go).
	Admin
}

// Item is one entry of a SetMany.
type Item struct {
	Key   string
	Value []byte
	TTL   time.Duration // 0 means no expiry
	Cond  Cond          // the zero Cond always holds
}

// Entry is one entry returned by List.
type Entry struct {
	Key     string
	Value   []byte    // nil unless ListOptions.Values was set
	Size    int64     // len(Key)+len(value): what the entry counts against the quota
	Expires time.Time // zero when the entry does not expire
	Version uint64    // the entry's version
}

// Versioned is a value with its version.
type Versioned struct {
	Value   []byte // nil for a missing key
	Version uint64 // 0 for a missing key
}

// Cond is the condition of a conditional write. The zero Cond is no
// condition: it always holds.
type Cond struct {
	// Check is true when the write is conditional.
	Check bool
	// Version is the version the key must have; 0 means the key must not
	// exist (or must have expired).
	Version uint64
}

// IfVersion is the condition that the key is live with version v; v == 0
// is IfAbsent.
func IfVersion(v uint64) Cond { return Cond{Check: true, Version: v} }

// IfAbsent is the condition that the key does not exist or has expired.
func IfAbsent() Cond { return Cond{Check: true} }

// Holds reports whether c holds for a key that is live (or not) with the
// given version.
func (c Cond) Holds(live bool, version uint64) bool {
	if !c.Check {
		return true
	}
	if c.Version == 0 {
		return !live
	}
	return live && version == c.Version
}

// Conflict is one failed condition.
type Conflict struct {
	Key    string
	Exists bool // whether the key exists (live) now
}

// ConflictError is the error of a write whose conditions failed. It
// matches ErrConflict.
type ConflictError struct {
	Conflicts []Conflict // every failing key, in the order of the request
}

func (e *ConflictError) Error() string {
	var b strings.Builder
	b.WriteString(ErrConflict.Error())
	for i, c := range e.Conflicts {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		if c.Exists {
			fmt.Fprintf(&b, "key %q exists with another version", c.Key)
		} else {
			fmt.Fprintf(&b, "key %q does not exist", c.Key)
		}
	}
	return b.String()
}

// Is matches ErrConflict.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Keys returns the failing keys.
func (e *ConflictError) Keys() []string {
	keys := make([]string, len(e.Conflicts))
	for i, c := range e.Conflicts {
		keys[i] = c.Key
	}
	return keys
}

// CheckConds checks the conditions of items against the stored state of
// their keys: state returns whether a key is live and its version. It
// returns a *ConflictError listing every failing item, or nil.
func CheckConds(items []Item, state func(key string) (live bool, version uint64)) error {
	var conflicts []Conflict
	for _, it := range items {
		if !it.Cond.Check {
			continue
		}
		live, version := state(it.Key)
		if !it.Cond.Holds(live, version) {
			conflicts = append(conflicts, Conflict{Key: it.Key, Exists: live})
		}
	}
	if conflicts != nil {
		return &ConflictError{Conflicts: conflicts}
	}
	return nil
}

// ListOptions selects a page of List.
type ListOptions struct {
	Prefix string // only keys starting with Prefix
	After  string // only keys sorting strictly after After ("" starts at the beginning)
	Limit  int    // at most this many entries; <= 0 or > MaxListLimit means MaxListLimit
	Values bool   // return values too
}

// Page is one page of List. More is true when entries beyond this page
// match; the next page starts After the last entry's key.
type Page struct {
	Entries []Entry
	More    bool
}

// Usage is a project's storage use.
type Usage struct {
	Bytes   int64 // sum of len(key)+len(value) of live entries
	Entries int64 // number of live entries
	Quota   int64 // the quota in force: the project's override or the default
}

// Defaults shared by every backend and the daemon.
const (
	// DefaultMaxKeyBytes is the longest key accepted unless configured:
	// 1 KiB, between Cloudflare Workers KV (512 B) and Deno KV (2 KiB).
	DefaultMaxKeyBytes = 1024
	// DefaultMaxValueBytes is the largest value accepted unless configured:
	// 1 MiB keeps one request's memory small next to a function process.
	DefaultMaxValueBytes = 1 << 20
	// DefaultQuota is the storage quota of a project without an override:
	// 1 GiB, as Invoke's KV.
	DefaultQuota = 1 << 30
	// MaxListLimit bounds one List page so one request cannot pin the
	// daemon's memory: 1000 entries of at most 1 MiB each is still large, so
	// callers that want values should ask for fewer.
	MaxListLimit = 1000
	// MaxBatchItems bounds the keys or items of one *Many call.
	MaxBatchItems = 1000
)

// Errors returned by every backend. Match them with errors.Is; the returned
// error wraps them with details (the sizes, the key's position in a batch).
var (
	// Argument errors: nothing was read or written.
	ErrEmptyKey      = errors.New("key is empty")
	ErrInvalidKey    = errors.New("key is not valid UTF-8")
	ErrKeyTooLarge   = errors.New("key too large")
	ErrValueTooLarge = errors.New("value too large")
	ErrNegativeTTL   = errors.New("ttl is negative")
	ErrTooManyItems  = errors.New("too many items in one request")
	ErrBadArgument   = errors.New("bad argument")

	// Semantic refusals: nothing was written.
	ErrQuotaExceeded = errors.New("quota exceeded")
	ErrNotInteger    = errors.New("value is not an integer")
	ErrOverflow      = errors.New("integer overflow")
	// ErrConflict is matched by a *ConflictError: a write's condition on a
	// version failed.
	ErrConflict = errors.New("conflict")

	// Availability: the outcome of a write that fails with one of these is
	// unknown only for ErrUnavailable during a commit; otherwise nothing was
	// written.
	ErrUnavailable = errors.New("store unavailable")
	ErrBusy        = errors.New("store busy")
	ErrClosed      = errors.New("store closed")
)

// Limits are the size limits every backend enforces.
type Limits struct {
	MaxKeyBytes   int // default DefaultMaxKeyBytes
	MaxValueBytes int // default DefaultMaxValueBytes
}

// WithDefaults returns l with zero fields set to their defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxKeyBytes <= 0 {
		l.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if l.MaxValueBytes <= 0 {
		l.MaxValueBytes = DefaultMaxValueBytes
	}
	return l
}

// CheckKey validates a key against the limits.
func (l Limits) CheckKey(key string) error {
	switch {
	case key == "":
		return ErrEmptyKey
	case len(key) > l.MaxKeyBytes:
		return fmt.Errorf("%w: key is %d bytes, the limit is %d bytes", ErrKeyTooLarge, len(key), l.MaxKeyBytes)
	case !utf8.ValidString(key):
		return ErrInvalidKey
	}
	return nil
}

// CheckValue validates a value against the limits.
func (l Limits) CheckValue(value []byte) error {
	if len(value) > l.MaxValueBytes {
		return fmt.Errorf("%w: value is %d bytes, the limit is %d bytes", ErrValueTooLarge, len(value), l.MaxValueBytes)
	}
	return nil
}

// CheckSet validates the arguments of a Set.
func (l Limits) CheckSet(key string, value []byte, ttl time.Duration) error {
	if err := l.CheckKey(key); err != nil {
		return err
	}
	if err := l.CheckValue(value); err != nil {
		return err
	}
	return CheckTTL(ttl)
}

// CheckKeys validates the keys of a *Many call.
func (l Limits) CheckKeys(keys []string) error {
	if len(keys) > MaxBatchItems {
		return fmt.Errorf("%w: %d keys, the limit is %d", ErrTooManyItems, len(keys), MaxBatchItems)
	}
	for i, k := range keys {
		if err := l.CheckKey(k); err != nil {
			return fmt.Errorf("keys[%d]: %w", i, err)
		}
	}
	return nil
}

// CheckItems validates the items of a SetMany.
func (l Limits) CheckItems(items []Item) error {
	if len(items) > MaxBatchItems {
		return fmt.Errorf("%w: %d items, the limit is %d", ErrTooManyItems, len(items), MaxBatchItems)
	}
	for i, it := range items {
		if err := l.CheckSet(it.Key, it.Value, it.TTL); err != nil {
			return fmt.Errorf("items[%d]: %w", i, err)
		}
	}
	return nil
}

// CheckTTL validates a TTL.
func CheckTTL(ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("%w: %d ms", ErrNegativeTTL, ttl.Milliseconds())
	}
	return nil
}

// CheckProject validates a project name given by the daemon or an admin.
func CheckProject(project string) error {
	if project == "" {
		return fmt.Errorf("%w: project is empty", ErrBadArgument)
	}
	if len(project) > 255 || !utf8.ValidString(project) {
		return fmt.Errorf("%w: project name must be valid UTF-8 of at most 255 bytes", ErrBadArgument)
	}
	return nil
}

// EntrySize is what an entry counts against its project's quota.
func EntrySize(key string, value []byte) int64 {
	return int64(len(key)) + int64(len(value))
}

// QuotaError builds the error for a refused write: it names the quota, the
// usage and how much the write needed, and matches ErrQuotaExceeded.
func QuotaError(project string, used, need, quota int64) error {
	return fmt.Errorf("%w: project %q uses %d of %d bytes, this write needs %d more", ErrQuotaExceeded, project, used, quota, need)
}

// Increment applies an Incr to the current value of a key (found reports
// whether a live value exists) and returns the new stored bytes and the new
// integer. Backends share it so that every one parses and formats alike.
func Increment(current []byte, found bool, delta int64) ([]byte, int64, error) {
	var n int64
	if found {
		v, err := ParseInteger(current)
		if err != nil {
			return nil, 0, err
		}
		n = v
	}
	if (delta > 0 && n > math.MaxInt64-delta) || (delta < 0 && n < math.MinInt64-delta) {
		return nil, 0, fmt.Errorf("%w: %d + %d does not fit in 64 bits", ErrOverflow, n, delta)
	}
	n += delta
	return strconv.AppendInt(nil, n, 10), n, nil
}

// ParseInteger parses a value stored as a JSON integer: an optional '-'
// and decimal digits without leading zeros, fitting in 64 bits.
func ParseInteger(b []byte) (int64, error) {
	s := string(b)
	digits := strings.TrimPrefix(s, "-")
	valid := digits != "" && (digits == "0" || digits[0] != '0')
	for i := 0; valid && i < len(digits); i++ {
		valid = digits[i] >= '0' && digits[i] <= '9'
	}
	if !valid {
		return 0, fmt.Errorf("%w: the stored value is not a JSON integer", ErrNotInteger)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: the stored value does not fit in 64 bits", ErrNotInteger)
	}
	return n, nil
}

// SameVersion returns n copies of version: the versions of a SetMany's n
// items, which one write gives one version.
func SameVersion(n int, version uint64) []uint64 {
	versions := make([]uint64, n)
	for i := range versions {
		versions[i] = version
	}
	return versions
}
