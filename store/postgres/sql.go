package postgres

// Every statement the store runs, in one place so that they can be reviewed
// together. All of them take their data as parameters, and all but the
// sweeper's search for candidate projects name exactly one project, by
// equality on the leading column of the primary key, so that on a database
// distributed by project each is routed to one node.
//
// Where a statement needs the time it reads coalesce($n::timestamptz, now()):
// the parameter is NULL in production, so the database's clock decides, and
// tests pass their fake clock's reading.
//
// Statements that look up a set of keys do it one key at a time, through
// a LATERAL subquery kept from being flattened (OFFSET 0) over unnest of the
// keys: each lookup is then an equality on the whole primary key, which
// every plan serves with the index. The obvious "key = ANY($2)" lets the
// planner (before PostgreSQL 17) choose between using the keys in the index
// scan and scanning all of the project's rows and filtering them; a plan
// made while the table was young and its statistics unknown may take the
// second, and turn every batch into a scan of the project.

const (
	// sqlLockUsage locks a project's usage row for the rest of the write
	// transaction and reads its usage, quota in force and version counter.
	// Transactions lock the rows of their projects in sorted order, so they
	// never deadlock.
	sqlLockUsage = `
SELECT u.bytes, u.entries,
       coalesce(u.quota, (SELECT s.value FROM kv_settings s WHERE s.name = 'default_quota')),
       u.version
FROM kv_usage u
WHERE u.project = $1
FOR UPDATE`

	// sqlEnsureUsage creates missing usage rows, in its own short
	// transaction before the write transaction locks them.
	sqlEnsureUsage = `
INSERT INTO kv_usage (project) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`

	// sqlLoadEntries reads, for the keys a write batch touches, what each
	// stored row counts against the quota, its expiry, whether it is live
	// and its version; values only for the keys in $3 (those an Incr or an
	// Expire reads).
	sqlLoadEntries = `
SELECT e.key, octet_length(e.value),
       CASE WHEN e.key = ANY($3::bytea[]) THEN e.value END,
       e.expires_at,
       e.expires_at IS NULL OR e.expires_at > coalesce($4::timestamptz, now()),
       e.version
FROM unnest($2::bytea[]) AS q(k)
CROSS JOIN LATERAL (
    SELECT key, value, expires_at, version FROM kv_entries WHERE project = $1 AND key = q.k OFFSET 0
) e`

	// sqlUpsertEntries writes a batch's final state of its keys. An expiry
	// is either kept as stored ($4) or computed from a TTL in microseconds
	// ($5, 0 for none) on the transaction's clock; $7 are the versions.
	sqlUpsertEntries = `
INSERT INTO kv_entries (project, key, value, expires_at, version)
SELECT $1::text, u.k, u.v,
       coalesce(u.a, CASE WHEN u.t > 0 THEN coalesce($6::timestamptz, now()) + u.t * interval '1 microsecond' END),
       u.n
FROM unnest($2::bytea[], $3::bytea[], $4::timestamptz[], $5::int8[], $7::int8[]) AS u(k, v, a, t, n)
ON CONFLICT (project, key) DO UPDATE
SET value = excluded.value, expires_at = excluded.expires_at, version = excluded.version`

	// sqlDeleteEntries deletes keys a batch removed: it finds their rows one
	// key at a time, and deletes them by row address.
	sqlDeleteEntries = `
DELETE FROM kv_entries d
USING unnest($2::bytea[]) AS q(k)
CROSS JOIN LATERAL (
    SELECT ctid FROM kv_entries WHERE project = $1 AND key = q.k OFFSET 0
) e
WHERE d.ctid = e.ctid`

	// sqlUpdateUsage stores a batch's resulting usage and version counter
	// ($7) (computed under the lock, so absolute) and lowers the project's
	// next expiry to the earliest the batch wrote: a stored one ($4) or one
	// computed from a TTL ($5). least ignores NULLs. The counter never goes
	// back: a batch that is only a Clear queues this statement before the
	// lock has read the counter, with $7 still 0.
	sqlUpdateUsage = `
UPDATE kv_usage
SET bytes = $2, entries = $3, version = greatest(version, $7),
    next_expiry = least(next_expiry, $4::timestamptz,
                        coalesce($6::timestamptz, now()) + $5::int8 * interval '1 microsecond')
WHERE project = $1`

	// sqlClearProject deletes every entry of a project and counts the live
	// ones among them.
	sqlClearProject = `
WITH d AS (DELETE FROM kv_entries WHERE project = $1 RETURNING expires_at)
SELECT count(*) FILTER (WHERE expires_at IS NULL OR expires_at > coalesce($2::timestamptz, now())) FROM d`

	// sqlForgetExpiry clears a project's next expiry after a Clear.
	sqlForgetExpiry = `
UPDATE kv_usage SET next_expiry = NULL WHERE project = $1`

	// sqlPurgeExpired deletes a slice of a project's expired entries and
	// returns what they used: the expired rows among keys $4 (those the
	// transaction touches, so that it knows they are gone) and up to $3
	// others, oldest expiry first. A write that would exceed the quota runs
	// it, under the usage row's lock, since expired entries never count; the
	// bound keeps the transaction short, and the write waits for the next
	// slice in the next transaction when it needs more.
	sqlPurgeExpired = `
WITH doomed AS (
    (SELECT key FROM kv_entries
     WHERE project = $1 AND key = ANY($4::bytea[])
       AND expires_at <= coalesce($2::timestamptz, now()))
    UNION
    (SELECT key FROM kv_entries
     WHERE project = $1 AND expires_at <= coalesce($2::timestamptz, now())
     ORDER BY expires_at
     LIMIT $3)
), d AS (
    DELETE FROM kv_entries e USING doomed
    WHERE e.project = $1 AND e.key = doomed.key
    RETURNING octet_length(e.key) + octet_length(e.value) AS size
)
SELECT coalesce(sum(size), 0)::int8, count(*) FROM d`

	// sqlPurgeAllExpired deletes every expired entry of a project and
	// returns what they used: the admin's Import runs it in its own
	// transaction before it refuses for quota.
	sqlPurgeAllExpired = `
WITH d AS (
    DELETE FROM kv_entries
    WHERE project = $1 AND expires_at <= coalesce($2::timestamptz, now())
    RETURNING octet_length(key) + octet_length(value) AS size
)
SELECT coalesce(sum(size), 0)::int8, count(*) FROM d`

	// sqlResetNextExpiry sets a project's next expiry to the earliest of its
	// stored entries, after expired ones were deleted.
	sqlResetNextExpiry = `
UPDATE kv_usage
SET next_expiry = (SELECT min(e.expires_at) FROM kv_entries e
                   WHERE e.project = $1 AND e.expires_at IS NOT NULL)
WHERE project = $1`

	// sqlGetValues reads the live values of keys and their versions.
	sqlGetValues = `
SELECT e.key, e.value, e.version
FROM unnest($2::bytea[]) AS q(k)
CROSS JOIN LATERAL (
    SELECT key, value, version FROM kv_entries
    WHERE project = $1 AND key = q.k
      AND (expires_at IS NULL OR expires_at > coalesce($3::timestamptz, now()))
    OFFSET 0
) e`

	// sqlGetValue is sqlGetValues for one key: a plain lookup saves
	// PostgreSQL the unnest and the subquery, which matters for the latency
	// of a lone Get.
	sqlGetValue = `
SELECT key, value, version FROM kv_entries
WHERE project = $1 AND key = $2::bytea
  AND (expires_at IS NULL OR expires_at > coalesce($3::timestamptz, now()))`

	// sqlTTL reads the remaining time to live of a live key in whole
	// microseconds, rounded up (0: it does not expire).
	sqlTTL = `
SELECT coalesce(ceil(extract(epoch FROM expires_at - coalesce($3::timestamptz, now())) * 1000000)::int8, 0)
FROM kv_entries
WHERE project = $1 AND key = $2::bytea
  AND (expires_at IS NULL OR expires_at > coalesce($3::timestamptz, now()))`

	// sqlHasKeys reads which keys are live.
	sqlHasKeys = `
SELECT e.key
FROM unnest($2::bytea[]) AS q(k)
CROSS JOIN LATERAL (
    SELECT key FROM kv_entries
    WHERE project = $1 AND key = q.k
      AND (expires_at IS NULL OR expires_at > coalesce($3::timestamptz, now()))
    OFFSET 0
) e`

	// sqlHasKey is sqlHasKeys for one key (see sqlGetValue).
	sqlHasKey = `
SELECT key FROM kv_entries
WHERE project = $1 AND key = $2::bytea
  AND (expires_at IS NULL OR expires_at > coalesce($3::timestamptz, now()))`

	// sqlListRange and sqlListFrom read a page of live entries in key order:
	// keys after $2 and at or after $3 (the prefix), and below $4 (the first
	// byte string after every key with the prefix). sqlListFrom serves
	// prefixes that have no such bound (empty, or all 0xff bytes). Both
	// fetch one more row than asked to tell whether more follow.
	sqlListRange = `
SELECT key, octet_length(key) + octet_length(value), CASE WHEN $5::bool THEN value END, expires_at, version
FROM kv_entries
WHERE project = $1 AND key > $2::bytea AND key >= $3::bytea AND key < $4::bytea
  AND (expires_at IS NULL OR expires_at > coalesce($6::timestamptz, now()))
ORDER BY key
LIMIT $7`
	sqlListFrom = `
SELECT key, octet_length(key) + octet_length(value), CASE WHEN $4::bool THEN value END, expires_at, version
FROM kv_entries
WHERE project = $1 AND key > $2::bytea AND key >= $3::bytea
  AND (expires_at IS NULL OR expires_at > coalesce($5::timestamptz, now()))
ORDER BY key
LIMIT $6`

	// sqlUsage reads a project's stored usage (its usage row's and its
	// leases'), its quota in force and, when its next expiry has passed,
	// what its expired entries use, all in one snapshot: Usage reports
	// stored minus expired.
	sqlUsage = `
SELECT coalesce(u.bytes, 0) + l.bytes, coalesce(u.entries, 0) + l.entries, coalesce(u.quota, s.value),
       coalesce(x.bytes, 0), coalesce(x.entries, 0)
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

	// sqlSetQuota sets or (with NULL) removes a project's quota override.
	sqlSetQuota = `
INSERT INTO kv_usage (project, quota) VALUES ($1, $2)
ON CONFLICT (project) DO UPDATE SET quota = excluded.quota`

	// sqlSetDefaultQuota sets the default quota; sqlInitDefaultQuota stores
	// one only if none is stored yet.
	sqlSetDefaultQuota = `
INSERT INTO kv_settings (name, value) VALUES ('default_quota', $1)
ON CONFLICT (name) DO UPDATE SET value = excluded.value`
	sqlInitDefaultQuota = `
INSERT INTO kv_settings (name, value) VALUES ('default_quota', $1)
ON CONFLICT (name) DO NOTHING`

	// sqlSweepCandidates finds projects whose earliest expiry has passed,
	// most overdue first (the earliest expiry of what was written under a
	// lease is in the lease row until it is folded). It is the one
	// statement that spans projects; it reads only kv_usage, one small row
	// per project, and kv_leases, a few rows per project writing at once.
	sqlSweepCandidates = `
SELECT project FROM (
    SELECT project, next_expiry FROM kv_usage WHERE next_expiry <= coalesce($1::timestamptz, now())
    UNION ALL
    SELECT project, next_expiry FROM kv_leases WHERE next_expiry <= coalesce($1::timestamptz, now())
) c
GROUP BY project
ORDER BY min(next_expiry)
LIMIT $2`

	// sqlSweepLock locks a project's usage row for a sweep, skipping a
	// project whose row another transaction holds (a write batch, or the
	// sweeper of another daemon): it is swept on a later round.
	sqlSweepLock = `
SELECT 1 FROM kv_usage WHERE project = $1 FOR UPDATE SKIP LOCKED`

	// sqlSweepDelete deletes a bounded batch of a project's expired entries
	// and frees what they used, in one statement.
	sqlSweepDelete = `
WITH doomed AS (
    SELECT key FROM kv_entries
    WHERE project = $1 AND expires_at <= coalesce($2::timestamptz, now())
    ORDER BY expires_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), d AS (
    DELETE FROM kv_entries e USING doomed
    WHERE e.project = $1 AND e.key = doomed.key
    RETURNING octet_length(e.key) + octet_length(e.value) AS size
)
UPDATE kv_usage
SET bytes = bytes - (SELECT coalesce(sum(size), 0) FROM d),
    entries = entries - (SELECT count(*) FROM d)
WHERE project = $1
RETURNING (SELECT count(*) FROM d)`
)

// sqlFastSet applies a batch's Sets of one project in one statement, when
// the project's usage leaves room for all of them even if none replaced an
// existing row: $7 is the sum of the sizes of every item of the batch, an
// upper bound of the usage any prefix of the batch could add. Then no call
// can be refused, the Go-side decisions are unnecessary, and the batch
// commits in one statement. $2..$4 hold each key once, with its last value;
// $6 is the sum of their sizes and $8 the shortest TTL (NULL for none).
// Each key's version is the project's counter plus $9, the position among
// the batch's calls of the project of the last call that set the key; $10
// is the number of those calls, by which the counter advances. It returns
// the counter from before the batch when it applied; NULL when the usage
// row had room but another writer came first (below), and the batch may run
// again with the row locked first (sqlLockUsage in the same transaction);
// and no row when there was no room (or no usage row), for the general
// path.
//
// The usage update takes the row's lock itself; there is no locking
// statement before it. The sizes of the replaced rows (old) are read in the
// statement's snapshot, taken before that lock was granted, so they are
// right only if no other transaction wrote the project in between. Every
// transaction that writes a project's entries updates its usage row in the
// same transaction, under that row's lock, so the row version this
// statement updates is the one of its snapshot (same xmin, the creating
// transaction) exactly when no such write came in between: when another
// committed while this statement waited for the lock, PostgreSQL rechecks
// the WHERE clause against the newer row version, the xmin differs, and the
// statement changes nothing. The same condition makes the quota check of
// the snapshot's row (seen.room) that of the row updated.
const sqlFastSet = `
WITH seen AS (
    SELECT u.xmin AS x,
           u.bytes + u.reserved + $7 <= coalesce(u.quota, (SELECT s.value FROM kv_settings s WHERE s.name = 'default_quota'))
           AND NOT EXISTS (SELECT FROM kv_leases l WHERE l.project = $1) AS room
    FROM kv_usage u WHERE u.project = $1
), old AS (
    SELECT octet_length(e.key) + octet_length(e.value) AS size
    FROM unnest($2::bytea[]) AS q(k)
    CROSS JOIN LATERAL (
        SELECT key, value FROM kv_entries WHERE project = $1 AND key = q.k OFFSET 0
    ) e
), usage AS (
    UPDATE kv_usage u
    SET bytes = u.bytes + $6 - (SELECT coalesce(sum(size), 0) FROM old),
        entries = u.entries + cardinality($2::bytea[]) - (SELECT count(*) FROM old),
        version = u.version + $10,
        next_expiry = least(u.next_expiry, coalesce($5::timestamptz, now()) + $8::int8 * interval '1 microsecond')
    WHERE u.project = $1 AND u.xmin = (SELECT x FROM seen) AND (SELECT room FROM seen)
    RETURNING u.version - $10 AS base
), up AS (
    INSERT INTO kv_entries (project, key, value, expires_at, version)
    SELECT $1::text, u.k, u.v,
           CASE WHEN u.t > 0 THEN coalesce($5::timestamptz, now()) + u.t * interval '1 microsecond' END,
           usage.base + u.o
    FROM unnest($2::bytea[], $3::bytea[], $4::int8[], $9::int8[]) AS u(k, v, t, o), usage
    ON CONFLICT (project, key) DO UPDATE
    SET value = excluded.value, expires_at = excluded.expires_at, version = excluded.version
)
SELECT base FROM usage
UNION ALL
SELECT NULL FROM seen WHERE seen.room AND NOT EXISTS (SELECT FROM usage)`

// sqlFastSetOne is sqlFastSet for a batch that sets one key of the project
// (see sqlGetValue): $2 the key, $3 its value, $4 its TTL in microseconds
// (0 for none), $6 its size, $7 the sum of the sizes of every item, $8 the
// number of calls (the key's version is the counter plus $8).
const sqlFastSetOne = `
WITH seen AS (
    SELECT u.xmin AS x,
           u.bytes + u.reserved + $7 <= coalesce(u.quota, (SELECT s.value FROM kv_settings s WHERE s.name = 'default_quota'))
           AND NOT EXISTS (SELECT FROM kv_leases l WHERE l.project = $1) AS room
    FROM kv_usage u WHERE u.project = $1
), old AS (
    SELECT octet_length(e.key) + octet_length(e.value) AS size
    FROM kv_entries e
    WHERE e.project = $1 AND e.key = $2::bytea
), usage AS (
    UPDATE kv_usage u
    SET bytes = u.bytes + $6 - (SELECT coalesce(sum(size), 0) FROM old),
        entries = u.entries + 1 - (SELECT count(*) FROM old),
        version = u.version + $8,
        next_expiry = least(u.next_expiry, coalesce($5::timestamptz, now()) + nullif($4::int8, 0) * interval '1 microsecond')
    WHERE u.project = $1 AND u.xmin = (SELECT x FROM seen) AND (SELECT room FROM seen)
    RETURNING u.version - $8 AS base
), up AS (
    INSERT INTO kv_entries (project, key, value, expires_at, version)
    SELECT $1::text, $2::bytea, $3::bytea,
           CASE WHEN $4::int8 > 0 THEN coalesce($5::timestamptz, now()) + $4::int8 * interval '1 microsecond' END,
           usage.base + $8::int8
    FROM usage
    ON CONFLICT (project, key) DO UPDATE
    SET value = excluded.value, expires_at = excluded.expires_at, version = excluded.version
)
SELECT base FROM usage
UNION ALL
SELECT NULL FROM seen WHERE seen.room AND NOT EXISTS (SELECT FROM usage)`

// Statements of quota leases (lease.go). Every transaction that takes a
// project's usage row lock and then touches its lease rows does so in that
// order (usage row, then lease rows), so none of them deadlock; a write
// under a lease touches its own lease row and then entries, never the usage
// row.
const (
	// sqlFoldLeases ends every lease of a project, under its usage row's
	// lock: what the writes under them added moves into the usage row, and
	// their reservations are released. Every exact-path transaction runs
	// it right after that lock (the general path of the committers, the
	// sweeper, Import, quota changes), so it decides against exact usage,
	// and a write under a lease that was folded finds no lease row and
	// writes nothing. It waits for the writes in flight under those leases
	// (they hold their lease rows) and then sees their effect. It returns
	// the new usage, and no row when there was no lease.
	sqlFoldLeases = `
WITH gone AS (
    DELETE FROM kv_leases WHERE project = $1
    RETURNING reserved, bytes, entries, next_expiry, version
), g AS (
    SELECT coalesce(sum(reserved), 0)::int8 AS r, coalesce(sum(bytes), 0)::int8 AS b,
           coalesce(sum(entries), 0)::int8 AS e, min(next_expiry) AS x, max(version) AS v, count(*) AS n
    FROM gone
)
UPDATE kv_usage u
SET bytes = u.bytes + g.b, entries = u.entries + g.e, reserved = u.reserved - g.r,
    next_expiry = least(u.next_expiry, g.x), version = greatest(u.version, g.v)
FROM g
WHERE u.project = $1 AND g.n > 0
RETURNING u.bytes, u.entries, u.version`

	// sqlFoldStaleLeases is sqlFoldLeases for the leases whose deadline has
	// passed: those of a daemon that died holding them (or lost its
	// database connection for that long). A grant runs it first, so a dead
	// daemon's reservation is lost to its project for at most a lease's
	// lifetime.
	sqlFoldStaleLeases = `
WITH gone AS (
    DELETE FROM kv_leases WHERE project = $1 AND deadline <= coalesce($2::timestamptz, now())
    RETURNING reserved, bytes, entries, next_expiry, version
), g AS (
    SELECT coalesce(sum(reserved), 0)::int8 AS r, coalesce(sum(bytes), 0)::int8 AS b,
           coalesce(sum(entries), 0)::int8 AS e, min(next_expiry) AS x, max(version) AS v, count(*) AS n
    FROM gone
)
UPDATE kv_usage u
SET bytes = u.bytes + g.b, entries = u.entries + g.e, reserved = u.reserved - g.r,
    next_expiry = least(u.next_expiry, g.x), version = greatest(u.version, g.v)
FROM g
WHERE u.project = $1 AND g.n > 0`

	// sqlGrantLease grants holder $2 a lease on project $1, after
	// sqlLockUsage in the same transaction: a reservation of an eighth of
	// the room left (bytes and every reservation taken from the quota), at
	// most $3 bytes, and only if that is at least $4 bytes. Its version
	// starts at the project's counter. The grant's transaction holds
	// sqlShareDefaultQuota, so that a change of the default quota (which
	// folds the leases it affects) and a grant never pass each other. A
	// holder that still has a row (its return failed) gets the new
	// reservation added. It returns the reservation granted, or no row
	// when the room is too small.
	sqlGrantLease = `
WITH d AS (
    SELECT value FROM kv_settings WHERE name = 'default_quota'
), q AS (
    SELECT least($3::int8, (coalesce(u.quota, (SELECT value FROM d)) - u.bytes - u.reserved) / 8) AS n
    FROM kv_usage u WHERE u.project = $1
), g AS (
    UPDATE kv_usage u
    SET reserved = u.reserved + q.n
    FROM q
    WHERE u.project = $1 AND q.n >= $4
    RETURNING q.n, u.version
)
INSERT INTO kv_leases (project, holder, reserved, version, deadline)
SELECT $1::text, $2::text, g.n, g.version,
       coalesce($5::timestamptz, now()) + $6::int8 * interval '1 microsecond'
FROM g
ON CONFLICT (project, holder) DO UPDATE
SET reserved = kv_leases.reserved + excluded.reserved,
    version = greatest(kv_leases.version, excluded.version), deadline = excluded.deadline
RETURNING reserved`

	// sqlShareDefaultQuota locks the default quota's row against a change
	// for the rest of a transaction that grants leases; it comes before
	// any usage row lock, as in a change of the default.
	sqlShareDefaultQuota = `SELECT 1 FROM kv_settings WHERE name = 'default_quota' FOR SHARE`

	// sqlReturnLease ends holder $2's lease on project $1, after
	// sqlLockUsage in the same transaction: its figures move into the usage
	// row and its reservation is released. Nothing happens when the lease
	// was folded already.
	sqlReturnLease = `
WITH l AS (
    DELETE FROM kv_leases WHERE project = $1 AND holder = $2
    RETURNING reserved, bytes, entries, next_expiry, version
)
UPDATE kv_usage u
SET bytes = u.bytes + l.bytes, entries = u.entries + l.entries, reserved = u.reserved - l.reserved,
    next_expiry = least(u.next_expiry, l.next_expiry), version = greatest(u.version, l.version)
FROM l
WHERE u.project = $1`

	// sqlLockLeasedDefault locks, in project order, the usage rows of the
	// projects without a quota override that have leases: a change of the
	// default quota folds those leases (sqlFoldLeasedDefault) under them.
	sqlLockLeasedDefault = `
SELECT u.project FROM kv_usage u
WHERE u.quota IS NULL AND u.project IN (SELECT project FROM kv_leases)
ORDER BY u.project
FOR UPDATE`

	// sqlFoldLeasedDefault is sqlFoldLeases for every project without a
	// quota override; like sqlProjects it spans projects, and runs only
	// when an administrator changes the default quota.
	sqlFoldLeasedDefault = `
WITH gone AS (
    DELETE FROM kv_leases l USING kv_usage u
    WHERE u.project = l.project AND u.quota IS NULL
    RETURNING l.project, l.reserved, l.bytes, l.entries, l.next_expiry, l.version
), g AS (
    SELECT project, sum(reserved)::int8 AS r, sum(bytes)::int8 AS b, sum(entries)::int8 AS e,
           min(next_expiry) AS x, max(version) AS v
    FROM gone GROUP BY project
)
UPDATE kv_usage u
SET bytes = u.bytes + g.b, entries = u.entries + g.e, reserved = u.reserved - g.r,
    next_expiry = least(u.next_expiry, g.x), version = greatest(u.version, g.v)
FROM g
WHERE u.project = g.project`
)

// sqlLeaseSet writes a batch's Sets of one project under holder $11's lease,
// in one statement that touches the lease row and the entries but not the
// usage row. Parameters as sqlFastSet's ($2..$4 each key once, sorted, so
// that two holders writing the same keys lock them in the same order; $6
// their sizes, $7 the bound of every item, $8 the shortest TTL, $9 each
// key's call position, $10 the number of calls), and $12 the lease's
// lifetime in microseconds, by which a write extends its deadline.
//
// It writes only if the lease row exists (no exact-path transaction folded
// it) and its reservation holds the bound of the batch on top of what the
// lease holds already. The batch's versions are base + 1 .. base + $10,
// where base is the highest of the lease's version and the stored versions
// of the keys: above what each key has, and for a key not stored, above
// what it had before it was deleted (a delete folds every lease of its
// project, so this lease was granted after it, from the counter). It
// returns base, or no row when it wrote nothing (for the exact path).
//
// The replaced rows' sizes and versions are read in the statement's
// snapshot; another writer (a holder of another committer or daemon) may
// change one of those keys before the upsert reaches it. The upsert
// therefore replaces a row only if it still has the version read (versions
// grow on every write, so the same version is the same row), and the
// statement checks that every key was replaced or inserted as read; if
// not, kv_lease_conflict fails it, the transaction rolls back, and the
// calls go to the exact path.
const sqlLeaseSet = `
WITH old AS (
    SELECT e.key, octet_length(e.key) + octet_length(e.value) AS size, e.version
    FROM unnest($2::bytea[]) AS q(k)
    CROSS JOIN LATERAL (
        SELECT key, value, version FROM kv_entries WHERE project = $1 AND key = q.k OFFSET 0
    ) e
), lease AS (
    UPDATE kv_leases l
    SET bytes = l.bytes + $6 - (SELECT coalesce(sum(size), 0) FROM old),
        entries = l.entries + cardinality($2::bytea[]) - (SELECT count(*) FROM old),
        version = greatest(l.version, (SELECT coalesce(max(version), 0) FROM old)) + $10,
        next_expiry = least(l.next_expiry, coalesce($5::timestamptz, now()) + $8::int8 * interval '1 microsecond'),
        deadline = coalesce($5::timestamptz, now()) + $12::int8 * interval '1 microsecond'
    WHERE l.project = $1 AND l.holder = $11
      AND l.bytes + $7 <= l.reserved
    RETURNING l.version - $10 AS base
), up AS (
    INSERT INTO kv_entries (project, key, value, expires_at, version)
    SELECT $1::text, u.k, u.v,
           CASE WHEN u.t > 0 THEN coalesce($5::timestamptz, now()) + u.t * interval '1 microsecond' END,
           lease.base + u.o
    FROM unnest($2::bytea[], $3::bytea[], $4::int8[], $9::int8[]) AS u(k, v, t, o), lease
    ON CONFLICT (project, key) DO UPDATE
    SET value = excluded.value, expires_at = excluded.expires_at, version = excluded.version
    WHERE kv_entries.version = (SELECT o.version FROM old o WHERE o.key = excluded.key)
    RETURNING xmax = 0 AS inserted
)
SELECT base,
       CASE WHEN (SELECT count(*) FROM up) <> cardinality($2::bytea[])
              OR (SELECT count(*) FROM up WHERE inserted) <> cardinality($2::bytea[]) - (SELECT count(*) FROM old)
            THEN kv_lease_conflict($1) END
FROM lease`
