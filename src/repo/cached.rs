//! A read cache in front of the market and trading repositories (decorators), correct under
//! concurrency:
//!
//! - a market is loaded once under concurrent misses: the first miss leaves a placeholder in
//!   the cache ([quick_cache](https://docs.rs/quick_cache)'s guard) and the others wait for it;
//! - read-your-writes: every write to a market removes its entry *after* its commit and before
//!   it returns. The removal also removes a placeholder, and a loader whose placeholder is gone
//!   cannot insert: a read that loaded the old row before the commit cannot put it back
//!   afterwards (the read-old / commit / invalidate / insert-old race; a test stages it);
//! - list pages are keyed by a generation number that every market write bumps after its
//!   commit, so a page cached before a write is never served after it.
//!
//! Writes made behind the server's back (another process on the same file) are seen when
//! entries expire (TTL, checked when an entry is read).
//!
//! Markets are kept within a memory budget (`--cache-mb`), each weighed by what it holds in
//! memory (`market_weight`: the value, its strings and outcomes, the map's slot), not counted:
//! markets differ in size by their description, and a budget is what an operator can plan
//! for. At the default 64 MiB, every market of the bench's 100,000-market database fits (about
//! 620 bytes each as counted, 60 MB in all; the server's PSS grew by about 570 bytes a market),
//! so a read by random id is a hit once that market was read; with the cache of 10,000 markets
//! it replaced, nine reads in ten missed (benches/README.md has the figures).
//!
//! Why quick_cache and not moka (used before): a read by random id over 100,000 markets misses
//! a 10,000-market cache nine times in ten, and under moka a miss (a per-key compute with its
//! waiter map, the insert, and the housekeeping that inserts trigger) cost more than the SQLite
//! read it saves on a hit: that workload ran faster with the cache off (19.0k vs 15.4k req/s in
//! one bench run). quick_cache's miss is a placeholder in a sharded map and its eviction
//! (CLOCK-Pro) runs inline in a few steps; there is no housekeeping thread or queue.

use std::{
    hash::Hash,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use quick_cache::{sync::Cache, UnitWeighter, Weighter};

use super::{MarketRepository, NewMarketJobs, RepoError, TradingRepository};
use crate::domain::{
    authority::Standing,
    job::NewJob,
    market::{ListQuery, Market, MarketChanges, MarketPage, NewMarket, Outcome},
    trading::{LedgerEntry, MarketPosition, Placed, Stake, UserPosition},
    Page, Paging,
};

/// Sizes and lifetime of the market cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Memory the cached markets may take, in bytes as `market_weight` counts them.
    pub market_bytes: u64,
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

/// A cached value and when it was loaded.
#[derive(Clone)]
struct Entry<V> {
    loaded: Instant,
    value: V,
}

/// A cached market (or the knowledge that there is none).
type MarketEntry = Entry<Option<Arc<Market>>>;

/// Bytes a cached market holds: the entry and the market itself, every string's and the
/// outcomes' heap blocks, and the cache's slot for it (key, entry and bookkeeping). An
/// estimate, without the allocator's rounding; on the bench's database it counts a little more
/// than the PSS the markets add (620 against 570 bytes a market).
fn market_weight(entry: &MarketEntry) -> u64 {
    const SLOT: usize = size_of::<i64>() + size_of::<MarketEntry>() + 32;
    let Some(market) = &entry.value else {
        return SLOT as u64;
    };
    let strings = market.name.capacity()
        + market.description.as_ref().map_or(0, String::capacity)
        + market.creator.username.capacity()
        + market
            .outcomes
            .iter()
            .map(|o| o.label.capacity())
            .sum::<usize>();
    let arc = 2 * size_of::<usize>() + size_of::<Market>();
    (SLOT + arc + strings + market.outcomes.capacity() * size_of::<Outcome>()) as u64
}

/// Weighs markets by [`market_weight`].
#[derive(Clone)]
struct MarketWeigher;

impl Weighter<i64, MarketEntry> for MarketWeigher {
    fn weight(&self, _id: &i64, entry: &MarketEntry) -> u64 {
        market_weight(entry)
    }
}

/// A map from keys to values loaded once each, expiring `ttl` after loading, within a total
/// weight.
struct Loaded<K, V, W = UnitWeighter> {
    entries: Cache<K, Entry<V>, W>,
    ttl: Duration,
}

impl<K: Eq + Hash + Clone, V: Clone, W: Weighter<K, Entry<V>> + Clone> Loaded<K, V, W> {
    /// About `items` entries of a total weight of at most `weight`.
    fn new(items: u64, weight: u64, weigher: W, ttl: Duration) -> Self {
        Loaded {
            entries: Cache::with_weighter(items.max(1) as usize, weight.max(1), weigher),
            ttl,
        }
    }

    /// The value under `key`, from the cache or from `load` (once for concurrent callers).
    /// Counts a hit or a miss in `stats`.
    async fn get_or_load<F>(
        &self,
        key: &K,
        stats: &MarketCache,
        load: impl FnOnce() -> F,
    ) -> Result<V, RepoError>
    where
        F: std::future::Future<Output = Result<V, RepoError>>,
    {
        loop {
            match self.entries.get_value_or_guard_async(key).await {
                Ok(entry) if entry.loaded.elapsed() < self.ttl => {
                    stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(entry.value);
                }
                // Expired: drop that very entry (not a fresher one), then load again.
                Ok(stale) => {
                    self.entries.remove_if(key, |e| e.loaded == stale.loaded);
                }
                Err(guard) => {
                    stats.misses.fetch_add(1, Ordering::Relaxed);
                    let value = load().await?;
                    // Refused when a write removed the placeholder meanwhile: the value may be
                    // older than that write, so it is returned to this caller only.
                    let _ = guard.insert(Entry {
                        loaded: Instant::now(),
                        value: value.clone(),
                    });
                    return Ok(value);
                }
            }
        }
    }

    fn remove(&self, key: &K) {
        self.entries.remove(key);
    }
}

/// The shared cache state: markets by id, list pages by generation and query.
pub struct MarketCache {
    by_id: Loaded<i64, Option<Arc<Market>>, MarketWeigher>,
    pages: Loaded<(u64, ListQuery), Arc<MarketPage>>,
    generation: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl MarketCache {
    /// A cache sized by `config`.
    pub fn new(config: CacheConfig) -> Arc<Self> {
        Arc::new(MarketCache {
            // The map is sized for markets of a typical weight; it grows if they are smaller.
            by_id: Loaded::new(
                config.market_bytes / 512,
                config.market_bytes,
                MarketWeigher,
                config.ttl,
            ),
            pages: Loaded::new(config.pages, config.pages, UnitWeighter, config.ttl),
            generation: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Bytes the cached markets take, as `market_weight` counts them.
    pub fn market_bytes(&self) -> u64 {
        self.by_id.entries.weight()
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
        self.by_id.get_or_load(&id, self, || inner.get(id)).await
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
        self.pages
            .get_or_load(&key, self, || inner.list(query))
            .await
    }

    /// Call after a write to market `id` has committed (whatever its result): later reads see
    /// the database.
    pub fn written(&self, id: i64) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.by_id.remove(&id);
    }

    /// Forgets every market and page (writes may have been missed: another process's, while
    /// their announcements could not be followed).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.by_id.entries.clear();
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
        self.cache.written(created.id);
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
        self.cache.written(id);
        result
    }

    async fn delete(&self, id: i64, expected_version: i64) -> Result<(), RepoError> {
        let result = self.inner.delete(id, expected_version).await;
        self.cache.written(id);
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
            self.cache.written(market_id);
        }
        result
    }

    async fn close(&self, market_id: i64) -> Result<Market, RepoError> {
        let result = self.inner.close(market_id).await;
        self.cache.written(market_id);
        result
    }

    async fn resolve(
        &self,
        market_id: i64,
        winner: u32,
        standing: Standing,
    ) -> Result<Market, RepoError> {
        let result = self.inner.resolve(market_id, winner, standing).await;
        self.cache.written(market_id);
        result
    }

    async fn cancel(&self, market_id: i64) -> Result<Market, RepoError> {
        let result = self.inner.cancel(market_id).await;
        self.cache.written(market_id);
        result
    }

    async fn close_due(&self) -> Result<Vec<i64>, RepoError> {
        let closed = self.inner.close_due().await?;
        for id in &closed {
            self.cache.written(*id);
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
            market_bytes: 1 << 20,
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
    async fn markets_are_weighed_by_size_and_kept_within_the_budget() {
        let (_dir, _cache, repo, id) = setup().await;
        let short = repo.get(id).await.unwrap().unwrap();
        let mut long = (*short).clone();
        long.description = Some("x".repeat(1000));
        let weigh = |m: &Market| {
            market_weight(&Entry {
                loaded: Instant::now(),
                value: Some(Arc::new(m.clone())),
            })
        };
        assert!(weigh(&long) >= weigh(&short) + 1000);
        assert!(weigh(&short) > size_of::<Market>() as u64);

        let budget = 40 * weigh(&long);
        let cache = MarketCache::new(CacheConfig {
            market_bytes: budget,
            pages: 10,
            ttl: Duration::from_secs(60),
        });
        let inner: Arc<dyn MarketRepository> = repo.inner.clone();
        let user = short.creator.id;
        let mut ids = Vec::new();
        for n in 0..200 {
            let input = NewMarketInput {
                name: format!("Market {n}?"),
                description: Some("y".repeat(1000)),
                creator_id: user,
                ..Default::default()
            };
            let market = NewMarket::parse(input, time::OffsetDateTime::now_utc()).unwrap();
            ids.push(inner.create(market, |_| Vec::new()).await.unwrap().id);
        }
        for id in &ids {
            assert_eq!(
                cache.market(*id, inner.as_ref()).await.unwrap().unwrap().id,
                *id
            );
        }
        let held = cache.market_bytes();
        assert!(
            held <= budget,
            "{held} bytes held over a budget of {budget}"
        );
        assert!(
            held >= budget / 2,
            "{held} bytes held of a budget of {budget}"
        );
        // What the budget holds is served without the database.
        let misses = cache.stats().misses;
        let resident: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| cache.by_id.entries.peek(id).is_some())
            .collect();
        assert!(
            (20..=40).contains(&resident.len()),
            "{} held",
            resident.len()
        );
        for id in &resident {
            cache.market(*id, inner.as_ref()).await.unwrap();
        }
        assert_eq!(cache.stats().misses, misses);
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

    /// A repository whose `get` reads, then waits at a gate before returning what it read.
    struct Gated {
        inner: Arc<dyn MarketRepository>,
        read: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    #[async_trait]
    impl MarketRepository for Gated {
        async fn list(&self, q: ListQuery) -> Result<Arc<MarketPage>, RepoError> {
            self.inner.list(q).await
        }
        async fn get(&self, id: i64) -> Result<Option<Arc<Market>>, RepoError> {
            let read = self.inner.get(id).await;
            self.read.notify_one();
            self.release.notified().await;
            read
        }
        async fn create(&self, m: NewMarket, jobs: NewMarketJobs) -> Result<Market, RepoError> {
            self.inner.create(m, jobs).await
        }
        async fn update(
            &self,
            id: i64,
            expected_version: i64,
            c: MarketChanges,
            standing: Standing,
            jobs: Vec<NewJob>,
        ) -> Result<Market, RepoError> {
            self.inner
                .update(id, expected_version, c, standing, jobs)
                .await
        }
        async fn delete(&self, id: i64, expected_version: i64) -> Result<(), RepoError> {
            self.inner.delete(id, expected_version).await
        }
    }

    #[tokio::test]
    async fn a_read_that_loaded_the_old_row_before_a_write_cannot_cache_it_after() {
        let (_dir, cache, repo, id) = setup().await;
        let gated = Arc::new(Gated {
            inner: repo.inner.clone(),
            read: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        });
        let slow_reader = {
            let (cache, gated) = (cache.clone(), gated.clone());
            tokio::spawn(async move { cache.market(id, gated.as_ref()).await })
        };
        // The slow read has read version 1 and holds it.
        gated.read.notified().await;
        let changes = MarketChanges {
            description: Some(Some("changed".into())),
            ..Default::default()
        };
        // The write commits and invalidates while that read is still in flight.
        let written = repo
            .update(id, 1, changes, Standing::Creator, Vec::new())
            .await
            .unwrap();
        assert_eq!(written.version, 2);
        gated.release.notify_one();
        let old = slow_reader.await.unwrap().unwrap().unwrap();
        assert_eq!(old.version, 1, "the slow read returns what it read");
        // ...but did not put it in the cache: the next read sees the write.
        assert_eq!(repo.get(id).await.unwrap().unwrap().version, 2);
    }
}
