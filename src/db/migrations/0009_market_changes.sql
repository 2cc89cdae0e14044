-- What changed in markets, whoever changed it (this server, `agora seed` or `agora users` run
-- beside it on the same file): the server polls the rows past the last it saw and brings what
-- it keeps in memory (the search index, the read cache) up to date, then deletes them. Only
-- changes that matter to those are noted: a new or deleted market, its text, status or close
-- time, its search vector. A stake (volume, pools) is not: it is this server's own.
--
-- kind: 'm' a market was created, 's' its status, text or close time changed, 'd' it was
-- deleted, 'v' its vector was stored. AUTOINCREMENT: a sequence number is never used twice,
-- even after the rows before it are deleted, so a reader can tell rows it has not seen.
CREATE TABLE market_changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    market_id INTEGER NOT NULL,
    kind      TEXT    NOT NULL CHECK (kind IN ('m', 's', 'd', 'v'))
) STRICT;

CREATE TRIGGER market_changes_insert AFTER INSERT ON markets BEGIN
    INSERT INTO market_changes (market_id, kind) VALUES (new.id, 'm');
END;

CREATE TRIGGER market_changes_update AFTER UPDATE ON markets
WHEN old.status IS NOT new.status OR old.name IS NOT new.name
  OR old.description IS NOT new.description OR old.close_time IS NOT new.close_time
BEGIN
    INSERT INTO market_changes (market_id, kind) VALUES (new.id, 's');
END;

CREATE TRIGGER market_changes_delete AFTER DELETE ON markets BEGIN
    INSERT INTO market_changes (market_id, kind) VALUES (old.id, 'd');
END;

CREATE TRIGGER market_changes_vector_insert AFTER INSERT ON market_vectors BEGIN
    INSERT INTO market_changes (market_id, kind) VALUES (new.market_id, 'v');
END;

CREATE TRIGGER market_changes_vector_update AFTER UPDATE ON market_vectors BEGIN
    INSERT INTO market_changes (market_id, kind) VALUES (new.market_id, 'v');
END;
