-- Market counts per status, kept by triggers, so a list's total is one row read instead of a
-- count over tens of thousands of index entries.

CREATE TABLE market_counts (
    status TEXT    PRIMARY KEY,
    n      INTEGER NOT NULL CHECK (n >= 0)
) STRICT, WITHOUT ROWID;

INSERT INTO market_counts (status, n)
SELECT s.status, (SELECT count(*) FROM markets m WHERE m.status = s.status)
  FROM (SELECT 'active' AS status UNION ALL SELECT 'closed' UNION ALL SELECT 'resolved' UNION ALL SELECT 'cancelled') s;

CREATE TRIGGER market_counts_insert AFTER INSERT ON markets BEGIN
    UPDATE market_counts SET n = n + 1 WHERE status = new.status;
END;

CREATE TRIGGER market_counts_delete AFTER DELETE ON markets BEGIN
    UPDATE market_counts SET n = n - 1 WHERE status = old.status;
END;

CREATE TRIGGER market_counts_status AFTER UPDATE OF status ON markets WHEN old.status != new.status BEGIN
    UPDATE market_counts SET n = n - 1 WHERE status = old.status;
    UPDATE market_counts SET n = n + 1 WHERE status = new.status;
END;
