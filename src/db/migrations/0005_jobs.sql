-- The durable job queue. A job is inserted in the same transaction as the change that needs
-- it, claimed by one worker at a time under a lease, retried with backoff, and ends
-- `succeeded` or `dead` (its last error kept). Periodic jobs are one row each, queued again
-- after every run. Times are Unix milliseconds.

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    status       TEXT    NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'running', 'succeeded', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts INTEGER CHECK (max_attempts IS NULL OR max_attempts >= 1),  -- NULL: the configured default
    run_at       INTEGER NOT NULL,
    lease_until  INTEGER,
    lease_token  TEXT,
    last_error   TEXT,
    result       TEXT,
    owner_id     INTEGER REFERENCES users (id) ON DELETE SET NULL,
    dedupe_key   TEXT,
    every_ms     INTEGER CHECK (every_ms IS NULL OR every_ms > 0),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    CHECK ((status = 'running') = (lease_until IS NOT NULL))
) STRICT;

-- Claiming: the oldest due queued job; and running jobs whose lease ran out.
CREATE INDEX jobs_due ON jobs (status, run_at, id);
CREATE INDEX jobs_lease ON jobs (status, lease_until) WHERE status = 'running';
-- At most one queued job per key: a market edited twice before its index job runs is indexed
-- once, from its latest text.
CREATE UNIQUE INDEX jobs_queued_key ON jobs (dedupe_key) WHERE status = 'queued';
CREATE INDEX jobs_owner ON jobs (owner_id, id);
