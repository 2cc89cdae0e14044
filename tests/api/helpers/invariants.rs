//! The money invariants of DESIGN.md section 4 and the derived counts, as SQL that runs on both
//! engines.
//!
//! A portable copy of the queries in `agora::db::invariants` (private there, and written for
//! SQLite: its conservation check returns a boolean, which PostgreSQL will not read as a
//! number). Each query returns one BIGINT: how many rows break the rule.

use super::db::TestDb;

/// Each invariant: what it says, and a query counting its violations.
pub const CHECKS: &[(&str, &str)] = &[
    (
        "credits are conserved: balances + pools of unsettled markets == grants",
        "SELECT count(*) FROM (
            SELECT (SELECT coalesce(sum(balance), 0) FROM users)
                 + (SELECT coalesce(sum(o.pool), 0) FROM outcomes o JOIN markets m ON m.id = o.market_id
                     WHERE m.status IN ('active', 'closed'))
                 - (SELECT coalesce(sum(amount), 0) FROM ledger WHERE kind = 'GRANT') AS difference
         ) conservation WHERE difference != 0",
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

impl TestDb {
    /// The invariants that do not hold (empty when all do).
    pub fn broken_invariants(&self) -> Vec<&'static str> {
        CHECKS
            .iter()
            .filter(|(_, sql)| self.query_one::<i64>(sql, &[]) != 0)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Checks every invariant.
    #[track_caller]
    pub fn assert_invariants(&self) {
        let broken = self.broken_invariants();
        assert!(broken.is_empty(), "broken invariants: {broken:?}");
    }
}
