-- Webhooks (src/domain/webhook.rs). A subscription's `markets` and `events` are JSON arrays
-- (NULL: every market, every type); it is sent the events after `after_seq`, the newest one
-- when it was made. A delivery is one event for one subscription (at most one: the unique key
-- makes dispatching the same event twice a no-op); each attempt is a row of its own.
-- `webhook_dispatch` holds the dispatcher's cursor: the last event turned into deliveries.
CREATE TABLE webhooks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    url        TEXT    NOT NULL,
    secret     TEXT    NOT NULL,
    markets    TEXT,
    events     TEXT,
    after_seq  INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX webhooks_by_user ON webhooks (user_id, id);

CREATE TABLE webhook_deliveries (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_seq  INTEGER NOT NULL,
    event_type TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    status     TEXT    NOT NULL DEFAULT 'pending',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (webhook_id, event_seq)
) STRICT;
CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (updated_at);

CREATE TABLE webhook_attempts (
    delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    n           INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, n)
) STRICT, WITHOUT ROWID;

CREATE TABLE webhook_dispatch (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    dispatched_through INTEGER NOT NULL
) STRICT;
INSERT INTO webhook_dispatch (id, dispatched_through) VALUES (1, (SELECT coalesce(max(seq), 0) FROM events));
