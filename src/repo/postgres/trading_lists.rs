//! The trading lists on PostgreSQL: a market's positions, a user's positions and a user's
//! ledger, each one page (by offset or by keyset cursor) and its total, read in one snapshot.
//! Each is read in the order of an index; the position lists sort in mixed directions (largest
//! stake first, then staker and outcome ascending), which one row comparison cannot seek, so
//! a cursor page there is two seeks merged: the rest of the cursor's tie group, then
//! everything past it, at most a page each.

use futures_util::FutureExt;
use tokio_postgres::{types::ToSql, Row};

use super::{key_param, markets::status, snapshot, Pg, TxError};
use crate::{
    domain::{
        paging::{Key, KeyPart},
        trading::{LedgerEntry, MarketPosition, UserPosition},
        user::UserSummary,
        Page, Paging,
    },
    repo::{from_millis, to_millis, RepoError},
};

/// The SQL of one list. Parameters: `$1` the owner (market or user), `$2` the rows to read;
/// then `$3` the offset, or `$3...` the cursor's key parts; the total takes the owner only.
struct ListSql {
    by_offset: &'static str,
    after: &'static str,
    count: &'static str,
}

async fn page<T: Send + 'static>(
    pg: &Pg,
    sql: &'static ListSql,
    owner: i64,
    paging: Paging,
    row: fn(&Row) -> Result<T, TxError>,
    key: fn(&T) -> Key,
) -> Result<Page<T>, RepoError> {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> =
        vec![Box::new(owner), Box::new(paging.fetch())];
    let items_sql = match &paging.after {
        None => {
            params.push(Box::new(paging.offset as i64));
            sql.by_offset
        }
        Some(key) => {
            params.extend(key.iter().map(key_param));
            sql.after
        }
    };
    snapshot(pg, move |c| {
        async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
            let rows = c
                .rows(items_sql, &refs)
                .await?
                .iter()
                .map(row)
                .collect::<Result<Vec<_>, _>>()?;
            let total: i64 = c.one(sql.count, &[&owner]).await?.try_get(0)?;
            Ok(Page::of(rows, total as u64, &paging, key))
        }
        .boxed()
    })
    .await
}

const MARKET_POSITIONS: ListSql = ListSql {
    by_offset: "SELECT p.user_id, u.username, p.outcome, p.amount, p.payout, p.updated_at
                  FROM positions p JOIN users u ON u.id = p.user_id
                 WHERE p.market_id = $1
                 ORDER BY p.amount DESC, p.user_id, p.outcome LIMIT $2 OFFSET $3",
    after: "SELECT p.user_id, u.username, p.outcome, p.amount, p.payout, p.updated_at
              FROM ((SELECT user_id, outcome, amount, payout, updated_at FROM positions
                      WHERE market_id = $1 AND amount = $3::bigint AND (user_id, outcome) > ($4::bigint, $5::bigint)
                      ORDER BY user_id, outcome LIMIT $2)
                    UNION ALL
                    (SELECT user_id, outcome, amount, payout, updated_at FROM positions
                      WHERE market_id = $1 AND amount < $3::bigint
                      ORDER BY amount DESC, user_id, outcome LIMIT $2)) p
              JOIN users u ON u.id = p.user_id
             ORDER BY p.amount DESC, p.user_id, p.outcome LIMIT $2",
    count: "SELECT count(*) FROM positions WHERE market_id = $1",
};

/// A page of the positions on a market, largest first.
pub(super) async fn market_positions(
    pg: &Pg,
    market_id: i64,
    paging: Paging,
) -> Result<Page<MarketPosition>, RepoError> {
    page(
        pg,
        &MARKET_POSITIONS,
        market_id,
        paging,
        |r| {
            Ok(MarketPosition {
                user: UserSummary {
                    id: r.try_get(0)?,
                    username: r.try_get(1)?,
                },
                outcome: r.try_get::<_, i64>(2)? as u32,
                amount: r.try_get(3)?,
                payout: r.try_get(4)?,
                updated_at: from_millis(r.try_get(5)?),
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
    .await
}

const USER_POSITIONS: ListSql = ListSql {
    by_offset: "SELECT p.market_id, m.name, m.status, p.outcome, o.label, p.amount, p.payout, p.updated_at
                  FROM positions p
                  JOIN markets m ON m.id = p.market_id
                  JOIN outcomes o ON o.market_id = p.market_id AND o.idx = p.outcome
                 WHERE p.user_id = $1
                 ORDER BY p.updated_at DESC, p.market_id DESC, p.outcome LIMIT $2 OFFSET $3",
    after: "SELECT p.market_id, m.name, m.status, p.outcome, o.label, p.amount, p.payout, p.updated_at
              FROM ((SELECT market_id, outcome, amount, payout, updated_at FROM positions
                      WHERE user_id = $1 AND updated_at = $3::bigint AND market_id = $4::bigint AND outcome > $5::bigint
                      ORDER BY outcome LIMIT $2)
                    UNION ALL
                    (SELECT market_id, outcome, amount, payout, updated_at FROM positions
                      WHERE user_id = $1 AND (updated_at, market_id) < ($3::bigint, $4::bigint)
                      ORDER BY updated_at DESC, market_id DESC, outcome LIMIT $2)) p
              JOIN markets m ON m.id = p.market_id
              JOIN outcomes o ON o.market_id = p.market_id AND o.idx = p.outcome
             ORDER BY p.updated_at DESC, p.market_id DESC, p.outcome LIMIT $2",
    count: "SELECT count(*) FROM positions WHERE user_id = $1",
};

/// A page of a user's positions, most recently changed first.
pub(super) async fn user_positions(
    pg: &Pg,
    user_id: i64,
    paging: Paging,
) -> Result<Page<UserPosition>, RepoError> {
    page(
        pg,
        &USER_POSITIONS,
        user_id,
        paging,
        |r| {
            Ok(UserPosition {
                market_id: r.try_get(0)?,
                market_name: r.try_get(1)?,
                market_status: status(r.try_get(2)?)?,
                outcome: r.try_get::<_, i64>(3)? as u32,
                outcome_label: r.try_get(4)?,
                amount: r.try_get(5)?,
                payout: r.try_get(6)?,
                updated_at: from_millis(r.try_get(7)?),
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
    .await
}

const LEDGER: ListSql = ListSql {
    by_offset: "SELECT id, kind, amount, market_id, created_at FROM ledger
                 WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
    after: "SELECT id, kind, amount, market_id, created_at FROM ledger
             WHERE user_id = $1 AND id < $3::bigint ORDER BY id DESC LIMIT $2",
    count: "SELECT count(*) FROM ledger WHERE user_id = $1",
};

/// A page of a user's ledger, newest first.
pub(super) async fn ledger(
    pg: &Pg,
    user_id: i64,
    paging: Paging,
) -> Result<Page<LedgerEntry>, RepoError> {
    page(
        pg,
        &LEDGER,
        user_id,
        paging,
        |r| {
            Ok(LedgerEntry {
                id: r.try_get(0)?,
                kind: r.try_get(1)?,
                amount: r.try_get(2)?,
                market_id: r.try_get(3)?,
                created_at: from_millis(r.try_get(4)?),
            })
        },
        |e| vec![KeyPart::Int(e.id)],
    )
    .await
}
