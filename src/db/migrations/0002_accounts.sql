-- Accounts: the credit ledger (a user's balance equals the sum of its entries) and refresh
-- tokens (stored as SHA-256 hashes, grouped in rotation families).

CREATE TABLE ledger (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    kind       TEXT    NOT NULL CHECK (kind IN ('GRANT', 'STAKE', 'PAYOUT', 'REFUND')),
    amount     INTEGER NOT NULL,
    market_id  INTEGER REFERENCES markets (id),
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX ledger_user ON ledger (user_id, id);

CREATE TABLE refresh_tokens (
    id         INTEGER PRIMARY KEY,
    token_hash TEXT    NOT NULL UNIQUE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- Accounts created before the ledger existed get their balance recorded as a grant.
INSERT INTO ledger (user_id, kind, amount, created_at)
SELECT id, 'GRANT', balance, created_at FROM users WHERE balance > 0;
