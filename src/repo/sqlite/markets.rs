//! [`MarketRepository`] on SQLite. A page of markets, their creators and outcomes is one
//! statement: outcomes are aggregated per row with `json_group_array`, so there is no N+1.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::{
    events::{append, forget_history},
    from_millis,
    jobs::insert as insert_job,
    to_millis,
    trading::place_stake,
};
use crate::{
    db::Db,
    domain::{
        authority::{self, Standing},
        event::{EventKind, NewEvent},
        job::NewJob,
        market::{ListQuery, Market, MarketChanges, MarketPage, MarketStatus, NewMarket, Outcome},
        user::UserSummary,
    },
    repo::{MarketRepository, NewMarketJobs, RepoError},
};

/// Markets stored in SQLite.
pub struct SqliteMarketRepository {
    db: Arc<Db>,
}

impl SqliteMarketRepository {
    /// A repository over `db`.
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

/// The columns [`market_from_row`] reads, for `markets m` joined with its creator `u`.
pub(crate) const MARKET_COLUMNS: &str = "
    SELECT m.id, m.name, m.description, m.creator_id, u.username, m.status, m.close_time,
           m.resolution, m.volume, m.version, m.created_at, m.updated_at,
           (SELECT json_group_array(json_array(o.label, o.pool) ORDER BY o.idx)
              FROM outcomes o WHERE o.market_id = m.id)";

/// The market status stored in column `idx`.
pub(crate) fn status_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<MarketStatus> {
    let status: String = row.get(idx)?;
    MarketStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("status {status}").into(),
        )
    })
}

pub(crate) fn market_from_row(row: &Row<'_>) -> rusqlite::Result<Market> {
    let outcomes: String = row.get(12)?;
    let outcomes: Vec<(String, i64)> = serde_json::from_str(&outcomes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(12, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let outcomes = outcomes
        .into_iter()
        .map(|(label, pool)| Outcome { label, pool })
        .collect();
    market_fields(row, outcomes)
}

/// The market in columns 0..12 of [`MARKET_COLUMNS`], with `outcomes`.
fn market_fields(row: &Row<'_>, outcomes: Vec<Outcome>) -> rusqlite::Result<Market> {
    Ok(Market {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        creator: UserSummary {
            id: row.get(3)?,
            username: row.get(4)?,
        },
        status: status_at(row, 5)?,
        outcomes,
        close_time: row.get::<_, Option<i64>>(6)?.map(from_millis),
        resolution: row.get::<_, Option<i64>>(7)?.map(|i| i as usize),
        volume: row.get(8)?,
        version: row.get(9)?,
        created_at: from_millis(row.get(10)?),
        updated_at: from_millis(row.get(11)?),
    })
}

/// One market by id: its row, its creator and its outcomes in order, in one statement (three
/// B-tree seeks; the outcomes' primary key gives their order, so no sorter). Cheaper for one
/// market than [`MARKET_COLUMNS`]' aggregate, which builds a JSON array in a sorter (`ORDER BY`
/// inside an aggregate) and parses it again, and than two statements in a transaction: one
/// statement reads one snapshot by itself (a stake committed between two reads would give a
/// volume that is not the sum of the pools), without `BEGIN` and `COMMIT` around it. The
/// market's columns repeat on each outcome's row and are read from the first.
pub(crate) fn get_market(conn: &Connection, id: i64) -> rusqlite::Result<Option<Market>> {
    let mut statement = conn.prepare_cached(
        "SELECT m.id, m.name, m.description, m.creator_id, u.username, m.status, m.close_time,
                m.resolution, m.volume, m.version, m.created_at, m.updated_at, o.label, o.pool
           FROM markets m JOIN users u ON u.id = m.creator_id
           LEFT JOIN outcomes o ON o.market_id = m.id
          WHERE m.id = ?1 ORDER BY o.idx",
    )?;
    let mut rows = statement.query([id])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let mut outcomes = Vec::with_capacity(4);
    let mut outcome = |row: &Row<'_>| -> rusqlite::Result<()> {
        if let Some(label) = row.get::<_, Option<String>>(12)? {
            outcomes.push(Outcome {
                label,
                pool: row.get(13)?,
            });
        }
        Ok(())
    };
    outcome(row)?;
    let mut market = market_fields(row, Vec::new())?;
    while let Some(row) = rows.next()? {
        outcome(row)?;
    }
    market.outcomes = outcomes;
    Ok(Some(market))
}

/// True when a user other than the market's creator holds a position on it.
fn others_have_staked(conn: &Connection, id: i64) -> Result<bool, RepoError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM positions p JOIN markets m ON m.id = p.market_id
                             WHERE p.market_id = ?1 AND p.user_id != m.creator_id)",
        )?
        .query_row([id], |r| r.get(0))?)
}

/// The current version of a market, or `NotFound`.
fn current_version(conn: &Connection, id: i64) -> Result<i64, RepoError> {
    conn.prepare_cached("SELECT version FROM markets WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .ok_or(RepoError::NotFound)
}

#[async_trait]
impl MarketRepository for SqliteMarketRepository {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn list(&self, q: ListQuery) -> Result<Arc<MarketPage>, RepoError> {
        self.db
            .read(move |conn| super::market_list::list(conn, &q).map(Arc::new))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = id))]
    async fn get(&self, id: i64) -> Result<Option<Arc<Market>>, RepoError> {
        self.db
            .read_point(move |conn| Ok(get_market(conn, id)?.map(Arc::new)))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create(&self, m: NewMarket, jobs: NewMarketJobs) -> Result<Market, RepoError> {
        self.db
            .write(move |conn| {
                let now = to_millis(OffsetDateTime::now_utc());
                let id: i64 = conn
                    .prepare_cached(
                        "INSERT INTO markets (name, description, creator_id, close_time, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING id",
                    )?
                    .query_row(
                        params![m.name, m.description, m.creator_id, m.close_time.map(to_millis), now],
                        |r| r.get(0),
                    )?;
                let mut insert = conn.prepare_cached("INSERT INTO outcomes (market_id, idx, label) VALUES (?1, ?2, ?3)")?;
                for (idx, label) in m.outcomes.iter().enumerate() {
                    insert.execute(params![id, idx as i64, label])?;
                }
                if let Some(stake) = &m.initial_stake {
                    place_stake(conn, m.creator_id, id, stake, None)?;
                }
                let market = get_market(conn, id)?.ok_or(RepoError::NotFound)?;
                for job in jobs(&market) {
                    insert_job(conn, &job)?;
                }
                append(conn, &NewEvent::market(EventKind::MarketCreated, &market))?;
                Ok(market)
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = id))]
    async fn update(
        &self,
        id: i64,
        expected_version: i64,
        c: MarketChanges,
        standing: Standing,
        jobs: Vec<NewJob>,
    ) -> Result<Market, RepoError> {
        self.db
            .write(move |conn| {
                let current = current_version(conn, id)?;
                if current != expected_version {
                    return Err(RepoError::VersionMismatch { current });
                }
                let before = get_market(conn, id)?.ok_or(RepoError::NotFound)?;
                // Read in this transaction: a stake committed before it freezes the market.
                let others_staked = others_have_staked(conn, id)?;
                authority::check_edit(standing, &before, others_staked, &c)
                    .map_err(RepoError::Refused)?;
                let now = to_millis(OffsetDateTime::now_utc());
                conn.prepare_cached(
                    "UPDATE markets SET
                         name        = coalesce(?2, name),
                         description = CASE WHEN ?3 THEN ?4 ELSE description END,
                         close_time  = CASE WHEN ?5 THEN ?6 ELSE close_time END,
                         version     = version + 1,
                         updated_at  = ?7
                     WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    c.name,
                    c.description.is_some(),
                    c.description.flatten(),
                    c.close_time.is_some(),
                    c.close_time.flatten().map(to_millis),
                    now
                ])?;
                for job in &jobs {
                    insert_job(conn, job)?;
                }
                let market = get_market(conn, id)?.ok_or(RepoError::NotFound)?;
                append(conn, &NewEvent::market(EventKind::MarketUpdated, &market))?;
                Ok(market)
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(market.id = id))]
    async fn delete(&self, id: i64, expected_version: i64) -> Result<(), RepoError> {
        self.db
            .write(move |conn| {
                let current = current_version(conn, id)?;
                if current != expected_version {
                    return Err(RepoError::VersionMismatch { current });
                }
                // A market settled (resolved or cancelled) before any stake has a settlement
                // record of an empty pool; it goes with the market. One with a pool keeps its
                // record, and the foreign key refuses the delete.
                conn.prepare_cached("DELETE FROM settlements WHERE market_id = ?1 AND pool = 0")?
                    .execute([id])?;
                conn.prepare_cached("DELETE FROM markets WHERE id = ?1")?
                    .execute([id])?;
                forget_history(conn, id)?;
                append(conn, &NewEvent::deleted(id))?;
                Ok(())
            })
            .await
    }
}
