-- Live markets (src/domain/event.rs). `events` is the outbox: every change a client may care
-- about is a row here, written in the change's own transaction. The single writer commits in
-- the order it assigns `seq`; AUTOINCREMENT never uses a number twice, even after the rows
-- before it are pruned. `event_state` remembers how far the pruning job went, so a client
-- resuming from before that is told its events are gone.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL,
    market_id  INTEGER NOT NULL,
    data       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE event_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through INTEGER NOT NULL
) STRICT;
INSERT INTO event_state (id, pruned_through) VALUES (1, 0);

-- A market's pools and volume after the last stake of each minute it was staked in: a point
-- of its history is one lookup of the last row before the point's end.
CREATE TABLE market_history (
    market_id INTEGER NOT NULL,
    minute    INTEGER NOT NULL,
    pools     TEXT    NOT NULL,
    volume    INTEGER NOT NULL,
    PRIMARY KEY (market_id, minute)
) STRICT, WITHOUT ROWID;

-- Markets staked on before this migration: their state now, as of their last change.
INSERT INTO market_history (market_id, minute, pools, volume)
SELECT m.id, (m.updated_at / 60000) * 60000,
       (SELECT group_concat(o.pool, ',' ORDER BY o.idx) FROM outcomes o WHERE o.market_id = m.id),
       m.volume
  FROM markets m
 WHERE m.volume > 0;
