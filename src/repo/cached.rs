//! A moka read cache in front of the market and trading repositories (decorators), correct
//! under concurrency:
//!
//! - a market is loaded once under concurrent misses: the miss path is a moka compute, and
//!   moka serializes computes per key;
//! - read-your-writes: every write to a market removes its entry *after* its commit and before
//!   it returns, through the same per-key compute. A read that loaded the old row before the
//!   commit therefore finishes its insert before the removal runs, and cannot put the old row
//!   back afterwards (the read-old / commit / invalidate / insert-old race);
//! - list pages are keyed by a generation number that every market write bumps after its
//!   commit, so a page cached before a write is never served after it.
//!
//! Writes made behind the server's back (another process on the same file) are seen when
//! entries expire (TTL).

use std::{
    future::ready,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use moka::{future::Cache, ops::compute::Op};

use super::{MarketRepository, NewMarketJobs, RepoError, TradingRepository};
use crate::domain::{
    authority::Standing,
    job::NewJob,
    market::{ListQuery, Market, MarketChanges, MarketPage, NewMarket},
    trading::{LedgerEntry, MarketPosition, Placed, Stake, UserPosition},
    Page, Paging,
};

/// Sizes and lifetime of the market cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Most markets kept (0 disables the cache).
    pub markets: u64,
    /// Most list pages kept.
    pub pages: u64,
    /// How long an entry may live.
    pub ttl: Duration,
}

/// Hit and miss counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to the database.
    pub misses: u64,
}

/// The shared cache state: markets by id, list pages by generation and query.
pub struct MarketCache {
    by_id: Cache<i64, Option<Arc<Market>>>,
    pages: Cache<(u64, ListQuery), Arc<MarketPage>>,
    generation: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl MarketCache {
    /// A cache sized by `config`.
    pub fn new(config: CacheConfig) -> Arc<Self> {
        Arc::new(MarketCache {
            by_id: Cache::builder()
                .name("markets")
                .max_capacity(config.markets)
                .time_to_live(config.ttl)
                .build(),
            pages: Cache::builder()
                .name("market_pages")
                .max_capacity(config.pages)
                .time_to_live(config.ttl)
                .build(),
            generation: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Hit and miss counts so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    async fn market(
        &self,
        id: i64,
        inner: &dyn MarketRepository,
    ) -> Result<Option<Arc<Market>>, RepoError> {
        if let Some(hit) = self.by_id.get(&id).await {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        let loaded = self
            .by_id
            .entry(id)
            .and_try_compute_with(|existing| async move {
                match existing {
                    Some(_) => {
                        // Another read loaded it while this one waited for the key.
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        Ok(Op::Nop)
                    }
                    None => {
                        self.misses.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, RepoError>(Op::Put(inner.get(id).await?))
                    }
                }
            })
            .await?;
        Ok(loaded.into_entry().and_then(|e| e.into_value()))
    }

    async fn page(
        &self,
        query: ListQuery,
        inner: &dyn MarketRepository,
    ) -> Result<Arc<MarketPage>, RepoError> {
        // Cursor pages are cached like offset pages (the cursor's key is part of the query):
        // the generation keeps them as fresh, and a client walking a list with cursors reads
        // the same pages as the next client doing so.
        let key = (self.generation.load(Ordering::Acquire), query.clone());
        if let Some(hit) = self.pages.get(&key).await {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        let page = self
            .pages
            .try_get_with(key, async {
                self.misses.fetch_add(1, Ordering::Relaxed);
                inner.list(query).await
            })
            .await
            .map_err(|e| RepoError::Internal(e.to_string()))?;
        Ok(page)
    }

    /// Call after a write to market `id` has committed (whatever its result): later reads see
    /// the database.
    pub async fn written(&self, id: i64) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.by_id
            .entry(id)
            .and_compute_with(|_| ready(Op::Remove))
            .await;
    }
}

/// [`MarketRepository`] with reads served from a [`MarketCache`].
pub struct CachedMarketRepository {
    inner: Arc<dyn MarketRepository>,
    cache: Arc<MarketCache>,
}

impl CachedMarketRepository {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn MarketRepository>, cache: Arc<MarketCache>) -> Self {
        Self { inner, cache }
    }
}

#[async_trait]
impl MarketRepository for CachedMarketRepository {
    async fn list(&self, query: ListQuery) -> Result<Arc<MarketPage>, RepoError> {
        self.cache.page(query, self.inner.as_ref()).await
    }

    async fn get(&self, id: i64) -> Result<Option<Arc<Market>>, RepoError> {
        self.cache.market(id, self.inner.as_ref()).await
    }

    async fn create(&self, market: NewMarket, jobs: NewMarketJobs) -> Result<Market, RepoError> {
        let created = self.inner.create(market, jobs).await?;
        self.cache.written(created.id).await;
        Ok(created)
    }

    async fn update(
        &self,
        id: i64,
        expected_version: i64,
        changes: MarketChanges,
        standing: Standing,
        jobs: Vec<NewJob>,
    ) -> Result<Market, RepoError> {
        let result = self
            .inner
            .update(id, expected_version, changes, standing, jobs)
            .await;
        self.cache.written(id).await;
        result
    }

    async fn delete(&self, id: i64, expected_version: i64) -> Result<(), RepoError> {
        let result = self.inner.delete(id, expected_version).await;
        self.cache.written(id).await;
        result
    }
}

/// [`TradingRepository`] that keeps a [`MarketCache`] current: stakes and lifecycle steps
/// change markets.
pub struct CachedTradingRepository {
    inner: Arc<dyn TradingRepository>,
    cache: Arc<MarketCache>,
}

impl CachedTradingRepository {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn TradingRepository>, cache: Arc<MarketCache>) -> Self {
        Self { inner, cache }
    }
}

#[async_trait]
impl TradingRepository for CachedTradingRepository {
    async fn stake(
        &self,
        user_id: i64,
        market_id: i64,
        stake: Stake,
        key: Option<String>,
    ) -> Result<Placed, RepoError> {
        let result = self.inner.stake(user_id, market_id, stake, key).await;
        if !matches!(&result, Ok(placed) if placed.replayed) {
            self.cache.written(market_id).await;
        }
        result
    }

    async fn close(&self, market_id: i64) -> Result<Market, RepoError> {
        let result = self.inner.close(market_id).await;
        self.cache.written(market_id).await;
        result
    }

    async fn resolve(
        &self,
        market_id: i64,
        winner: u32,
        standing: Standing,
    ) -> Result<Market, RepoError> {
        let result = self.inner.resolve(market_id, winner, standing).await;
        self.cache.written(market_id).await;
        result
    }

    async fn cancel(&self, market_id: i64) -> Result<Market, RepoError> {
        let result = self.inner.cancel(market_id).await;
        self.cache.written(market_id).await;
        result
    }

    async fn close_due(&self) -> Result<Vec<i64>, RepoError> {
        let closed = self.inner.close_due().await?;
        for id in &closed {
            self.cache.written(*id).await;
        }
        Ok(closed)
    }

    async fn market_positions(
        &self,
        market_id: i64,
        paging: Paging,
    ) -> Result<Page<MarketPosition>, RepoError> {
        self.inner.market_positions(market_id, paging).await
    }

    async fn user_positions(
        &self,
        user_id: i64,
        paging: Paging,
    ) -> Result<Page<UserPosition>, RepoError> {
        self.inner.user_positions(user_id, paging).await
    }

    async fn ledger(&self, user_id: i64, paging: Paging) -> Result<Page<LedgerEntry>, RepoError> {
        self.inner.ledger(user_id, paging).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        db::{Db, DbOptions},
        domain::market::{NewMarketInput, SortKey},
        repo::sqlite::{users::insert_user, SqliteMarketRepository},
    };

    async fn setup() -> (
        tempfile::TempDir,
        Arc<MarketCache>,
        CachedMarketRepository,
        i64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("t.db"), &DbOptions::default()).unwrap());
        let user = db
            .write(|conn| insert_user(conn, "alice", "!", crate::domain::user::Role::User, 100, 0))
            .await
            .unwrap();
        let cache = MarketCache::new(CacheConfig {
            markets: 100,
            pages: 100,
            ttl: Duration::from_secs(60),
        });
        let repo =
            CachedMarketRepository::new(Arc::new(SqliteMarketRepository::new(db)), cache.clone());
        let input = NewMarketInput {
            name: "Cached?".into(),
            creator_id: user,
            ..Default::default()
        };
        let id = repo
            .create(
                NewMarket::parse(input, time::OffsetDateTime::now_utc()).unwrap(),
                |_| Vec::new(),
            )
            .await
            .unwrap()
            .id;
        (dir, cache, repo, id)
    }

    #[tokio::test]
    async fn concurrent_misses_load_a_market_once() {
        let (_dir, cache, repo, id) = setup().await;
        let reads = futures::future::join_all((0..50).map(|_| repo.get(id))).await;
        assert!(reads
            .iter()
            .all(|r| r.as_ref().unwrap().as_ref().unwrap().id == id));
        assert_eq!(cache.stats().misses, 1);
        assert_eq!(cache.stats().hits + cache.stats().misses, 50);
    }

    #[tokio::test]
    async fn a_write_is_seen_by_every_read_that_starts_after_it_returns() {
        let (_dir, cache, repo, id) = setup().await;
        let query =
            ListQuery::parse(None, None, Some(SortKey::Name), None, None, None, None).unwrap();
        assert_eq!(repo.get(id).await.unwrap().unwrap().version, 1);
        assert_eq!(repo.list(query.clone()).await.unwrap().items[0].version, 1);
        for round in 0..20 {
            let changes = MarketChanges {
                description: Some(Some(format!("round {round}"))),
                ..Default::default()
            };
            let written = repo
                .update(id, 1 + round, changes, Standing::Creator, Vec::new())
                .await
                .unwrap();
            assert_eq!(
                repo.get(id).await.unwrap().unwrap().version,
                written.version
            );
            assert_eq!(
                repo.list(query.clone()).await.unwrap().items[0].version,
                written.version
            );
        }
        assert!(cache.stats().hits > 0 || cache.stats().misses > 0);
        repo.delete(id, 21).await.unwrap();
        assert!(repo.get(id).await.unwrap().is_none());
        assert_eq!(repo.list(query.clone()).await.unwrap().total, 0);
    }
}
