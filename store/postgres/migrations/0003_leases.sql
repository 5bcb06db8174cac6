-- Quota leases (see the package doc, "Leases"). A committer that finds a
-- project's writes back to back reserves a slice of the project's remaining
-- quota and a range of its version counter in the project's usage row, in
-- a short transaction, and then writes the project's Sets under its lease:
-- each transaction updates the holder's lease row only, so transactions of
-- one project no longer wait for each other's commit.
--
-- kv_usage.reserved is the sum of the reservations of the project's leases;
-- a lease is granted only while bytes + reserved stays within the quota,
-- and the writes under a lease stay within its reservation, so the quota
-- holds without the usage row's lock. A project's usage is kv_usage.bytes
-- plus its leases' bytes.
ALTER TABLE kv_usage ADD COLUMN reserved bigint NOT NULL DEFAULT 0;

-- One row per lease: project and holder (a committer of one daemon, named
-- by a random id the daemon draws at start). bytes and entries are what the
-- writes under it added (negative when they shrank entries); next_expiry
-- the earliest expiry they wrote; version the highest version they gave
-- (at the grant, the project's counter), which a fold moves into the
-- counter; deadline is when another daemon may fold the lease, if its
-- holder has not written or returned it by then.
CREATE TABLE kv_leases (
    project     text COLLATE "C" NOT NULL,
    holder      text COLLATE "C" NOT NULL,
    reserved    bigint NOT NULL CHECK (reserved >= 0),
    bytes       bigint NOT NULL DEFAULT 0,
    entries     bigint NOT NULL DEFAULT 0,
    next_expiry timestamptz,
    version     bigint NOT NULL,
    deadline    timestamptz NOT NULL,
    PRIMARY KEY (project, holder)
) WITH (fillfactor = 50);

-- kv_lease_conflict ends a write under a lease that found a key changed by
-- another writer after it read it: the statement fails, its transaction
-- rolls back, and the committer decides the calls again on the exact path.
CREATE FUNCTION kv_lease_conflict(project text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'KVL01',
        MESSAGE = format('project %s: a key written under a lease changed meanwhile', project);
END
$$;
