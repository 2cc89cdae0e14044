-- Trading: every stake is a bet (with its idempotency key), aggregated per user, market and
-- outcome in positions; settlements record how a market's pool was paid out.

CREATE TABLE bets (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    market_id       INTEGER NOT NULL REFERENCES markets (id),
    outcome         INTEGER NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    balance_after   INTEGER NOT NULL CHECK (balance_after >= 0),
    idempotency_key TEXT,
    fingerprint     TEXT,
    created_at      INTEGER NOT NULL,
    FOREIGN KEY (market_id, outcome) REFERENCES outcomes (market_id, idx)
) STRICT;

CREATE UNIQUE INDEX bets_idempotency ON bets (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX bets_market ON bets (market_id);

CREATE TABLE positions (
    market_id  INTEGER NOT NULL REFERENCES markets (id),
    outcome    INTEGER NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    amount     INTEGER NOT NULL CHECK (amount > 0),
    payout     INTEGER CHECK (payout >= 0),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (market_id, outcome, user_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX positions_user ON positions (user_id, market_id);

CREATE TABLE settlements (
    market_id  INTEGER PRIMARY KEY REFERENCES markets (id),
    kind       TEXT    NOT NULL CHECK (kind IN ('resolved', 'refunded')),
    winner     INTEGER,
    pool       INTEGER NOT NULL,
    paid       INTEGER NOT NULL,
    leftover   INTEGER NOT NULL,
    rule       TEXT    NOT NULL,
    settled_at INTEGER NOT NULL,
    CHECK (paid = pool)
) STRICT;

CREATE INDEX ledger_market ON ledger (market_id) WHERE market_id IS NOT NULL;
CREATE INDEX markets_active_close ON markets (close_time) WHERE status = 'active' AND close_time IS NOT NULL;
