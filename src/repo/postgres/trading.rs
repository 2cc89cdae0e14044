//! [`TradingRepository`] on PostgreSQL. Every write is one transaction that first locks the
//! market's row, so a stake, a close and a settlement of one market are totally ordered, as on
//! SQLite's single writer: a stake is either in the pool that a resolution pays out, or
//! refused. Accounts are then changed by conditional updates (a debit only when the balance
//! covers it). The rules are the pure functions of [`crate::domain`] ([`staking`],
//! [`settle`]); this file reads what they need and writes what they allow.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt;

use super::{
    events::{append, history_key, RECORD_HISTORY},
    markets::{market_now, status},
    now_ms, trading_lists as lists, transaction, Conn, Params, Pg, TxError,
};
use crate::{
    domain::{
        authority::{self, Standing},
        event::{EventKind, NewEvent, Tally},
        market::{Market, MarketStatus},
        staking::{self, StakeTarget},
        trading::{
            settle, Bet, LedgerEntry, MarketPosition, Placed, PositionStake, Stake, UserPosition,
            PAYOUT_RULE,
        },
        Page, Paging, Rejection,
    },
    repo::{from_millis, Change, RepoError, TradingRepository},
};

/// Trading on PostgreSQL.
pub struct PgTradingRepository {
    pg: Arc<Pg>,
}

impl PgTradingRepository {
    pub(super) fn new(pg: Arc<Pg>) -> Self {
        Self { pg }
    }
}

fn refused(r: Rejection) -> TxError {
    TxError::Repo(RepoError::Refused(r))
}

/// Locks the market's row and reads its status, close time and number of outcomes, with its
/// tally (pools in outcome order, volume, version), or `NotFound`.
async fn lock_target(c: &Conn<'_>, market_id: i64) -> Result<(StakeTarget, Tally), TxError> {
    let row = c
        .opt(
            "SELECT status, close_time, volume, version,
                    ARRAY(SELECT pool FROM outcomes WHERE market_id = $1 ORDER BY idx)
               FROM markets WHERE id = $1 FOR NO KEY UPDATE",
            &[&market_id],
        )
        .await?
        .ok_or(TxError::Repo(RepoError::NotFound))?;
    let pools: Vec<i64> = row.try_get(4)?;
    Ok((
        StakeTarget {
            status: status(row.try_get(0)?)?,
            close_time: row.try_get::<_, Option<i64>>(1)?.map(from_millis),
            outcomes: pools.len() as u32,
        },
        Tally {
            pools,
            volume: row.try_get(2)?,
            version: row.try_get(3)?,
        },
    ))
}

/// Places a stake inside the caller's transaction: applies the [`staking`] rules in their
/// order (the idempotency key, the market, the balance), then debits, records the bet and
/// ledger entry, grows the position, the outcome's pool and the market's volume, and records
/// the market's history. Shared with market creation (the creator's initial stake) and the
/// seeder. Returns the bet and, unless it was a replay, the event it makes (appended by the
/// caller that wants it).
pub(super) async fn place_stake(
    c: &Conn<'_>,
    user_id: i64,
    market_id: i64,
    stake: &Stake,
    idempotency_key: Option<&str>,
) -> Result<(Placed, Option<NewEvent>), TxError> {
    let fingerprint = stake.fingerprint(market_id);
    if let Some(key) = idempotency_key {
        let earlier = c
            .opt(
                "SELECT id, market_id, user_id, outcome, amount, balance_after, created_at, fingerprint
                   FROM bets WHERE user_id = $1 AND idempotency_key = $2",
                &[&user_id, &key],
            )
            .await?;
        if let Some(r) = earlier {
            let earlier_fingerprint: Option<String> = r.try_get(7)?;
            staking::check_replay(earlier_fingerprint.as_deref().unwrap_or(""), &fingerprint)
                .map_err(refused)?;
            let bet = Bet {
                id: r.try_get(0)?,
                market_id: r.try_get(1)?,
                user_id: r.try_get(2)?,
                outcome: r.try_get::<_, i64>(3)? as u32,
                amount: r.try_get(4)?,
                balance_after: r.try_get(5)?,
                created_at: from_millis(r.try_get(6)?),
            };
            let placed = Placed {
                bet,
                replayed: true,
            };
            return Ok((placed, None));
        }
    }
    let (target, tally) = lock_target(c, market_id).await?;
    // Read once the market is locked: the stakes of a market then take their times in the
    // order they commit, so a later history row (and bet) never carries an earlier time; read
    // before the lock, a stake that waited for it could write its minute's row after a later
    // minute's and leave the history going backwards.
    let now = now_ms();
    staking::check_stake(&target, stake, from_millis(now)).map_err(refused)?;
    let (outcome, amount) = (i64::from(stake.outcome), stake.amount);
    // The funds rule as a conditional debit: one statement when the balance covers the stake.
    let debited = c
        .opt(
            "UPDATE users SET balance = balance - $2 WHERE id = $1 AND balance >= $2 RETURNING balance",
            &[&user_id, &amount],
        )
        .await?;
    let Some(debited) = debited else {
        let balance = c
            .opt("SELECT balance FROM users WHERE id = $1", &[&user_id])
            .await?
            .ok_or(TxError::Repo(RepoError::MissingReference))?
            .try_get(0)?;
        return Err(match staking::check_funds(balance, amount) {
            Err(rejection) => refused(rejection),
            // The debit locked the row: nothing changed it between the two statements.
            Ok(_) => RepoError::Internal("the debit and the funds rule disagree".into()).into(),
        });
    };
    let balance_after: i64 = debited.try_get(0)?;
    // The rest depends on nothing it writes: sent at once (the driver pipelines statements
    // issued together on one connection), so a stake costs a round trip here, not six. The
    // first statement to fail fails the stake (and the transaction): see `first_cause`.
    let neg = -amount;
    let bet_params: &Params = &[
        &user_id,
        &market_id,
        &outcome,
        &amount,
        &balance_after,
        &idempotency_key,
        &fingerprint,
        &now,
    ];
    let ledger_params: &Params = &[&user_id, &neg, &market_id, &now];
    let position_params: &Params = &[&market_id, &outcome, &user_id, &amount, &now];
    let pool_params: &Params = &[&market_id, &outcome, &amount];
    let market_params: &Params = &[&market_id, &amount, &now];
    let tally = tally.with_stake(stake.outcome, amount);
    let (minute, pools) = history_key(now, &tally.pools);
    let history_params: &Params = &[&market_id, &minute, &pools, &tally.volume];
    let (bet, ledger, position, pool, market, history) = futures_util::join!(
        c.one(
            "INSERT INTO bets (user_id, market_id, outcome, amount, balance_after, idempotency_key, fingerprint, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            bet_params,
        ),
        c.exec(
            "INSERT INTO ledger (user_id, kind, amount, market_id, created_at) VALUES ($1, 'STAKE', $2, $3, $4)",
            ledger_params,
        ),
        c.exec(
            "INSERT INTO positions (market_id, outcome, user_id, amount, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (market_id, outcome, user_id)
             DO UPDATE SET amount = positions.amount + excluded.amount, updated_at = excluded.updated_at",
            position_params,
        ),
        c.exec(
            "UPDATE outcomes SET pool = pool + $3 WHERE market_id = $1 AND idx = $2",
            pool_params,
        ),
        c.exec(
            "UPDATE markets SET volume = volume + $2, version = version + 1, updated_at = $3 WHERE id = $1",
            market_params,
        ),
        c.exec(RECORD_HISTORY, history_params),
    );
    let rest = [ledger, position, pool, market, history];
    let bet = match bet {
        Ok(bet) if rest.iter().all(Result::is_ok) => bet,
        bet => {
            let errors = std::iter::once(bet.err()).chain(rest.into_iter().map(Result::err));
            return Err(first_cause(errors.flatten()));
        }
    };
    c.announce(Change::Market(market_id));
    let bet = Bet {
        id: bet.try_get(0)?,
        market_id,
        user_id,
        outcome: stake.outcome,
        amount,
        balance_after,
        created_at: from_millis(now),
    };
    let event = NewEvent::stake(&bet, &tally.pools, tally.volume, tally.version);
    let placed = Placed {
        bet,
        replayed: false,
    };
    Ok((placed, Some(event)))
}

/// The error to report when statements sent together failed: the first that is not
/// PostgreSQL's "current transaction is aborted" (25P02), which only says that a statement the
/// server ran before it failed. The server runs them in the order they reach it, which is not
/// the order they are written in when one had to be prepared first (a connection's first use
/// of it): a lost race on an idempotency key then came back as a 25P02 of a later statement,
/// which is not retried, instead of the unique violation, which is.
fn first_cause(errors: impl Iterator<Item = TxError>) -> TxError {
    let mut first = None;
    for e in errors {
        let aborted = matches!(&e, TxError::Db(db)
            if db.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION));
        if !aborted {
            return e;
        }
        first.get_or_insert(e);
    }
    first.unwrap_or_else(|| TxError::Repo(RepoError::Internal("no statement failed".into())))
}

/// Settles a market inside the caller's transaction (its row locked first): pays out
/// (`resolution`: the winner, and the standing of who resolves) or refunds (`None`) every
/// position, records the settlement and moves the market to its final status. A resolution
/// must pass [`authority::check_resolution`], decided on the very positions it would pay.
pub(super) async fn settle_market(
    c: &Conn<'_>,
    market_id: i64,
    resolution: Option<(u32, Standing)>,
) -> Result<Market, TxError> {
    let winner = resolution.map(|(w, _)| w);
    let (target, _) = lock_target(c, market_id).await?;
    if !matches!(target.status, MarketStatus::Active | MarketStatus::Closed) {
        return Err(refused(Rejection::NotActive {
            status: target.status,
        }));
    }
    let positions = c
        .rows(
            "SELECT user_id, outcome, amount FROM positions WHERE market_id = $1 ORDER BY user_id, outcome",
            &[&market_id],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(PositionStake {
                user_id: r.try_get(0)?,
                outcome: r.try_get::<_, i64>(1)? as u32,
                amount: r.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, TxError>>()?;
    if let Some((w, standing)) = resolution {
        let creator: i64 = c
            .one(
                "SELECT creator_id FROM markets WHERE id = $1",
                &[&market_id],
            )
            .await?
            .try_get(0)?;
        let others_staked = authority::others_have_staked(creator, &positions);
        authority::check_resolution(standing, others_staked).map_err(refused)?;
        staking::check_outcome(target.outcomes, w).map_err(refused)?;
    }
    let settlement = settle(&positions, winner);
    let now = now_ms();
    let kind = if settlement.refunded {
        "REFUND"
    } else {
        "PAYOUT"
    };
    c.exec(
        "UPDATE positions SET payout = 0, updated_at = $2 WHERE market_id = $1",
        &[&market_id, &now],
    )
    .await?;
    // Payouts in user order (the positions' order): two settlements lock accounts in one order.
    for p in settlement.payouts.iter().filter(|p| p.amount > 0) {
        c.exec(
            "UPDATE users SET balance = balance + $2 WHERE id = $1",
            &[&p.user_id, &p.amount],
        )
        .await?;
        c.exec(
            "INSERT INTO ledger (user_id, kind, amount, market_id, created_at) VALUES ($1, $2, $3, $4, $5)",
            &[&p.user_id, &kind, &p.amount, &market_id, &now],
        )
        .await?;
        c.exec(
            "UPDATE positions SET payout = $4 WHERE market_id = $1 AND outcome = $2 AND user_id = $3",
            &[&market_id, &i64::from(p.outcome), &p.user_id, &p.amount],
        )
        .await?;
    }
    let paid: i64 = settlement.payouts.iter().map(|p| p.amount).sum();
    let settled_kind = if settlement.refunded {
        "refunded"
    } else {
        "resolved"
    };
    let winner = winner.map(i64::from);
    c.exec(
        "INSERT INTO settlements (market_id, kind, winner, pool, paid, leftover, rule, settled_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &market_id,
            &settled_kind,
            &winner,
            &settlement.pool,
            &paid,
            &settlement.leftover,
            &PAYOUT_RULE,
            &now,
        ],
    )
    .await?;
    let status = if winner.is_some() {
        "resolved"
    } else {
        "cancelled"
    };
    c.exec(
        "UPDATE markets SET status = $2, resolution = $3, version = version + 1, updated_at = $4 WHERE id = $1",
        &[&market_id, &status, &winner, &now],
    )
    .await?;
    c.announce(Change::Status(market_id));
    market_now(c, market_id).await
}

/// Appends the event of a settlement (resolved or cancelled) in its transaction.
async fn settled(c: &Conn<'_>, market: Market) -> Result<Market, TxError> {
    append(
        c,
        &NewEvent::market(EventKind::of_status(market.status), &market),
    )
    .await?;
    Ok(market)
}

#[async_trait]
impl TradingRepository for PgTradingRepository {
    #[tracing::instrument(level = "debug", skip_all, fields(market.id = market_id, user.id = user_id))]
    async fn stake(
        &self,
        user_id: i64,
        market_id: i64,
        stake: Stake,
        key: Option<String>,
    ) -> Result<Placed, RepoError> {
        transaction(&self.pg, |c| {
            let (stake, key) = (stake.clone(), key.clone());
            async move {
                let (placed, event) =
                    place_stake(c, user_id, market_id, &stake, key.as_deref()).await?;
                if let Some(event) = event {
                    append(c, &event).await?;
                }
                Ok(placed)
            }
            .boxed()
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = market_id))]
    async fn close(&self, market_id: i64) -> Result<Market, RepoError> {
        transaction(&self.pg, |c| {
            async move {
                let (target, _) = lock_target(c, market_id).await?;
                if target.status != MarketStatus::Active {
                    return Err(refused(Rejection::NotActive {
                        status: target.status,
                    }));
                }
                c.exec(
                    "UPDATE markets SET status = 'closed', version = version + 1, updated_at = $2 WHERE id = $1",
                    &[&market_id, &now_ms()],
                )
                .await?;
                c.announce(Change::Status(market_id));
                let market = market_now(c, market_id).await?;
                append(c, &NewEvent::market(EventKind::MarketClosed, &market)).await?;
                Ok(market)
            }
            .boxed()
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
        transaction(&self.pg, |c| {
            async move {
                settled(
                    c,
                    settle_market(c, market_id, Some((winner, standing))).await?,
                )
                .await
            }
            .boxed()
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = market_id))]
    async fn cancel(&self, market_id: i64) -> Result<Market, RepoError> {
        transaction(&self.pg, |c| {
            async move { settled(c, settle_market(c, market_id, None).await?).await }.boxed()
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn close_due(&self) -> Result<Vec<i64>, RepoError> {
        transaction(&self.pg, |c| {
            async move {
                // SKIP LOCKED: a market being staked on or settled right now is left to the
                // next sweep rather than waited for.
                let closed = c
                    .rows(
                        "UPDATE markets SET status = 'closed', version = version + 1, updated_at = $1
                          WHERE id IN (SELECT id FROM markets
                                        WHERE status = 'active' AND close_time IS NOT NULL AND close_time <= $1
                                        FOR NO KEY UPDATE SKIP LOCKED)
                          RETURNING id",
                        &[&now_ms()],
                    )
                    .await?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<Vec<i64>, _>>()?;
                for id in &closed {
                    c.announce(Change::Status(*id));
                }
                for &id in &closed {
                    let market = market_now(c, id).await?;
                    append(c, &NewEvent::market(EventKind::MarketClosed, &market)).await?;
                }
                Ok(closed)
            }
            .boxed()
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = market_id))]
    async fn market_positions(
        &self,
        market_id: i64,
        paging: Paging,
    ) -> Result<Page<MarketPosition>, RepoError> {
        lists::market_positions(&self.pg, market_id, paging).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user.id = user_id))]
    async fn user_positions(
        &self,
        user_id: i64,
        paging: Paging,
    ) -> Result<Page<UserPosition>, RepoError> {
        lists::user_positions(&self.pg, user_id, paging).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user.id = user_id))]
    async fn ledger(&self, user_id: i64, paging: Paging) -> Result<Page<LedgerEntry>, RepoError> {
        lists::ledger(&self.pg, user_id, paging).await
    }
}
