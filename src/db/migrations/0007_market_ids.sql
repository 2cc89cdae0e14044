-- Market ids are never reused. A plain INTEGER PRIMARY KEY takes max(id) + 1, so deleting the
-- newest market handed its id (and, to clients, its cached ETag) to the next market;
-- AUTOINCREMENT remembers the largest id ever handed out (in sqlite_sequence) instead.
--
-- SQLite cannot add AUTOINCREMENT to a table, so `markets` is rebuilt the documented way
-- (https://sqlite.org/lang_altertable.html#otheralter): new table, copy, drop, rename, then
-- its indexes (migrations 1 and 3) and triggers (migrations 4 and 6) again. The runner applies
-- migrations with foreign-key enforcement off, so dropping the old table cascades nothing into
-- `outcomes` or `market_vectors`, and checks every foreign key before it commits. The tables
-- that reference markets (outcomes, bets, positions, ledger, settlements, market_vectors) name
-- `markets` and so refer to the new table after the rename; ids are copied unchanged, so their
-- rows, the FTS index (`markets_fts` reads `markets` by name, rowid = id), the per-status
-- counts and the market ids inside job payloads all stay valid.

CREATE TABLE markets_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    description TEXT,
    creator_id  INTEGER NOT NULL REFERENCES users (id),
    status      TEXT    NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'closed', 'resolved', 'cancelled')),
    close_time  INTEGER,
    resolution  INTEGER,
    volume      INTEGER NOT NULL DEFAULT 0 CHECK (volume >= 0),
    version     INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    CHECK ((status = 'resolved') = (resolution IS NOT NULL))
) STRICT;

INSERT INTO markets_new (id, name, description, creator_id, status, close_time, resolution,
                         volume, version, created_at, updated_at)
SELECT id, name, description, creator_id, status, close_time, resolution,
       volume, version, created_at, updated_at
  FROM markets;

DROP TABLE markets;
ALTER TABLE markets_new RENAME TO markets;

CREATE INDEX markets_status_volume  ON markets (status, volume, id);
CREATE INDEX markets_status_created ON markets (status, created_at, id);
CREATE INDEX markets_status_close   ON markets (status, close_time, id);
CREATE INDEX markets_status_name    ON markets (status, name COLLATE NOCASE, id);
CREATE INDEX markets_volume         ON markets (volume, id);
CREATE INDEX markets_created        ON markets (created_at, id);
CREATE INDEX markets_close_time     ON markets (close_time, id);
CREATE INDEX markets_name           ON markets (name COLLATE NOCASE, id);
CREATE INDEX markets_creator        ON markets (creator_id, created_at, id);
CREATE INDEX markets_active_close   ON markets (close_time) WHERE status = 'active' AND close_time IS NOT NULL;

CREATE TRIGGER market_counts_insert AFTER INSERT ON markets BEGIN
    UPDATE market_counts SET n = n + 1 WHERE status = new.status;
END;

CREATE TRIGGER market_counts_delete AFTER DELETE ON markets BEGIN
    UPDATE market_counts SET n = n - 1 WHERE status = old.status;
END;

CREATE TRIGGER market_counts_status AFTER UPDATE OF status ON markets WHEN old.status != new.status BEGIN
    UPDATE market_counts SET n = n - 1 WHERE status = old.status;
    UPDATE market_counts SET n = n + 1 WHERE status = new.status;
END;

CREATE TRIGGER markets_fts_insert AFTER INSERT ON markets BEGIN
    INSERT INTO markets_fts (rowid, name, description) VALUES (new.id, new.name, new.description);
END;

CREATE TRIGGER markets_fts_delete AFTER DELETE ON markets BEGIN
    INSERT INTO markets_fts (markets_fts, rowid, name, description)
    VALUES ('delete', old.id, old.name, old.description);
END;

CREATE TRIGGER markets_fts_update AFTER UPDATE OF name, description ON markets BEGIN
    INSERT INTO markets_fts (markets_fts, rowid, name, description)
    VALUES ('delete', old.id, old.name, old.description);
    INSERT INTO markets_fts (rowid, name, description) VALUES (new.id, new.name, new.description);
END;

-- A market deleted before this migration may have been the newest: its id is known only from
-- the job that indexed it, so the sequence starts above every market id a job has named too.
INSERT INTO sqlite_sequence (name, seq)
SELECT 'markets', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'markets');
UPDATE sqlite_sequence
   SET seq = max(seq, coalesce((SELECT max(json_extract(payload, '$.market_id')) FROM jobs
                                 WHERE json_type(payload, '$.market_id') = 'integer'), 0))
 WHERE name = 'markets';
