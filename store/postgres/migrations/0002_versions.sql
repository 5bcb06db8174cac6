-- Entry versions (see the store package doc). A project's version counter
-- lives in its usage row, which every write of the project already locks:
-- a write batch reads the counter under that lock, gives each write call the
-- next value and stores the last one back. Versions therefore increase
-- strictly per project (hence per key, across deletes, Clear and every
-- daemon) without a sequence, and stay on the project's node when the
-- schema is distributed by project.
ALTER TABLE kv_usage ADD COLUMN version bigint NOT NULL DEFAULT 0;
ALTER TABLE kv_entries ADD COLUMN version bigint NOT NULL DEFAULT 0;

-- Entries written before versions existed get 1, 2, … within their project,
-- in key order, and each project's counter starts after them.
UPDATE kv_entries e SET version = r.n
FROM (SELECT project, key, row_number() OVER (PARTITION BY project ORDER BY key) AS n
      FROM kv_entries) r
WHERE e.project = r.project AND e.key = r.key;

UPDATE kv_usage u SET version = coalesce(
    (SELECT max(e.version) FROM kv_entries e WHERE e.project = u.project), 0);
