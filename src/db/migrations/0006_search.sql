-- Search: a full-text index over market names and descriptions (kept in step with `markets`
-- by triggers) and one embedding vector per market, computed by `index_market` jobs.

CREATE VIRTUAL TABLE markets_fts USING fts5 (
    name, description,
    content = 'markets', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

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

INSERT INTO markets_fts (markets_fts) VALUES ('rebuild');

-- `vector` is little-endian f32; `content_hash` is the SHA-256 of the text it was computed
-- from, so unchanged text is never embedded again.
CREATE TABLE market_vectors (
    market_id    INTEGER PRIMARY KEY REFERENCES markets (id) ON DELETE CASCADE,
    model        TEXT    NOT NULL,
    content_hash TEXT    NOT NULL,
    vector       BLOB    NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
