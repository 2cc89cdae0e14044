//! [`MarketRepository`] on PostgreSQL. A market, its creator and its outcomes are one
//! statement (the outcomes as two arrays in index order), so one market or a page of them
//! reads one snapshot with no N+1.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio_postgres::Row;

use super::{events::append, now_ms, trading::place_stake, transaction, Conn, Pg, TxError};
use crate::{
    domain::{
        authority::{self, Standing},
        event::{EventKind, NewEvent},
        job::NewJob,
        market::{ListQuery, Market, MarketChanges, MarketPage, MarketStatus, NewMarket, Outcome},
        staking,
        user::UserSummary,
    },
    repo::{from_millis, to_millis, Change, MarketRepository, NewMarketJobs, RepoError},
};

/// Markets stored in PostgreSQL.
pub struct PgMarketRepository {
    pg: Arc<Pg>,
}

impl PgMarketRepository {
    pub(super) fn new(pg: Arc<Pg>) -> Self {
        Self { pg }
    }
}

/// The columns [`market_from_row`] reads, for `markets m` joined with its creator `u`.
pub(super) const MARKET_COLUMNS: &str = "
    SELECT m.id, m.name, m.description, m.creator_id, u.username, m.status, m.close_time,
           m.resolution, m.volume, m.version, m.created_at, m.updated_at,
           ARRAY(SELECT o.label FROM outcomes o WHERE o.market_id = m.id ORDER BY o.idx),
           ARRAY(SELECT o.pool FROM outcomes o WHERE o.market_id = m.id ORDER BY o.idx)";

/// A stored status back.
pub(super) fn status(s: &str) -> Result<MarketStatus, TxError> {
    MarketStatus::parse(s)
        .ok_or_else(|| TxError::Repo(RepoError::Internal(format!("bad market status {s}"))))
}

/// A market from a row of [`MARKET_COLUMNS`].
pub(super) fn market_from_row(row: &Row) -> Result<Market, TxError> {
    let labels: Vec<String> = row.try_get(12)?;
    let pools: Vec<i64> = row.try_get(13)?;
    Ok(Market {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        description: row.try_get(2)?,
        creator: UserSummary {
            id: row.try_get(3)?,
            username: row.try_get(4)?,
        },
        status: status(row.try_get(5)?)?,
        outcomes: labels
            .into_iter()
            .zip(pools)
            .map(|(label, pool)| Outcome { label, pool })
            .collect(),
        close_time: row.try_get::<_, Option<i64>>(6)?.map(from_millis),
        resolution: row.try_get::<_, Option<i64>>(7)?.map(|i| i as usize),
        volume: row.try_get(8)?,
        version: row.try_get(9)?,
        created_at: from_millis(row.try_get(10)?),
        updated_at: from_millis(row.try_get(11)?),
    })
}

/// One market by id, in one statement (one snapshot, inside or outside a transaction).
pub(super) async fn get_market(c: &Conn<'_>, id: i64) -> Result<Option<Market>, TxError> {
    let sql = const_format("FROM markets m JOIN users u ON u.id = m.creator_id WHERE m.id = $1");
    c.opt(&sql, &[&id])
        .await?
        .map(|row| market_from_row(&row))
        .transpose()
}

/// [`MARKET_COLUMNS`] followed by `rest`.
fn const_format(rest: &str) -> String {
    format!("{MARKET_COLUMNS} {rest}")
}

/// The market as it is now, inside a transaction that changed it.
pub(super) async fn market_now(c: &Conn<'_>, id: i64) -> Result<Market, TxError> {
    get_market(c, id)
        .await?
        .ok_or(TxError::Repo(RepoError::NotFound))
}

/// Locks a market's row for the rest of the transaction and returns its version, or
/// `NotFound`: what every change of a market starts with, so changes of one market are
/// ordered (a stake, an edit and a settlement never interleave).
pub(super) async fn lock_version(c: &Conn<'_>, id: i64) -> Result<i64, TxError> {
    Ok(c.opt(
        "SELECT version FROM markets WHERE id = $1 FOR NO KEY UPDATE",
        &[&id],
    )
    .await?
    .ok_or(TxError::Repo(RepoError::NotFound))?
    .try_get(0)?)
}

/// Inserts `jobs` inside the transaction of `c`.
pub(super) async fn insert_jobs(c: &Conn<'_>, jobs: &[NewJob]) -> Result<(), TxError> {
    for job in jobs {
        super::jobs::insert(c, job).await?;
    }
    Ok(())
}

#[async_trait]
impl MarketRepository for PgMarketRepository {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn list(&self, q: ListQuery) -> Result<Arc<MarketPage>, RepoError> {
        super::market_list::list(&self.pg, q).await.map(Arc::new)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = id))]
    async fn get(&self, id: i64) -> Result<Option<Arc<Market>>, RepoError> {
        super::read(&self.pg, |client| async move {
            Ok(get_market(&Conn::client(&client), id).await?.map(Arc::new))
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create(&self, m: NewMarket, jobs: NewMarketJobs) -> Result<Market, RepoError> {
        transaction(&self.pg, |c| {
            let m = m.clone();
            async move {
                if let Some(stake) = &m.initial_stake {
                    // The creator's funds first, under the row's lock: a refused creation must
                    // not use up a market id (a sequence does not roll back; SQLite's does).
                    let balance: i64 = c
                        .opt(
                            "SELECT balance FROM users WHERE id = $1 FOR UPDATE",
                            &[&m.creator_id],
                        )
                        .await?
                        .ok_or(TxError::Repo(RepoError::MissingReference))?
                        .try_get(0)?;
                    staking::check_funds(balance, stake.amount).map_err(RepoError::Refused)?;
                }
                let now = now_ms();
                let close_time = m.close_time.map(to_millis);
                let id: i64 = c
                    .one(
                        "INSERT INTO markets (name, description, creator_id, close_time, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
                        &[&m.name, &m.description, &m.creator_id, &close_time, &now],
                    )
                    .await?
                    .try_get(0)?;
                for (idx, label) in m.outcomes.iter().enumerate() {
                    c.exec(
                        "INSERT INTO outcomes (market_id, idx, label) VALUES ($1, $2, $3)",
                        &[&id, &(idx as i64), label],
                    )
                    .await?;
                }
                if let Some(stake) = &m.initial_stake {
                    place_stake(c, m.creator_id, id, stake, None).await?;
                }
                let market = market_now(c, id).await?;
                insert_jobs(c, &jobs(&market)).await?;
                c.announce(Change::Market(id));
                append(c, &NewEvent::market(EventKind::MarketCreated, &market)).await?;
                Ok(market)
            }
            .boxed()
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = id))]
    async fn update(
        &self,
        id: i64,
        expected_version: i64,
        changes: MarketChanges,
        standing: Standing,
        jobs: Vec<NewJob>,
    ) -> Result<Market, RepoError> {
        transaction(&self.pg, |c| {
            let (changes, jobs) = (changes.clone(), jobs.clone());
            async move {
                let current = lock_version(c, id).await?;
                if current != expected_version {
                    return Err(RepoError::VersionMismatch { current }.into());
                }
                let before = market_now(c, id).await?;
                // Read under the market's lock: a stake committed before it freezes the market,
                // and none can commit until this edit does.
                let others_staked: bool = c
                    .one(
                        "SELECT EXISTS (SELECT 1 FROM positions p JOIN markets m ON m.id = p.market_id
                                         WHERE p.market_id = $1 AND p.user_id != m.creator_id)",
                        &[&id],
                    )
                    .await?
                    .try_get(0)?;
                authority::check_edit(standing, &before, others_staked, &changes)
                    .map_err(RepoError::Refused)?;
                let now = now_ms();
                let set_description = changes.description.is_some();
                let description = changes.description.clone().flatten();
                let set_close = changes.close_time.is_some();
                let close_time = changes.close_time.flatten().map(to_millis);
                c.exec(
                    "UPDATE markets SET
                         name        = coalesce($2, name),
                         description = CASE WHEN $3 THEN $4 ELSE description END,
                         close_time  = CASE WHEN $5 THEN $6 ELSE close_time END,
                         version     = version + 1,
                         updated_at  = $7
                     WHERE id = $1",
                    &[
                        &id,
                        &changes.name,
                        &set_description,
                        &description,
                        &set_close,
                        &close_time,
                        &now,
                    ],
                )
                .await?;
                insert_jobs(c, &jobs).await?;
                c.announce(Change::Status(id));
                let market = market_now(c, id).await?;
                append(c, &NewEvent::market(EventKind::MarketUpdated, &market)).await?;
                Ok(market)
            }
            .boxed()
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = id))]
    async fn delete(&self, id: i64, expected_version: i64) -> Result<(), RepoError> {
        transaction(&self.pg, |c| {
            async move {
                let current = lock_version(c, id).await?;
                if current != expected_version {
                    return Err(RepoError::VersionMismatch { current }.into());
                }
                // A market settled before any stake has a settlement record of an empty pool;
                // it goes with the market. One with a pool keeps its record, and the foreign
                // key refuses the delete.
                c.exec(
                    "DELETE FROM settlements WHERE market_id = $1 AND pool = 0",
                    &[&id],
                )
                .await?;
                c.exec("DELETE FROM markets WHERE id = $1", &[&id]).await?;
                c.exec("DELETE FROM market_history WHERE market_id = $1", &[&id])
                    .await?;
                c.announce(Change::MarketDeleted(id));
                append(c, &NewEvent::deleted(id)).await?;
                Ok(())
            }
            .boxed()
        })
        .await
    }
}
