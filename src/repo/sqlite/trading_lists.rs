//! The trading lists on SQLite: a market's positions, a user's positions and a user's ledger,
//! each one page (by offset or by keyset cursor) and its total, read in one snapshot.
//!
//! Each list is read in the order of an index (migration 8 adds the positions' ones), so a page
//! is an index seek plus a page of steps. The position lists sort in mixed directions (largest
//! stake first, then staker and outcome ascending), which one row-value comparison cannot
//! seek; a cursor page there is two seeks merged: the rest of the cursor's tie group, then
//! everything past it, at most a page each.

use rusqlite::{Connection, Row, ToSql};

use super::{from_millis, markets::status_at, to_millis};
use crate::{
    db::snapshot,
    domain::{
        paging::{Key, KeyPart},
        trading::{LedgerEntry, MarketPosition, UserPosition},
        user::UserSummary,
        Page, Paging,
    },
    repo::RepoError,
};

/// The SQL of one list. Parameters: `?1` the owner (market or user), `?2` the rows to read;
/// then `?3` the offset, or `?3...` the cursor's key parts; the total takes the owner only.
struct ListSql {
    by_offset: &'static str,
    after: &'static str,
    count: &'static str,
}

fn page<T>(
    conn: &Connection,
    sql: &ListSql,
    owner: i64,
    paging: &Paging,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    key: impl Fn(&T) -> Key,
) -> Result<Page<T>, RepoError> {
    let (fetch, offset) = (paging.fetch(), paging.offset as i64);
    let mut params: Vec<&dyn ToSql> = vec![&owner, &fetch];
    let items_sql = match &paging.after {
        None => {
            params.push(&offset);
            sql.by_offset
        }
        Some(key) => {
            params.extend(key.iter().map(|k| k as &dyn ToSql));
            sql.after
        }
    };
    snapshot(conn, || {
        let rows = conn
            .prepare_cached(items_sql)?
            .query_map(&params[..], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let total: i64 = conn
            .prepare_cached(sql.count)?
            .query_row([owner], |r| r.get(0))?;
        Ok(Page::of(rows, total as u64, paging, key))
    })
}

const MARKET_POSITIONS: ListSql = ListSql {
    by_offset: "SELECT p.user_id, u.username, p.outcome, p.amount, p.payout, p.updated_at
                  FROM positions p JOIN users u ON u.id = p.user_id
                 WHERE p.market_id = ?1
                 ORDER BY p.amount DESC, p.user_id, p.outcome LIMIT ?2 OFFSET ?3",
    after: "SELECT p.user_id, u.username, p.outcome, p.amount, p.payout, p.updated_at
              FROM (SELECT * FROM (SELECT user_id, outcome, amount, payout, updated_at FROM positions
                                    WHERE market_id = ?1 AND amount = ?3 AND (user_id, outcome) > (?4, ?5)
                                    ORDER BY user_id, outcome LIMIT ?2)
                    UNION ALL
                    SELECT * FROM (SELECT user_id, outcome, amount, payout, updated_at FROM positions
                                    WHERE market_id = ?1 AND amount < ?3
                                    ORDER BY amount DESC, user_id, outcome LIMIT ?2)) p
              JOIN users u ON u.id = p.user_id
             ORDER BY p.amount DESC, p.user_id, p.outcome LIMIT ?2",
    count: "SELECT count(*) FROM positions WHERE market_id = ?1",
};

/// A page of the positions on a market, largest first.
pub(super) fn market_positions(
    conn: &Connection,
    market_id: i64,
    paging: &Paging,
) -> Result<Page<MarketPosition>, RepoError> {
    page(
        conn,
        &MARKET_POSITIONS,
        market_id,
        paging,
        |r| {
            Ok(MarketPosition {
                user: UserSummary {
                    id: r.get(0)?,
                    username: r.get(1)?,
                },
                outcome: r.get(2)?,
                amount: r.get(3)?,
                payout: r.get(4)?,
                updated_at: from_millis(r.get(5)?),
            })
        },
        |p| {
            vec![
                KeyPart::Int(p.amount),
                KeyPart::Int(p.user.id),
                KeyPart::Int(i64::from(p.outcome)),
            ]
        },
    )
}

const USER_POSITIONS: ListSql = ListSql {
    by_offset: "SELECT p.market_id, m.name, m.status, p.outcome, o.label, p.amount, p.payout, p.updated_at
                  FROM positions p
                  JOIN markets m ON m.id = p.market_id
                  JOIN outcomes o ON o.market_id = p.market_id AND o.idx = p.outcome
                 WHERE p.user_id = ?1
                 ORDER BY p.updated_at DESC, p.market_id DESC, p.outcome LIMIT ?2 OFFSET ?3",
    after: "SELECT p.market_id, m.name, m.status, p.outcome, o.label, p.amount, p.payout, p.updated_at
              FROM (SELECT * FROM (SELECT market_id, outcome, amount, payout, updated_at FROM positions
                                    WHERE user_id = ?1 AND updated_at = ?3 AND market_id = ?4 AND outcome > ?5
                                    ORDER BY outcome LIMIT ?2)
                    UNION ALL
                    SELECT * FROM (SELECT market_id, outcome, amount, payout, updated_at FROM positions
                                    WHERE user_id = ?1 AND (updated_at, market_id) < (?3, ?4)
                                    ORDER BY updated_at DESC, market_id DESC, outcome LIMIT ?2)) p
              JOIN markets m ON m.id = p.market_id
              JOIN outcomes o ON o.market_id = p.market_id AND o.idx = p.outcome
             ORDER BY p.updated_at DESC, p.market_id DESC, p.outcome LIMIT ?2",
    count: "SELECT count(*) FROM positions WHERE user_id = ?1",
};

/// A page of a user's positions, most recently changed first.
pub(super) fn user_positions(
    conn: &Connection,
    user_id: i64,
    paging: &Paging,
) -> Result<Page<UserPosition>, RepoError> {
    page(
        conn,
        &USER_POSITIONS,
        user_id,
        paging,
        |r| {
            Ok(UserPosition {
                market_id: r.get(0)?,
                market_name: r.get(1)?,
                market_status: status_at(r, 2)?,
                outcome: r.get(3)?,
                outcome_label: r.get(4)?,
                amount: r.get(5)?,
                payout: r.get(6)?,
                updated_at: from_millis(r.get(7)?),
            })
        },
        |p| {
            vec![
                KeyPart::Int(to_millis(p.updated_at)),
                KeyPart::Int(p.market_id),
                KeyPart::Int(i64::from(p.outcome)),
            ]
        },
    )
}

const LEDGER: ListSql = ListSql {
    by_offset: "SELECT id, kind, amount, market_id, created_at FROM ledger
                 WHERE user_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
    after: "SELECT id, kind, amount, market_id, created_at FROM ledger
             WHERE user_id = ?1 AND id < ?3 ORDER BY id DESC LIMIT ?2",
    count: "SELECT count(*) FROM ledger WHERE user_id = ?1",
};

/// A page of a user's ledger, newest first.
pub(super) fn ledger(
    conn: &Connection,
    user_id: i64,
    paging: &Paging,
) -> Result<Page<LedgerEntry>, RepoError> {
    page(
        conn,
        &LEDGER,
        user_id,
        paging,
        |r| {
            Ok(LedgerEntry {
                id: r.get(0)?,
                kind: r.get(1)?,
                amount: r.get(2)?,
                market_id: r.get(3)?,
                created_at: from_millis(r.get(4)?),
            })
        },
        |e| vec![KeyPart::Int(e.id)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, DbOptions};

    #[tokio::test]
    async fn every_list_page_reads_in_index_order_without_sorting_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), &DbOptions::default()).unwrap();
        db.read(|conn| {
            for sql in [&MARKET_POSITIONS, &USER_POSITIONS, &LEDGER] {
                for (text, merged) in [(sql.by_offset, false), (sql.after, true)] {
                    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {text}"))?;
                    let params = vec![1i64; stmt.parameter_count()];
                    let plan: Vec<String> = stmt
                        .query_map(rusqlite::params_from_iter(params), |r| {
                            r.get::<_, String>(3)
                        })?
                        .collect::<rusqlite::Result<_>>()?;
                    let plan = plan.join(" / ");
                    // A merged cursor page sorts only its two seeks' few rows.
                    let sorts = plan.matches("TEMP B-TREE").count();
                    assert!(sorts <= 2 * usize::from(merged), "{text}: {plan}");
                    assert!(
                        !plan.contains("SCAN positions") && !plan.contains("SCAN ledger"),
                        "{text}: {plan}"
                    );
                }
            }
            Ok::<_, RepoError>(())
        })
        .await
        .unwrap();
    }
}
