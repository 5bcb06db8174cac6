package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsidecar/kvsidecar/store"
)

// The admin calls (store.Admin). Reads are single statements whose results
// are bounded by their limits: the database scans and aggregates, the
// daemon holds one page. Import is a transaction of its own that locks the
// project's usage row, like a committer's, so quotas stay exact.

// Statements of the admin calls. Every one but sqlProjects names one
// project by equality on the leading primary-key column; sqlProjects walks
// kv_usage in project order and, on a database distributed by project,
// becomes a fan-out query. It runs only for the admin's project list and
// the usage metrics' refresh, never per request of the socket.
const (
	sqlDefaultQuota = `SELECT value FROM kv_settings WHERE name = 'default_quota'`

	// sqlProjects reads a page of projects with their live usage: stored
	// usage (the usage row's and its leases') less what expired, not yet
	// swept entries use (looked for only in projects whose next expiry has
	// passed).
	sqlProjects = `
SELECT u.project, u.bytes + l.bytes - coalesce(x.bytes, 0), u.entries + l.entries - coalesce(x.entries, 0),
       coalesce(u.quota, s.value), coalesce(u.quota, 0)
FROM kv_usage u
CROSS JOIN kv_settings s
CROSS JOIN LATERAL (
    SELECT coalesce(sum(bytes), 0)::int8 AS bytes, coalesce(sum(entries), 0)::int8 AS entries,
           min(next_expiry) AS next_expiry
    FROM kv_leases WHERE project = u.project
) l
LEFT JOIN LATERAL (
    SELECT sum(octet_length(e.key) + octet_length(e.value))::int8 AS bytes, count(*) AS entries
    FROM kv_entries e
    WHERE e.project = u.project AND least(u.next_expiry, l.next_expiry) <= coalesce($3::timestamptz, now())
      AND e.expires_at <= coalesce($3::timestamptz, now())
) x ON true
WHERE s.name = 'default_quota' AND u.project > $1
ORDER BY u.project
LIMIT $2`

	// sqlProjectUsage is sqlUsage with the quota override.
	sqlProjectUsage = `
SELECT coalesce(u.bytes, 0) + l.bytes - coalesce(x.bytes, 0), coalesce(u.entries, 0) + l.entries - coalesce(x.entries, 0),
       coalesce(u.quota, s.value), coalesce(u.quota, 0)
FROM kv_settings s
LEFT JOIN kv_usage u ON u.project = $1
CROSS JOIN LATERAL (
    SELECT coalesce(sum(bytes), 0)::int8 AS bytes, coalesce(sum(entries), 0)::int8 AS entries,
           min(next_expiry) AS next_expiry
    FROM kv_leases WHERE project = $1
) l
LEFT JOIN LATERAL (
    SELECT sum(octet_length(e.key) + octet_length(e.value))::int8 AS bytes, count(*) AS entries
    FROM kv_entries e
    WHERE e.project = $1 AND least(u.next_expiry, l.next_expiry) <= coalesce($2::timestamptz, now())
      AND e.expires_at <= coalesce($2::timestamptz, now())
) x ON true
WHERE s.name = 'default_quota'`

	// sqlSearchRange and sqlSearchFrom read a page of a key search: of the
	// first $6 keys after $2 and at or after $3 (the prefix) — and below
	// $8, the first byte string after every key with the prefix, for
	// sqlSearchRange; sqlSearchFrom serves prefixes without such a bound —
	// the live ones containing $4 (position of '' is 1, so an empty search
	// matches every key), in key order, up to $7 of them. The outer LIMIT
	// stops the scan as soon as the page is full.
	sqlSearchRange = `
SELECT key, size, expires_at
FROM (
    SELECT key, octet_length(key) + octet_length(value) AS size, expires_at,
           position($4::bytea IN key) > 0
           AND (expires_at IS NULL OR expires_at > coalesce($5::timestamptz, now())) AS hit
    FROM kv_entries
    WHERE project = $1 AND key > $2::bytea AND key >= $3::bytea AND key < $8::bytea
    ORDER BY key
    LIMIT $6
) scanned
WHERE hit
ORDER BY key
LIMIT $7`
	sqlSearchFrom = `
SELECT key, size, expires_at
FROM (
    SELECT key, octet_length(key) + octet_length(value) AS size, expires_at,
           position($4::bytea IN key) > 0
           AND (expires_at IS NULL OR expires_at > coalesce($5::timestamptz, now())) AS hit
    FROM kv_entries
    WHERE project = $1 AND key > $2::bytea AND key >= $3::bytea
    ORDER BY key
    LIMIT $6
) scanned
WHERE hit
ORDER BY key
LIMIT $7`

	// sqlSearchScannedRange and sqlSearchScannedFrom return the last key
	// and the number of keys a search that did not fill its page scanned
	// (the same keys as sqlSearchRange and sqlSearchFrom; no row when there
	// were none): when it is the bound, the next page goes on after that
	// key.
	sqlSearchScannedRange = `
SELECT key, count(*) OVER ()
FROM (
    SELECT key FROM kv_entries
    WHERE project = $1 AND key > $2::bytea AND key >= $3::bytea AND key < $5::bytea
    ORDER BY key
    LIMIT $4
) scanned
ORDER BY key DESC
LIMIT 1`
	sqlSearchScannedFrom = `
SELECT key, count(*) OVER ()
FROM (
    SELECT key FROM kv_entries
    WHERE project = $1 AND key > $2::bytea AND key >= $3::bytea
    ORDER BY key
    LIMIT $4
) scanned
ORDER BY key DESC
LIMIT 1`

	// sqlEntry reads one live entry with its expiry and version.
	sqlEntry = `
SELECT value, expires_at, version FROM kv_entries
WHERE project = $1 AND key = $2::bytea
  AND (expires_at IS NULL OR expires_at > coalesce($3::timestamptz, now()))`

	// sqlPrefixUsage groups a project's live entries by the part of their
	// key up to and including the first delimiter ($2); keys without it go
	// under the empty prefix.
	sqlPrefixUsage = `
SELECT p.prefix, sum(p.size)::int8, count(*)
FROM (
    SELECT CASE WHEN position($2::bytea IN key) > 0
                THEN substring(key FROM 1 FOR position($2::bytea IN key) + octet_length($2::bytea) - 1)
                ELSE ''::bytea END AS prefix,
           octet_length(key) + octet_length(value) AS size
    FROM kv_entries
    WHERE project = $1 AND (expires_at IS NULL OR expires_at > coalesce($3::timestamptz, now()))
) p
GROUP BY p.prefix
ORDER BY 2 DESC, 1
LIMIT $4`

	// sqlLargestKeys reads a project's largest live entries.
	sqlLargestKeys = `
SELECT key, octet_length(key) + octet_length(value) AS size, expires_at
FROM kv_entries
WHERE project = $1 AND (expires_at IS NULL OR expires_at > coalesce($2::timestamptz, now()))
ORDER BY size DESC, key
LIMIT $3`

	// sqlExpiringBytes sums, per window in microseconds ($2), what the
	// live entries expiring within it use, through the expiry index.
	sqlExpiringBytes = `
SELECT w.i, coalesce(sum(octet_length(e.key) + octet_length(e.value)), 0)::int8
FROM unnest($2::int8[]) WITH ORDINALITY AS w(us, i)
LEFT JOIN kv_entries e
  ON e.project = $1
 AND e.expires_at > coalesce($3::timestamptz, now())
 AND e.expires_at <= coalesce($3::timestamptz, now()) + w.us * interval '1 microsecond'
GROUP BY w.i`

	// sqlSetStatementTimeout sets the statement timeout (milliseconds) for
	// the rest of the transaction.
	sqlSetStatementTimeout = `SELECT set_config('statement_timeout', $1, true)`

	// sqlTxNow is the transaction's clock.
	sqlTxNow = `SELECT coalesce($1::timestamptz, now())`
)

// Limits returns the size limits the store enforces.
func (s *Store) Limits() store.Limits { return s.cfg.Limits }

// DefaultQuota returns the quota of projects without an override.
func (s *Store) DefaultQuota(ctx context.Context) (int64, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	var q int64
	if err := s.pool.QueryRow(ctx, sqlDefaultQuota).Scan(&q); err != nil {
		return 0, dbError(err)
	}
	return q, nil
}

// Projects returns a page of the projects in the database. See store.Admin.
func (s *Store) Projects(ctx context.Context, after string, limit int) (store.ProjectPage, error) {
	if err := s.ready(ctx); err != nil {
		return store.ProjectPage{}, err
	}
	limit = store.PageLimit(limit)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, sqlProjects, after, limit+1, s.nowArg())
	if err != nil {
		return store.ProjectPage{}, dbError(err)
	}
	var page store.ProjectPage
	for rows.Next() {
		var u store.ProjectUsage
		if err := rows.Scan(&u.Name, &u.Bytes, &u.Entries, &u.Quota, &u.Override); err != nil {
			rows.Close()
			return store.ProjectPage{}, dbError(err)
		}
		if len(page.Projects) == limit {
			page.More = true
			break
		}
		page.Projects = append(page.Projects, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return store.ProjectPage{}, dbError(err)
	}
	return page, nil
}

// ProjectUsage returns one project's usage and quotas. See store.Admin.
func (s *Store) ProjectUsage(ctx context.Context, project string) (store.ProjectUsage, error) {
	if err := checkProject(project); err != nil {
		return store.ProjectUsage{}, err
	}
	if err := s.ready(ctx); err != nil {
		return store.ProjectUsage{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	u := store.ProjectUsage{Name: project}
	err := s.pool.QueryRow(ctx, sqlProjectUsage, project, s.nowArg()).Scan(&u.Bytes, &u.Entries, &u.Quota, &u.Override)
	if err != nil {
		return store.ProjectUsage{}, dbError(err)
	}
	return u, nil
}

// SearchKeys returns a page of live keys by prefix and substring. See
// store.Admin. Each call scans at most Config.SearchScan keys; a search
// for a rare substring then returns a page cut short, and the caller goes
// on from KeyPage.Next.
func (s *Store) SearchKeys(ctx context.Context, project string, opts store.SearchOptions) (store.KeyPage, error) {
	if err := checkProject(project); err != nil {
		return store.KeyPage{}, err
	}
	if err := s.ready(ctx); err != nil {
		return store.KeyPage{}, err
	}
	limit := store.PageLimit(opts.Limit)
	after, prefix := []byte(opts.After), []byte(opts.Prefix)
	args := []any{project, after, prefix, []byte(opts.Search), s.nowArg(), s.cfg.SearchScan, limit + 1}
	scannedArgs := []any{project, after, prefix, s.cfg.SearchScan}
	q, scannedQ := sqlSearchFrom, sqlSearchScannedFrom
	if upper := prefixEnd(prefix); upper != nil {
		q, scannedQ = sqlSearchRange, sqlSearchScannedRange
		args, scannedArgs = append(args, upper), append(scannedArgs, upper)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return store.KeyPage{}, dbError(err)
	}
	var page store.KeyPage
	for rows.Next() {
		var (
			key     []byte
			e       store.Entry
			expires *time.Time
		)
		if err := rows.Scan(&key, &e.Size, &expires); err != nil {
			rows.Close()
			return store.KeyPage{}, dbError(err)
		}
		if len(page.Entries) == limit {
			page.Next = page.Entries[limit-1].Key
			break
		}
		e.Key = string(key)
		e.Expires = entryExpiry(expires)
		page.Entries = append(page.Entries, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return store.KeyPage{}, dbError(err)
	}
	if page.Next != "" {
		return page, nil
	}
	// The page is not full: the keys ran out, or the scan stopped at its
	// bound and the search goes on after the last key it scanned.
	var last []byte
	var scanned int64
	err = s.pool.QueryRow(ctx, scannedQ, scannedArgs...).Scan(&last, &scanned)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return store.KeyPage{}, dbError(err)
	}
	if scanned == int64(s.cfg.SearchScan) {
		page.Next = string(last)
	}
	return page, nil
}

// Entry returns the live entry of key with its value. See store.Admin.
func (s *Store) Entry(ctx context.Context, project, key string) (store.Entry, bool, error) {
	if err := checkProject(project); err != nil {
		return store.Entry{}, false, err
	}
	if err := s.cfg.Limits.CheckKey(key); err != nil {
		return store.Entry{}, false, err
	}
	if err := s.ready(ctx); err != nil {
		return store.Entry{}, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	e := store.Entry{Key: key}
	var expires *time.Time
	err := s.pool.QueryRow(ctx, sqlEntry, project, []byte(key), s.nowArg()).Scan(&e.Value, &expires, &e.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Entry{}, false, nil
	}
	if err != nil {
		return store.Entry{}, false, dbError(err)
	}
	if e.Value == nil {
		e.Value = []byte{}
	}
	e.Size = store.EntrySize(key, e.Value)
	e.Expires = entryExpiry(expires)
	return e, true, nil
}

// PrefixUsage groups live entries by key prefix. See store.Admin.
func (s *Store) PrefixUsage(ctx context.Context, project, delimiter string, limit int) ([]store.PrefixUsage, error) {
	if err := checkProject(project); err != nil {
		return nil, err
	}
	if err := store.CheckDelimiter(delimiter); err != nil {
		return nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	out := []store.PrefixUsage{}
	err := s.analyse(ctx, sqlPrefixUsage, []any{project, []byte(delimiter), s.nowArg(), store.PageLimit(limit)}, func(rows pgx.Rows) error {
		var prefix []byte
		var u store.PrefixUsage
		if err := rows.Scan(&prefix, &u.Bytes, &u.Entries); err != nil {
			return err
		}
		u.Prefix = string(prefix)
		out = append(out, u)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// LargestKeys returns the largest live entries. See store.Admin.
func (s *Store) LargestKeys(ctx context.Context, project string, limit int) ([]store.Entry, error) {
	if err := checkProject(project); err != nil {
		return nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	out := []store.Entry{}
	err := s.analyse(ctx, sqlLargestKeys, []any{project, s.nowArg(), store.PageLimit(limit)}, func(rows pgx.Rows) error {
		var key []byte
		var e store.Entry
		var expires *time.Time
		if err := rows.Scan(&key, &e.Size, &expires); err != nil {
			return err
		}
		e.Key = string(key)
		e.Expires = entryExpiry(expires)
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ExpiringBytes sums the live entries expiring within each window. See
// store.Admin.
func (s *Store) ExpiringBytes(ctx context.Context, project string, windows ...time.Duration) ([]int64, error) {
	if err := checkProject(project); err != nil {
		return nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	sums := make([]int64, len(windows))
	if len(windows) == 0 {
		return sums, nil
	}
	us := make([]int64, len(windows))
	for i, w := range windows {
		us[i] = w.Microseconds()
	}
	err := s.analyse(ctx, sqlExpiringBytes, []any{project, us, s.nowArg()}, func(rows pgx.Rows) error {
		var i, sum int64
		if err := rows.Scan(&i, &sum); err != nil {
			return err
		}
		sums[i-1] = sum
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sums, nil
}

// analyse runs one of the admin's analyses of a whole project and calls
// row for each row of its result. These read every entry of the project
// (or every one due to expire), which for millions of entries takes
// longer than a request's statement should, so they run in a read-only
// transaction whose statement timeout is Config.AnalysisTimeout.
func (s *Store) analyse(ctx context.Context, query string, args []any, row func(pgx.Rows) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AnalysisTimeout)
	defer cancel()
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return dbError(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // read-only: nothing to keep
	timeout := strconv.FormatInt(s.cfg.AnalysisTimeout.Milliseconds(), 10)
	if _, err := tx.Exec(ctx, sqlSetStatementTimeout, timeout); err != nil {
		return dbError(err)
	}
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return dbError(err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows); err != nil {
			return dbError(err)
		}
	}
	return dbError(rows.Err())
}

// Import writes entries with their absolute expiries, in one transaction
// that holds the project's usage row, as a committer's does: the quota is
// exact against every daemon's writes. See store.Admin.
func (s *Store) Import(ctx context.Context, project string, entries []store.Entry) (int, error) {
	if err := checkProject(project); err != nil {
		return 0, err
	}
	if err := s.cfg.Limits.CheckImport(entries); err != nil {
		return 0, err
	}
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	if len(entries) == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, sqlEnsureUsage, []string{project}); err != nil {
		return 0, dbError(err)
	}
	s.known.Store(project, true)

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, dbError(err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, dbError(err)
	}
	n, err := s.importTx(ctx, tx, project, entries)
	if err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, dbError(err)
	}
	return n, nil
}

// importTx is the body of Import's transaction. A refusal is returned as a
// quota error, not wrapped in dbError.
func (s *Store) importTx(ctx context.Context, tx pgx.Tx, project string, entries []store.Entry) (int, error) {
	var bytes, count, quota int64
	var version uint64
	if err := tx.QueryRow(ctx, sqlLockUsage, project).Scan(&bytes, &count, &quota, &version); err != nil {
		return 0, dbError(err)
	}
	// An import decides against exact usage: the project's leases end.
	if err := tx.QueryRow(ctx, sqlFoldLeases, project).Scan(&bytes, &count, &version); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, dbError(err)
	}
	var now time.Time
	if err := tx.QueryRow(ctx, sqlTxNow, s.nowArg()).Scan(&now); err != nil {
		return 0, dbError(err)
	}

	// The last entry of each key wins; expired ones are left out.
	last := make(map[string]int, len(entries))
	for i, e := range entries {
		last[e.Key] = i
	}
	var (
		keys, values [][]byte
		abs          []*time.Time
		ttls         []int64
		minAbs       *time.Time
		newBytes     int64
	)
	for i, e := range entries {
		if last[e.Key] != i {
			continue
		}
		var expiry *time.Time
		if !e.Expires.IsZero() {
			if !e.Expires.After(now) {
				continue
			}
			t := e.Expires
			expiry = &t
			if minAbs == nil || t.Before(*minAbs) {
				minAbs = expiry
			}
		}
		value := e.Value
		if value == nil {
			value = []byte{} // NULL is not a value
		}
		keys = append(keys, []byte(e.Key))
		values = append(values, value)
		abs = append(abs, expiry)
		ttls = append(ttls, 0)
		newBytes += store.EntrySize(e.Key, value)
	}
	if len(keys) == 0 {
		return 0, nil
	}

	oldBytes, oldCount, err := storedSizes(ctx, tx, project, keys, s.nowArg())
	if err != nil {
		return 0, err
	}
	if need := newBytes - oldBytes; need > 0 && bytes+need > quota {
		// Expired entries never count: delete them and decide again.
		var purgedBytes, purged int64
		if err := tx.QueryRow(ctx, sqlPurgeAllExpired, project, s.nowArg()).Scan(&purgedBytes, &purged); err != nil {
			return 0, dbError(err)
		}
		if _, err := tx.Exec(ctx, sqlResetNextExpiry, project); err != nil {
			return 0, dbError(err)
		}
		bytes -= purgedBytes
		count -= purged
		if oldBytes, oldCount, err = storedSizes(ctx, tx, project, keys, s.nowArg()); err != nil {
			return 0, err
		}
		if need := newBytes - oldBytes; need > 0 && bytes+need > quota {
			return 0, store.QuotaError(project, bytes, need, quota)
		}
	}
	// An import is one write: its entries share the project's next version.
	version++
	versions := make([]int64, len(keys))
	for i := range versions {
		versions[i] = int64(version)
	}
	if _, err := tx.Exec(ctx, sqlUpsertEntries, project, keys, values, abs, ttls, s.nowArg(), versions); err != nil {
		return 0, dbError(err)
	}
	bytes += newBytes - oldBytes
	count += int64(len(keys)) - oldCount
	if _, err := tx.Exec(ctx, sqlUpdateUsage, project, bytes, count, minAbs, nil, s.nowArg(), int64(version)); err != nil {
		return 0, dbError(err)
	}
	return len(keys), nil
}

// storedSizes returns what the stored rows of keys (live or expired) use,
// and how many there are.
func storedSizes(ctx context.Context, tx pgx.Tx, project string, keys [][]byte, now any) (size, count int64, err error) {
	rows, err := tx.Query(ctx, sqlLoadEntries, project, keys, [][]byte{}, now)
	if err != nil {
		return 0, 0, dbError(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			key   []byte
			vlen  int64
			value []byte
			abs   *time.Time
			live  bool
			ver   uint64
		)
		if err := rows.Scan(&key, &vlen, &value, &abs, &live, &ver); err != nil {
			return 0, 0, dbError(err)
		}
		size += int64(len(key)) + vlen
		count++
	}
	if err := rows.Err(); err != nil {
		return 0, 0, fmt.Errorf("read stored entries: %w", dbError(err))
	}
	return size, count, nil
}
