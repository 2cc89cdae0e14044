//! The money invariants of the design (DESIGN.md section 4), and the derived counts, checked
//! by SQL over a whole database: used by the test suite after every concurrent scenario and by
//! the load benchmark after its run.

use rusqlite::Connection;

/// Each invariant: what it says, and a query counting its violations (one `BIGINT`). The SQL
/// is portable: the same queries check a PostgreSQL database (the test suite runs them on
/// both engines).
pub const CHECKS: &[(&str, &str)] = &[
    (
        "credits are conserved: balances + pools of unsettled markets == grants",
        "SELECT CAST(CASE WHEN (SELECT coalesce(sum(balance), 0) FROM users)
              + (SELECT coalesce(sum(o.pool), 0) FROM outcomes o JOIN markets m ON m.id = o.market_id
                  WHERE m.status IN ('active', 'closed'))
              - (SELECT coalesce(sum(amount), 0) FROM ledger WHERE kind = 'GRANT') != 0
              THEN 1 ELSE 0 END AS BIGINT)",
    ),
    ("no balance is negative", "SELECT count(*) FROM users WHERE balance < 0"),
    (
        "every balance equals the sum of its ledger entries",
        "SELECT count(*) FROM users u
          WHERE balance != (SELECT coalesce(sum(amount), 0) FROM ledger l WHERE l.user_id = u.id)",
    ),
    (
        "market volume == positions == stake entries == bets == pools",
        "SELECT count(*) FROM markets m WHERE
            volume != (SELECT coalesce(sum(amount), 0) FROM positions p WHERE p.market_id = m.id)
         OR volume != (SELECT coalesce(-sum(amount), 0) FROM ledger l WHERE l.market_id = m.id AND l.kind = 'STAKE')
         OR volume != (SELECT coalesce(sum(amount), 0) FROM bets b WHERE b.market_id = m.id)
         OR volume != (SELECT coalesce(sum(pool), 0) FROM outcomes o WHERE o.market_id = m.id)",
    ),
    (
        "a settled market paid out exactly its pool, once per position",
        "SELECT count(*) FROM markets m WHERE m.status IN ('resolved', 'cancelled') AND (
            volume != (SELECT coalesce(sum(amount), 0) FROM ledger l
                        WHERE l.market_id = m.id AND l.kind IN ('PAYOUT', 'REFUND'))
         OR volume != (SELECT coalesce(sum(payout), 0) FROM positions p WHERE p.market_id = m.id)
         OR EXISTS (SELECT 1 FROM positions p WHERE p.market_id = m.id AND p.payout IS NULL))",
    ),
    (
        "the per-status market counts match the markets",
        "SELECT count(*) FROM market_counts c WHERE n != (SELECT count(*) FROM markets m WHERE m.status = c.status)",
    ),
    (
        "unsettled markets paid nothing",
        "SELECT count(*) FROM markets m WHERE m.status IN ('active', 'closed')
            AND EXISTS (SELECT 1 FROM ledger l WHERE l.market_id = m.id AND l.kind IN ('PAYOUT', 'REFUND'))",
    ),
];

/// The invariants that do not hold (empty when all do).
pub fn violations(conn: &Connection) -> rusqlite::Result<Vec<&'static str>> {
    let mut broken = Vec::new();
    for (name, sql) in CHECKS {
        let count: i64 = conn.query_row(sql, [], |r| r.get(0))?;
        if count != 0 {
            broken.push(*name);
        }
    }
    Ok(broken)
}
