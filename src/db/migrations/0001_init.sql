-- Users, markets and their outcomes. Times are Unix milliseconds (UTC); money is integer credits.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL COLLATE NOCASE UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'moderator', 'user')),
    balance       INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE markets (
    id          INTEGER PRIMARY KEY,
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

-- The list queries: filter by status and/or creator, sort by volume, created_at, close_time or
-- name, ties broken by id.
CREATE INDEX markets_status_volume  ON markets (status, volume, id);
CREATE INDEX markets_status_created ON markets (status, created_at, id);
CREATE INDEX markets_status_close   ON markets (status, close_time, id);
CREATE INDEX markets_status_name    ON markets (status, name COLLATE NOCASE, id);
CREATE INDEX markets_volume         ON markets (volume, id);
CREATE INDEX markets_created        ON markets (created_at, id);
CREATE INDEX markets_close_time     ON markets (close_time, id);
CREATE INDEX markets_name           ON markets (name COLLATE NOCASE, id);
CREATE INDEX markets_creator        ON markets (creator_id, created_at, id);

CREATE TABLE outcomes (
    market_id INTEGER NOT NULL REFERENCES markets (id) ON DELETE CASCADE,
    idx       INTEGER NOT NULL CHECK (idx BETWEEN 0 AND 9),
    label     TEXT    NOT NULL,
    pool      INTEGER NOT NULL DEFAULT 0 CHECK (pool >= 0),
    PRIMARY KEY (market_id, idx)
) STRICT, WITHOUT ROWID;
