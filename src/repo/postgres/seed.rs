//! [`SeedRepository`] on PostgreSQL: demo users and markets in large transactions, through the
//! same stake and settlement code as the API's writes.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt;
use time::OffsetDateTime;

use super::{
    trading::{place_stake, settle_market},
    transaction,
    users::insert_user,
    Conn, Pg, TxError,
};
use crate::{
    domain::{authority::Standing, user::Role, Rejection},
    repo::{
        encode_vector as encode, to_millis, Change, DemoEnd, DemoMarket, MarketText, RepoError,
        SeedRepository,
    },
};

/// Demo data written to PostgreSQL.
pub struct PgSeedRepository {
    pg: Arc<Pg>,
}

impl PgSeedRepository {
    pub(super) fn new(pg: Arc<Pg>) -> Self {
        Self { pg }
    }
}

#[async_trait]
impl SeedRepository for PgSeedRepository {
    async fn demo_users(
        &self,
        count: u32,
        password_hash: String,
        grant: i64,
        now: OffsetDateTime,
    ) -> Result<i64, RepoError> {
        transaction(&self.pg, |c| {
            let password_hash = password_hash.clone();
            async move {
                // Demo names count on from the highest id; the lock keeps two seeders from
                // picking the same names.
                c.exec("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE", &[])
                    .await?;
                let base: i64 = c
                    .one("SELECT coalesce(max(id), 0) FROM users", &[])
                    .await?
                    .try_get(0)?;
                let mut first = None;
                for i in 1..=i64::from(count) {
                    let id = insert_user(
                        c,
                        &format!("demo{}", base + i),
                        &password_hash,
                        Role::User,
                        grant,
                        to_millis(now),
                    )
                    .await?;
                    first.get_or_insert(id);
                }
                Ok(first.unwrap_or(base + 1))
            }
            .boxed()
        })
        .await
    }

    async fn demo_markets(&self, markets: Vec<DemoMarket>, model: String) -> Result<(), RepoError> {
        let markets = Arc::new(markets);
        transaction(&self.pg, |c| {
            let (markets, model) = (markets.clone(), model.clone());
            async move {
                for m in markets.iter() {
                    let id = seed_market(c, m).await?;
                    store_vector(c, id, m, &model).await?;
                }
                Ok(())
            }
            .boxed()
        })
        .await
    }
}

/// Stores a demo market's vector at once.
async fn store_vector(c: &Conn<'_>, id: i64, m: &DemoMarket, model: &str) -> Result<(), TxError> {
    let text = MarketText {
        name: m.name.clone(),
        description: Some(m.description.clone()),
    };
    c.exec(
        "INSERT INTO market_vectors (market_id, model, content_hash, vector, updated_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &id,
            &model,
            &text.content_hash(model),
            &encode(&m.vector),
            &to_millis(m.created_at),
        ],
    )
    .await?;
    // A server running on the database while it is seeded searches the market at once.
    c.announce(Change::Vector(id));
    Ok(())
}

/// Creates one demo market the way the API would: open, with its stakes (a stake the user
/// cannot afford is skipped), then moved to its end, settling it when resolved or cancelled.
async fn seed_market(c: &Conn<'_>, m: &DemoMarket) -> Result<i64, TxError> {
    let created_at = to_millis(m.created_at);
    let id: i64 = c
        .one(
            "INSERT INTO markets (name, description, creator_id, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $4) RETURNING id",
            &[&m.name, &m.description, &m.creator_id, &created_at],
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
    for (user, stake) in &m.stakes {
        match place_stake(c, *user, id, stake, None).await {
            Ok(_) | Err(TxError::Repo(RepoError::Refused(Rejection::InsufficientFunds { .. }))) => {
            }
            Err(e) => return Err(e),
        }
    }
    match m.end {
        DemoEnd::Resolved(winner) => {
            settle_market(c, id, Some((winner, Standing::Staff))).await?;
        }
        DemoEnd::Cancelled => {
            settle_market(c, id, None).await?;
        }
        DemoEnd::Closed => {
            c.exec("UPDATE markets SET status = 'closed' WHERE id = $1", &[&id])
                .await?;
        }
        DemoEnd::Active => {}
    }
    let close_time = m.close_time.map(to_millis);
    c.exec(
        "UPDATE markets SET close_time = $2, version = 1, updated_at = created_at WHERE id = $1",
        &[&id, &close_time],
    )
    .await?;
    Ok(id)
}
