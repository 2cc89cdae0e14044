//! [`TradingRepository`] on SQLite. Every write runs on the single writer in one transaction,
//! so a stake, a close and a resolution of one market are totally ordered: a stake is either
//! in the pool that a resolution pays out, or refused. The rules are pure functions of
//! [`crate::domain`] (stakes: [`staking`], settlement: [`settle`]); this file reads what they
//! need and writes what they allow.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use super::{
    events::{append, record_history},
    from_millis,
    markets::get_market,
    to_millis, trading_lists as lists,
};
use crate::{
    db::Db,
    domain::{
        authority::{self, Standing},
        event::{EventKind, HistoryRow, NewEvent, Tally},
        market::{Market, MarketStatus},
        staking::{self, StakeTarget},
        trading::{
            settle, Bet, LedgerEntry, MarketPosition, Placed, PositionStake, Stake, UserPosition,
            PAYOUT_RULE,
        },
        Page, Paging, Rejection,
    },
    repo::{RepoError, TradingRepository},
};

/// Trading on SQLite.
pub struct SqliteTradingRepository {
    db: Arc<Db>,
}

impl SqliteTradingRepository {
    /// A repository over `db`.
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

fn now_ms() -> i64 {
    to_millis(OffsetDateTime::now_utc())
}

fn refused(r: Rejection) -> RepoError {
    RepoError::Refused(r)
}

/// Status and close time of a market, or `NotFound`.
fn market_state(
    conn: &Connection,
    market_id: i64,
) -> Result<(MarketStatus, Option<i64>), RepoError> {
    let (status, close): (String, Option<i64>) = conn
        .prepare_cached("SELECT status, close_time FROM markets WHERE id = ?1")?
        .query_row([market_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or(RepoError::NotFound)?;
    let status = MarketStatus::parse(&status)
        .ok_or_else(|| RepoError::Internal(format!("bad status {status}")))?;
    Ok((status, close))
}

/// What the stake rules read about a market, with its tally before the stake, or `NotFound`.
fn stake_target(conn: &Connection, market_id: i64) -> Result<(StakeTarget, Tally), RepoError> {
    let (status, close_time, volume, version, pools): (
        String,
        Option<i64>,
        i64,
        i64,
        Option<String>,
    ) = conn
        .prepare_cached(
            "SELECT status, close_time, volume, version,
                    (SELECT group_concat(pool, ',' ORDER BY idx) FROM outcomes WHERE market_id = ?1)
               FROM markets WHERE id = ?1",
        )?
        .query_row([market_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?
        .ok_or(RepoError::NotFound)?;
    let status = MarketStatus::parse(&status)
        .ok_or_else(|| RepoError::Internal(format!("bad status {status}")))?;
    let pools = HistoryRow::decode_pools(pools.as_deref().unwrap_or(""))
        .ok_or_else(|| RepoError::Internal("bad pools".into()))?;
    Ok((
        StakeTarget {
            status,
            close_time: close_time.map(from_millis),
            outcomes: pools.len() as u32,
        },
        Tally {
            pools,
            volume,
            version,
        },
    ))
}

fn check_outcome(conn: &Connection, market_id: i64, outcome: u32) -> Result<(), RepoError> {
    let outcomes: u32 = conn
        .prepare_cached("SELECT count(*) FROM outcomes WHERE market_id = ?1")?
        .query_row([market_id], |r| r.get(0))?;
    staking::check_outcome(outcomes, outcome).map_err(refused)
}

fn bet_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Bet> {
    Ok(Bet {
        id: r.get(0)?,
        market_id: r.get(1)?,
        user_id: r.get(2)?,
        outcome: r.get(3)?,
        amount: r.get(4)?,
        balance_after: r.get(5)?,
        created_at: from_millis(r.get(6)?),
    })
}

/// Places a stake inside the caller's transaction: applies the [`staking`] rules in their
/// order (the idempotency key, the market, the balance), then debits, records the bet and
/// ledger entry, grows the position, the outcome's pool and the market's volume, and records
/// the market's history. Shared with market creation (the creator's initial stake) and the
/// seeder. Returns the bet and, unless it was a replay, the event it makes (appended by the
/// caller that wants it).
pub(crate) fn place_stake(
    conn: &Connection,
    user_id: i64,
    market_id: i64,
    stake: &Stake,
    idempotency_key: Option<&str>,
) -> Result<(Placed, Option<NewEvent>), RepoError> {
    let fingerprint = stake.fingerprint(market_id);
    if let Some(key) = idempotency_key {
        let earlier = conn
            .prepare_cached(
                "SELECT id, market_id, user_id, outcome, amount, balance_after, created_at, fingerprint
                   FROM bets WHERE user_id = ?1 AND idempotency_key = ?2",
            )?
            .query_row(params![user_id, key], |r| Ok((bet_from_row(r)?, r.get::<_, String>(7)?)))
            .optional()?;
        if let Some((bet, earlier_fingerprint)) = earlier {
            staking::check_replay(&earlier_fingerprint, &fingerprint).map_err(refused)?;
            let placed = Placed {
                bet,
                replayed: true,
            };
            return Ok((placed, None));
        }
    }
    let now = now_ms();
    let (target, tally) = stake_target(conn, market_id)?;
    staking::check_stake(&target, stake, from_millis(now)).map_err(refused)?;
    // The funds rule as a conditional debit: one statement when the balance covers the stake.
    let balance_after: Option<i64> = conn
        .prepare_cached("UPDATE users SET balance = balance - ?2 WHERE id = ?1 AND balance >= ?2 RETURNING balance")?
        .query_row(params![user_id, stake.amount], |r| r.get(0))
        .optional()?;
    let Some(balance_after) = balance_after else {
        let balance: i64 = conn
            .prepare_cached("SELECT balance FROM users WHERE id = ?1")?
            .query_row([user_id], |r| r.get(0))
            .optional()?
            .ok_or(RepoError::MissingReference)?;
        return Err(match staking::check_funds(balance, stake.amount) {
            Err(rejection) => refused(rejection),
            // The single writer changed nothing between the debit and this read.
            Ok(_) => RepoError::Internal("the debit and the funds rule disagree".into()),
        });
    };
    let bet_id: i64 = conn
        .prepare_cached(
            "INSERT INTO bets (user_id, market_id, outcome, amount, balance_after, idempotency_key, fingerprint, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        )?
        .query_row(
            params![user_id, market_id, stake.outcome, stake.amount, balance_after, idempotency_key, fingerprint, now],
            |r| r.get(0),
        )?;
    conn.prepare_cached(
        "INSERT INTO ledger (user_id, kind, amount, market_id, created_at) VALUES (?1, 'STAKE', ?2, ?3, ?4)",
    )?
    .execute(params![user_id, -stake.amount, market_id, now])?;
    conn.prepare_cached(
        "INSERT INTO positions (market_id, outcome, user_id, amount, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (market_id, outcome, user_id)
         DO UPDATE SET amount = amount + excluded.amount, updated_at = excluded.updated_at",
    )?
    .execute(params![market_id, stake.outcome, user_id, stake.amount, now])?;
    conn.prepare_cached("UPDATE outcomes SET pool = pool + ?3 WHERE market_id = ?1 AND idx = ?2")?
        .execute(params![market_id, stake.outcome, stake.amount])?;
    conn.prepare_cached("UPDATE markets SET volume = volume + ?2, version = version + 1, updated_at = ?3 WHERE id = ?1")?
        .execute(params![market_id, stake.amount, now])?;
    let bet = Bet {
        id: bet_id,
        market_id,
        user_id,
        outcome: stake.outcome,
        amount: stake.amount,
        balance_after,
        created_at: from_millis(now),
    };
    let tally = tally.with_stake(stake.outcome, stake.amount);
    record_history(conn, market_id, &tally.pools, tally.volume, now)?;
    let event = NewEvent::stake(&bet, &tally.pools, tally.volume, tally.version);
    let placed = Placed {
        bet,
        replayed: false,
    };
    Ok((placed, Some(event)))
}

/// Settles a market inside the caller's transaction: pays out (`resolution`: the winner, and
/// the standing of who resolves) or refunds (`None`) every position, records the settlement
/// and moves the market to its final status. A resolution must pass
/// [`authority::check_resolution`], decided on the very positions it would pay; a refund
/// needs no such check (nobody loses).
pub(crate) fn settle_market(
    conn: &Connection,
    market_id: i64,
    resolution: Option<(u32, Standing)>,
) -> Result<Market, RepoError> {
    let winner = resolution.map(|(w, _)| w);
    let (status, _) = market_state(conn, market_id)?;
    if !matches!(status, MarketStatus::Active | MarketStatus::Closed) {
        return Err(refused(Rejection::NotActive { status }));
    }
    let positions = conn
        .prepare_cached("SELECT user_id, outcome, amount FROM positions WHERE market_id = ?1 ORDER BY user_id, outcome")?
        .query_map([market_id], |r| Ok(PositionStake { user_id: r.get(0)?, outcome: r.get(1)?, amount: r.get(2)? }))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if let Some((w, standing)) = resolution {
        let creator: i64 = conn
            .prepare_cached("SELECT creator_id FROM markets WHERE id = ?1")?
            .query_row([market_id], |r| r.get(0))?;
        let others_staked = authority::others_have_staked(creator, &positions);
        authority::check_resolution(standing, others_staked).map_err(refused)?;
        check_outcome(conn, market_id, w)?;
    }
    let settlement = settle(&positions, winner);
    let now = now_ms();
    let kind = if settlement.refunded {
        "REFUND"
    } else {
        "PAYOUT"
    };
    conn.prepare_cached("UPDATE positions SET payout = 0, updated_at = ?2 WHERE market_id = ?1")?
        .execute(params![market_id, now])?;
    for p in settlement.payouts.iter().filter(|p| p.amount > 0) {
        conn.prepare_cached("UPDATE users SET balance = balance + ?2 WHERE id = ?1")?
            .execute(params![p.user_id, p.amount])?;
        conn.prepare_cached("INSERT INTO ledger (user_id, kind, amount, market_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![p.user_id, kind, p.amount, market_id, now])?;
        conn.prepare_cached("UPDATE positions SET payout = ?4 WHERE market_id = ?1 AND outcome = ?2 AND user_id = ?3")?
            .execute(params![market_id, p.outcome, p.user_id, p.amount])?;
    }
    let paid: i64 = settlement.payouts.iter().map(|p| p.amount).sum();
    conn.prepare_cached(
        "INSERT INTO settlements (market_id, kind, winner, pool, paid, leftover, rule, settled_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        market_id,
        if settlement.refunded {
            "refunded"
        } else {
            "resolved"
        },
        winner,
        settlement.pool,
        paid,
        settlement.leftover,
        PAYOUT_RULE,
        now
    ])?;
    let (status, resolution) = match winner {
        Some(w) => ("resolved", Some(w)),
        None => ("cancelled", None),
    };
    conn.prepare_cached(
        "UPDATE markets SET status = ?2, resolution = ?3, version = version + 1, updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![market_id, status, resolution, now])?;
    get_market(conn, market_id)?.ok_or(RepoError::NotFound)
}

/// Appends the event of a settlement (resolved or cancelled) in its transaction.
fn settled(conn: &Connection, market: Market) -> Result<Market, RepoError> {
    append(
        conn,
        &NewEvent::market(EventKind::of_status(market.status), &market),
    )?;
    Ok(market)
}

#[async_trait]
impl TradingRepository for SqliteTradingRepository {
    #[tracing::instrument(level = "debug", skip_all, fields(market.id = market_id, user.id = user_id))]
    async fn stake(
        &self,
        user_id: i64,
        market_id: i64,
        stake: Stake,
        key: Option<String>,
    ) -> Result<Placed, RepoError> {
        self.db
            .write(move |conn| {
                let (placed, event) =
                    place_stake(conn, user_id, market_id, &stake, key.as_deref())?;
                if let Some(event) = event {
                    append(conn, &event)?;
                }
                Ok(placed)
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = market_id))]
    async fn close(&self, market_id: i64) -> Result<Market, RepoError> {
        self.db
            .write(move |conn| {
                let (status, _) = market_state(conn, market_id)?;
                if status != MarketStatus::Active {
                    return Err(refused(Rejection::NotActive { status }));
                }
                conn.prepare_cached(
                    "UPDATE markets SET status = 'closed', version = version + 1, updated_at = ?2 WHERE id = ?1",
                )?
                .execute(params![market_id, now_ms()])?;
                let market = get_market(conn, market_id)?.ok_or(RepoError::NotFound)?;
                append(conn, &NewEvent::market(EventKind::MarketClosed, &market))?;
                Ok(market)
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = market_id))]
    async fn resolve(
        &self,
        market_id: i64,
        winner: u32,
        standing: Standing,
    ) -> Result<Market, RepoError> {
        self.db
            .write(move |conn| {
                settled(
                    conn,
                    settle_market(conn, market_id, Some((winner, standing)))?,
                )
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = market_id))]
    async fn cancel(&self, market_id: i64) -> Result<Market, RepoError> {
        self.db
            .write(move |conn| settled(conn, settle_market(conn, market_id, None)?))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn close_due(&self) -> Result<Vec<i64>, RepoError> {
        self.db
            .write(move |conn| {
                let ids = conn
                    .prepare_cached(
                        "UPDATE markets SET status = 'closed', version = version + 1, updated_at = ?1
                          WHERE status = 'active' AND close_time IS NOT NULL AND close_time <= ?1 RETURNING id",
                    )?
                    .query_map([now_ms()], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<i64>>>()?;
                for &id in &ids {
                    let market = get_market(conn, id)?.ok_or(RepoError::NotFound)?;
                    append(conn, &NewEvent::market(EventKind::MarketClosed, &market))?;
                }
                Ok(ids)
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = market_id))]
    async fn market_positions(
        &self,
        market_id: i64,
        paging: Paging,
    ) -> Result<Page<MarketPosition>, RepoError> {
        self.db
            .read(move |conn| lists::market_positions(conn, market_id, &paging))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user.id = user_id))]
    async fn user_positions(
        &self,
        user_id: i64,
        paging: Paging,
    ) -> Result<Page<UserPosition>, RepoError> {
        self.db
            .read(move |conn| lists::user_positions(conn, user_id, &paging))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user.id = user_id))]
    async fn ledger(&self, user_id: i64, paging: Paging) -> Result<Page<LedgerEntry>, RepoError> {
        self.db
            .read(move |conn| lists::ledger(conn, user_id, &paging))
            .await
    }
}
