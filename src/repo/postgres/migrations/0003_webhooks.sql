-- Webhooks (src/domain/webhook.rs); the same tables as SQLite's migration 11. The dispatcher's
-- cursor row is locked (FOR UPDATE) by the transaction that dispatches, so several agora
-- processes take turns and each event is dispatched once.
CREATE TABLE webhooks (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    url        TEXT   NOT NULL,
    secret     TEXT   NOT NULL,
    markets    TEXT,
    events     TEXT,
    after_seq  BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhooks_by_user ON webhooks (user_id, id);

CREATE TABLE webhook_deliveries (
    id         BIGSERIAL PRIMARY KEY,
    webhook_id BIGINT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_seq  BIGINT NOT NULL,
    event_type TEXT   NOT NULL,
    body       TEXT   NOT NULL,
    status     TEXT   NOT NULL DEFAULT 'pending',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (webhook_id, event_seq)
);
CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (updated_at);

CREATE TABLE webhook_attempts (
    delivery_id BIGINT  NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    n           INTEGER NOT NULL,
    at          BIGINT  NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms BIGINT  NOT NULL,
    PRIMARY KEY (delivery_id, n)
);

CREATE TABLE webhook_dispatch (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    dispatched_through BIGINT NOT NULL
);
INSERT INTO webhook_dispatch (id, dispatched_through) VALUES (1, (SELECT coalesce(max(seq), 0) FROM events));
