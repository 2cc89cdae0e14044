//! [`SeedRepository`] on SQLite: demo users and markets in large transactions, through the
//! same stake and settlement code as the API's writes.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection};
use time::OffsetDateTime;

use super::{
    to_millis,
    trading::{place_stake, settle_market},
    users::insert_user,
};
use crate::{
    db::Db,
    domain::{authority::Standing, user::Role, Rejection},
    repo::{encode_vector as encode, DemoEnd, DemoMarket, MarketText, RepoError, SeedRepository},
};

/// Demo data written to SQLite.
pub struct SqliteSeedRepository {
    db: Arc<Db>,
}

impl SqliteSeedRepository {
    /// A repository over `db`.
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl SeedRepository for SqliteSeedRepository {
    async fn demo_users(
        &self,
        count: u32,
        password_hash: String,
        grant: i64,
        now: OffsetDateTime,
    ) -> Result<i64, RepoError> {
        self.db
            .write(move |conn| {
                let base: i64 =
                    conn.query_row("SELECT coalesce(max(id), 0) FROM users", [], |r| r.get(0))?;
                let mut first = None;
                for i in 1..=i64::from(count) {
                    let id = insert_user(
                        conn,
                        &format!("demo{}", base + i),
                        &password_hash,
                        Role::User,
                        grant,
                        to_millis(now),
                    )?;
                    first.get_or_insert(id);
                }
                Ok(first.unwrap_or(base + 1))
            })
            .await
    }

    async fn demo_markets(&self, markets: Vec<DemoMarket>, model: String) -> Result<(), RepoError> {
        self.db
            .write(move |conn| {
                // Bulk loading touches every index at random; a large page cache keeps it in
                // memory.
                conn.execute_batch("PRAGMA cache_size = -262144")?;
                for m in &markets {
                    let id = seed_market(conn, m)?;
                    store_vector(conn, id, m, &model)?;
                }
                Ok(())
            })
            .await
    }
}

/// Stores a demo market's vector at once (a server using another embedder re-indexes seeded
/// markets through jobs when it starts).
fn store_vector(conn: &Connection, id: i64, m: &DemoMarket, model: &str) -> Result<(), RepoError> {
    let text = MarketText {
        name: m.name.clone(),
        description: Some(m.description.clone()),
    };
    conn.prepare_cached(
        "INSERT INTO market_vectors (market_id, model, content_hash, vector, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id,
        model,
        text.content_hash(model),
        encode(&m.vector),
        to_millis(m.created_at)
    ])?;
    Ok(())
}

/// Creates one demo market the way the API would: open, with its stakes (a stake the user
/// cannot afford is skipped), then moved to its end, settling it when resolved or cancelled.
fn seed_market(conn: &Connection, m: &DemoMarket) -> Result<i64, RepoError> {
    let created_at = to_millis(m.created_at);
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO markets (name, description, creator_id, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
        )?
        .query_row(
            params![m.name, m.description, m.creator_id, created_at],
            |r| r.get(0),
        )?;
    let mut outcome =
        conn.prepare_cached("INSERT INTO outcomes (market_id, idx, label) VALUES (?1, ?2, ?3)")?;
    for (idx, label) in m.outcomes.iter().enumerate() {
        outcome.execute(params![id, idx as i64, label])?;
    }
    for (user, stake) in &m.stakes {
        match place_stake(conn, *user, id, stake, None) {
            Ok(_) | Err(RepoError::Refused(Rejection::InsufficientFunds { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    match m.end {
        DemoEnd::Resolved(winner) => {
            settle_market(conn, id, Some((winner, Standing::Staff)))?;
        }
        DemoEnd::Cancelled => {
            settle_market(conn, id, None)?;
        }
        DemoEnd::Closed => {
            conn.prepare_cached("UPDATE markets SET status = 'closed' WHERE id = ?1")?
                .execute([id])?;
        }
        DemoEnd::Active => {}
    }
    conn.prepare_cached(
        "UPDATE markets SET close_time = ?2, version = 1, updated_at = created_at WHERE id = ?1",
    )?
    .execute(params![id, m.close_time.map(to_millis)])?;
    Ok(id)
}
