-- Live markets (src/domain/event.rs); the same tables as SQLite's migration 10. Here a
-- sequence hands out `seq` before commit, so the transactions that append events take one
-- advisory lock just before the append and hold it to their commit (repo/postgres/events.rs):
-- events become visible in `seq` order, and a reader past `seq` N never finds a smaller one
-- appear later.
CREATE TABLE events (
    seq        BIGSERIAL PRIMARY KEY,
    kind       TEXT   NOT NULL,
    market_id  BIGINT NOT NULL,
    data       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE event_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through BIGINT NOT NULL
);
INSERT INTO event_state (id, pruned_through) VALUES (1, 0);

CREATE TABLE market_history (
    market_id BIGINT NOT NULL,
    minute    BIGINT NOT NULL,
    pools     TEXT   NOT NULL,
    volume    BIGINT NOT NULL,
    PRIMARY KEY (market_id, minute)
);

INSERT INTO market_history (market_id, minute, pools, volume)
SELECT m.id, (m.updated_at / 60000) * 60000,
       (SELECT string_agg(o.pool::text, ',' ORDER BY o.idx) FROM outcomes o WHERE o.market_id = m.id),
       m.volume
  FROM markets m
 WHERE m.volume > 0;
