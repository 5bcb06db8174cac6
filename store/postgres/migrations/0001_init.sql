-- Every table is keyed by project first, so that the schema can be
-- distributed by project (Citus: kv_entries and kv_usage distributed on
-- project and co-located, kv_settings a reference table). Nothing refers
-- across projects and nothing in the write path uses a sequence.

-- One row per stored entry, live or expired but not yet swept. Keys are
-- bytea, not text: a valid UTF-8 key may contain NUL, which text refuses, and
-- bytea compares byte by byte, which is the order List promises.
CREATE TABLE kv_entries (
    project    text COLLATE "C" NOT NULL,
    key        bytea NOT NULL,
    value      bytea NOT NULL,
    expires_at timestamptz,
    PRIMARY KEY (project, key)
) WITH (fillfactor = 80);

-- A project's expired entries, for the sweeper, the quota check and Usage.
CREATE INDEX kv_entries_expiry ON kv_entries (project, expires_at)
    WHERE expires_at IS NOT NULL;

-- One row per project: what its entries use, its quota override, and a lower
-- bound of its entries' expiries (NULL when none expires), so the sweeper
-- finds projects with expired entries without scanning kv_entries. Every
-- write of a project locks this row first, which makes the quota exact
-- across daemons. Rows are updated on every write batch; the low fillfactor
-- leaves room for HOT updates.
CREATE TABLE kv_usage (
    project     text COLLATE "C" PRIMARY KEY,
    bytes       bigint NOT NULL DEFAULT 0,
    entries     bigint NOT NULL DEFAULT 0,
    quota       bigint CHECK (quota > 0),
    next_expiry timestamptz
) WITH (fillfactor = 50);

CREATE INDEX kv_usage_next_expiry ON kv_usage (next_expiry)
    WHERE next_expiry IS NOT NULL;

-- Cluster-wide settings: 'default_quota' (bytes).
CREATE TABLE kv_settings (
    name  text PRIMARY KEY,
    value bigint NOT NULL
);
