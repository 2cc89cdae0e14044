//! Market search: hybrid ranking (keyword matches of at least half the query's words, ranked
//! by the engine, fused with vector similarity by reciprocal rank), related markets, and indexing
//! markets' texts (what the `index_market` and `index_markets` jobs do).

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use crate::{
    domain::{
        job::NewJob,
        market::{Market, MarketStatus},
        search::{keywords, SearchMode, SearchQuery},
    },
    error::AppError,
    repo::{JobRepository, MarketRepository, RepoError, SearchRepository},
    search::{
        embedder::{EmbedError, Embedder},
        index::{VectorIndex, PROBE},
        rank::{reciprocal_rank_fusion, RRF_K},
        terms::TermLists,
    },
    service::MarketChanged,
};

/// Candidates taken from each ranking before fusion, at least.
const CANDIDATES_MIN: usize = 50;
/// How many lists' worth of vectors `related` scores: a market's own vector lies in the lists
/// that hold its neighbours (recall@10 against scoring every vector: 1.000 at 8 on 100,000
/// seeded markets, as at 32; see benches/README.md).
const RELATED_PROBE: usize = 8;
/// Vector matches less similar than this are not candidates (noise, not meaning).
const SIMILARITY_FLOOR: f32 = 0.1;
/// Index jobs enqueued per transaction by a reindex (a reindex of many markets neither holds
/// the writer for long nor builds every job in memory at once).
const ENQUEUE_BATCH: usize = 1000;
/// Markets per `index_markets` job of a reindex.
pub const INDEX_BATCH: usize = 32;

/// One result.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The market.
    pub market: Market,
    /// Fused score (higher is better); comparable within one response.
    pub score: f64,
    /// 1-based rank among keyword matches, if it matched.
    pub keyword_rank: Option<u32>,
    /// 1-based rank by vector similarity, if a candidate.
    pub vector_rank: Option<u32>,
}

/// A search's answer.
#[derive(Debug, Clone)]
pub struct SearchResults {
    /// Best first.
    pub hits: Vec<Hit>,
    /// The ranking actually used.
    pub mode: SearchMode,
    /// Why the ranking is not the one requested (the embedder is unavailable).
    pub degraded: Option<String>,
    /// The embedding model.
    pub model: String,
}

/// What indexing a market did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexed {
    /// A new vector was stored.
    Embedded,
    /// The stored vector is of the same text; nothing to do.
    Unchanged,
    /// The text changed or the market was deleted meanwhile; a later job has it.
    Superseded,
}

/// What an `index_markets` job did, market by market.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexedCounts {
    /// New vectors stored.
    pub embedded: u64,
    /// Markets whose stored vector is of their current text.
    pub unchanged: u64,
    /// Markets changed or deleted meanwhile (a later job has them).
    pub superseded: u64,
}

impl Indexed {
    /// For the job's result.
    pub fn as_str(self) -> &'static str {
        match self {
            Indexed::Embedded => "embedded",
            Indexed::Unchanged => "unchanged",
            Indexed::Superseded => "superseded",
        }
    }
}

/// Search use cases.
pub struct SearchService {
    repo: Arc<dyn SearchRepository>,
    markets: Arc<dyn MarketRepository>,
    embedder: Arc<dyn Embedder>,
    index: Arc<RwLock<VectorIndex>>,
    /// Common words' best matches, kept (keyword ranking with bounded work).
    terms: TermLists,
    jobs: Arc<dyn JobRepository>,
    query_timeout: Duration,
}

impl SearchService {
    /// A service; `query_timeout` bounds embedding a query (past it, keyword results only).
    pub fn new(
        repo: Arc<dyn SearchRepository>,
        markets: Arc<dyn MarketRepository>,
        embedder: Arc<dyn Embedder>,
        jobs: Arc<dyn JobRepository>,
        query_timeout: Duration,
    ) -> Self {
        let index = VectorIndex::new(embedder.dimensions());
        SearchService {
            repo,
            markets,
            embedder,
            index: Arc::new(RwLock::new(index)),
            terms: TermLists::default(),
            jobs,
            query_timeout,
        }
    }

    /// The embedding model's id.
    pub fn model(&self) -> &str {
        self.embedder.model()
    }

    /// Loads the stored vectors of the current model into memory and enqueues indexing of
    /// markets that have none (new, or embedded by another model). Returns (loaded, enqueued).
    pub async fn load(&self) -> Result<(u64, u64), AppError> {
        let loaded = self.reload().await?;
        let enqueued = self.enqueue_reindex(None, true).await?;
        Ok((loaded, enqueued))
    }

    /// Takes market `id`'s stored vector into the index (another process stored it), or drops
    /// the market from the index when it has none.
    pub async fn follow_vector(&self, id: i64) -> Result<(), AppError> {
        match self.repo.vector(id, self.model().to_owned()).await? {
            Some((vector, status)) => self.with_index(|index| put(index, id, &vector, status)),
            None => self.with_index(|index| index.remove(id)),
        };
        Ok(())
    }

    /// Takes a change this process made to a market into the index.
    pub fn follow(&self, changed: MarketChanged) {
        match changed {
            MarketChanged::Status(id, status) => {
                self.with_index(|index| index.set_tag(id, tag(status)))
            }
            MarketChanged::Deleted(id) => self.with_index(|index| index.remove(id)),
        };
    }

    /// Takes market `id`'s status into the index (what a status filter looks at), or drops the
    /// market from the index when it is gone.
    pub async fn follow_market(&self, id: i64) -> Result<(), AppError> {
        match self.repo.statuses(vec![id]).await?.get(&id) {
            Some(status) => self.with_index(|index| index.set_tag(id, tag(*status))),
            None => self.with_index(|index| index.remove(id)),
        };
        Ok(())
    }

    /// Drops market `id` from the index (it was deleted).
    pub fn forget(&self, id: i64) {
        self.with_index(|index| index.remove(id));
    }

    /// Loads the index (again) from the stored vectors (at start, and when announcements of
    /// other processes' vectors may have been missed); returns how many. The new index is built
    /// and partitioned beside the one searches use, which it replaces once complete.
    pub async fn reload(&self) -> Result<u64, AppError> {
        let fresh = Arc::new(std::sync::Mutex::new(VectorIndex::new(
            self.embedder.dimensions(),
        )));
        let building = fresh.clone();
        let loaded = self
            .repo
            .each_vector(
                self.model().to_owned(),
                Box::new(move |id, vector| {
                    if let Ok(mut index) = building.lock() {
                        match vector {
                            Some((vector, status)) => {
                                put_unpartitioned(&mut index, id, vector, status);
                            }
                            None => index.reserve(usize::try_from(id).unwrap_or(0)),
                        }
                    }
                }),
            )
            .await?;
        let fresh = tokio::task::spawn_blocking(move || {
            let mut index = fresh.lock().map_err(|_| poisoned())?;
            index.partition();
            Ok::<_, AppError>(std::mem::replace(&mut *index, VectorIndex::new(0)))
        })
        .await
        .map_err(|_| AppError::Internal("partitioning the vector index panicked".into()))??;
        *self.index.write().map_err(|_| poisoned())? = fresh;
        self.terms.changed();
        Ok(loaded)
    }

    /// Enqueues indexing of every market (`missing_only`: of those without a current vector),
    /// readable by `owner`, as `index_markets` jobs of up to [`INDEX_BATCH`] markets each (one
    /// embedding call per job: a transformer multiplies each weight matrix once for the whole
    /// batch, an HTTP provider gets one request); returns how many markets.
    pub async fn enqueue_reindex(
        &self,
        owner: Option<i64>,
        missing_only: bool,
    ) -> Result<u64, AppError> {
        let ids = self
            .repo
            .markets_to_index(self.model().to_owned(), missing_only)
            .await?;
        for batch in ids.chunks(ENQUEUE_BATCH) {
            let jobs = batch
                .chunks(INDEX_BATCH)
                .map(|ids| NewJob::index_markets(ids, owner))
                .collect();
            self.jobs.enqueue_all(jobs).await?;
        }
        Ok(ids.len() as u64)
    }

    /// Embeds market `id`'s text and stores the vector, unless the stored one is of the same
    /// text. Idempotent. Fails (so the job retries) when the embedder does.
    pub async fn index_market(&self, id: i64) -> Result<Indexed, AppError> {
        let counts = self.index_markets(&[id]).await?;
        Ok(if counts.embedded > 0 {
            Indexed::Embedded
        } else if counts.unchanged > 0 {
            Indexed::Unchanged
        } else {
            Indexed::Superseded
        })
    }

    /// [`Self::index_market`] for several markets, their texts embedded in one call.
    pub async fn index_markets(&self, ids: &[i64]) -> Result<IndexedCounts, AppError> {
        let model = self.model().to_owned();
        let mut counts = IndexedCounts::default();
        let mut pending = Vec::new();
        for &id in ids {
            let Some((text, stored_hash, status)) = self.repo.text(id, model.clone()).await? else {
                self.with_index(|index| index.remove(id));
                counts.superseded += 1;
                continue;
            };
            if stored_hash.as_deref() == Some(text.content_hash(&model).as_str()) {
                if !self.with_index(|index| index.contains(id)) {
                    if let Some((vector, status)) = self.repo.vector(id, model.clone()).await? {
                        self.with_index(|index| put(index, id, &vector, status));
                    }
                }
                counts.unchanged += 1;
                continue;
            }
            pending.push((id, text, status));
        }
        if pending.is_empty() {
            return Ok(counts);
        }
        let texts: Vec<String> = pending.iter().map(|(_, text, _)| text.joined()).collect();
        let vectors = self.embedder.embed(&texts).await.map_err(embed_error)?;
        if vectors.len() != pending.len() {
            return Err(AppError::Internal(format!(
                "the embedder returned {} vectors for {} texts",
                vectors.len(),
                pending.len()
            )));
        }
        // Stored concurrently: the writes share a commit (on SQLite, the writer's group
        // commit).
        let stored = futures_util::future::join_all(pending.into_iter().zip(vectors).map(
            |((id, text, status), vector)| {
                let model = model.clone();
                async move {
                    let stored = self
                        .repo
                        .store_vector(id, model, text, vector.clone())
                        .await?;
                    if stored {
                        self.with_index(|index| put(index, id, &vector, status));
                    }
                    Ok::<_, AppError>(stored)
                }
            },
        ))
        .await;
        for stored in stored {
            if stored? {
                counts.embedded += 1;
            } else {
                counts.superseded += 1;
            }
        }
        Ok(counts)
    }

    /// Markets matching `q`, best first.
    pub async fn search(&self, q: SearchQuery) -> Result<SearchResults, AppError> {
        let n = (q.limit as usize * 5).max(CANDIDATES_MIN);
        let mut degraded = None;
        let mut vector_ids = Vec::new();
        if q.mode != SearchMode::Keyword {
            match self.embed_query(&q.text).await {
                Ok(vector) => vector_ids = self.nearest(&vector, q.status, n, None).await?,
                Err(why) => degraded = Some(why),
            }
        }
        let terms = keywords(&q.text);
        let keyword_ids = match (q.mode, &degraded) {
            (SearchMode::Vector, None) => Vec::new(),
            _ if terms.is_empty() => Vec::new(),
            // Fused with the vector ranking, a market must have half the query's words (at
            // least one): one common word in a long query (`top` in `top movie prize in
            // Hollywood`) would otherwise weigh as much as the nearest market in meaning. On
            // its own, the keyword ranking lists every market with any of them.
            (SearchMode::Hybrid, None) => {
                self.keyword(&terms, terms.len().div_ceil(2), q.status, n)
                    .await?
            }
            _ => self.keyword(&terms, 1, q.status, n).await?,
        };
        let mode = match (&degraded, q.mode) {
            (Some(_), _) => SearchMode::Keyword,
            (None, mode) => mode,
        };
        let fused = reciprocal_rank_fusion(&[&keyword_ids, &vector_ids], RRF_K);
        let rank_in =
            |ids: &[i64], id: i64| ids.iter().position(|&x| x == id).map(|p| p as u32 + 1);
        let mut hits = Vec::with_capacity(q.limit as usize);
        for (id, score) in fused {
            if hits.len() == q.limit as usize {
                break;
            }
            // Deleted between ranking and loading, or of another status by now: skip it.
            if let Some(market) = self.live(id, q.status).await? {
                hits.push(Hit {
                    market: Arc::unwrap_or_clone(market),
                    score,
                    keyword_rank: rank_in(&keyword_ids, id),
                    vector_rank: rank_in(&vector_ids, id),
                });
            }
        }
        Ok(SearchResults {
            hits,
            mode,
            degraded,
            model: self.model().to_owned(),
        })
    }

    /// Markets whose text is nearest to market `id`'s, best first, with their similarity.
    pub async fn related(
        &self,
        id: i64,
        status: Option<MarketStatus>,
        limit: u32,
    ) -> Result<Vec<(Market, f32)>, AppError> {
        let market = self
            .markets
            .get(id)
            .await?
            .ok_or(AppError::NotFound("market"))?;
        let vector = match self.repo.vector(id, self.model().to_owned()).await? {
            Some((vector, _)) => vector,
            None => {
                let text = format!(
                    "{}\n{}",
                    market.name,
                    market.description.as_deref().unwrap_or_default()
                );
                self.embed_query(&text)
                    .await
                    .map_err(AppError::Unavailable)?
            }
        };
        let ids = self.filtered_top(&vector, status, limit as usize, Some(id), RELATED_PROBE)?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, similarity) in ids {
            if let Some(market) = self.live(id, status).await? {
                out.push((Arc::unwrap_or_clone(market), similarity));
            }
        }
        Ok(out)
    }

    /// Market `id` if it still exists and has `status` (a ranking may be a moment behind).
    async fn live(
        &self,
        id: i64,
        status: Option<MarketStatus>,
    ) -> Result<Option<Arc<Market>>, AppError> {
        match self.markets.get(id).await? {
            None => {
                self.forget(id);
                Ok(None)
            }
            Some(market) if status.is_some_and(|want| want != market.status) => Ok(None),
            Some(market) => Ok(Some(market)),
        }
    }

    /// The best `n` markets having at least `min_words` of `terms`, by their summed scores.
    async fn keyword(
        &self,
        terms: &[String],
        min_words: usize,
        status: Option<MarketStatus>,
        n: usize,
    ) -> Result<Vec<i64>, AppError> {
        let repo = self.repo.clone();
        let fetch = move |term, status, limit| {
            let repo = repo.clone();
            async move { repo.term_matches(term, status, limit).await }
        };
        self.terms
            .rank(terms, min_words, status, n, fetch)
            .await
            .map_err(|e| match &*e {
                RepoError::Unavailable(why) => AppError::Unavailable(why.clone()),
                other => AppError::Internal(other.to_string()),
            })
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, String> {
        let texts = [text.to_owned()];
        let call = self.embedder.embed(&texts);
        match tokio::time::timeout(self.query_timeout, call).await {
            Ok(Ok(mut vectors)) => vectors.pop().ok_or_else(|| "no vector returned".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the embedding provider did not answer within {} ms",
                self.query_timeout.as_millis()
            )),
        }
    }

    async fn nearest(
        &self,
        vector: &[f32],
        status: Option<MarketStatus>,
        n: usize,
        exclude: Option<i64>,
    ) -> Result<Vec<i64>, AppError> {
        let hits = self.filtered_top(vector, status, n, exclude, PROBE)?;
        Ok(hits.into_iter().map(|(id, _)| id).collect())
    }

    /// The `n` indexed markets most similar to `vector` that have `status` (the index keeps
    /// each market's status: the filter applies inside the search, before the cut), but
    /// `exclude`, at least [`SIMILARITY_FLOOR`] similar. Right here on the async worker: the
    /// index scores a bounded number of vectors (about 10,000 at 100,000 markets, 0.3 ms).
    /// The caller checks each market's status as it loads it: a status the index has not
    /// caught up with yet (another process changed it a moment ago) costs a result, never
    /// shows a wrong one.
    fn filtered_top(
        &self,
        vector: &[f32],
        status: Option<MarketStatus>,
        n: usize,
        exclude: Option<i64>,
        probe: usize,
    ) -> Result<Vec<(i64, f32)>, AppError> {
        let want = status.map(tag);
        let k = n + usize::from(exclude.is_some());
        let best = self
            .index
            .read()
            .map_err(|_| poisoned())?
            .top_probing(vector, k, probe, |t| want.is_none_or(|want| want == t));
        Ok(best
            .into_iter()
            .filter(|&(id, similarity)| Some(id) != exclude && similarity >= SIMILARITY_FLOOR)
            .take(n)
            .collect())
    }

    /// Changes the index; what changed there may have changed in the keyword index too.
    fn with_index<T: Default>(&self, f: impl FnOnce(&mut VectorIndex) -> T) -> T {
        self.terms.changed();
        self.index
            .write()
            .map(|mut index| f(&mut index))
            .unwrap_or_default()
    }
}

/// Adds a vector (see [`adopt_length`]).
fn put(index: &mut VectorIndex, id: i64, vector: &[f32], status: MarketStatus) -> bool {
    adopt_length(index, vector);
    index.upsert(id, vector, tag(status))
}

/// [`put`] while loading many: the index is partitioned once, at the end.
fn put_unpartitioned(index: &mut VectorIndex, id: i64, vector: &[f32], status: MarketStatus) {
    adopt_length(index, vector);
    index.upsert_unpartitioned(id, vector, tag(status));
}

/// Takes `vector`'s length for the index's while the index is still empty (an HTTP embedder's
/// dimensions are known only from its first answer).
fn adopt_length(index: &mut VectorIndex, vector: &[f32]) {
    if index.dimensions() != vector.len() && index.is_empty() {
        *index = VectorIndex::new(vector.len());
    }
}

/// A market's status as the index's tag.
fn tag(status: MarketStatus) -> u8 {
    match status {
        MarketStatus::Active => 0,
        MarketStatus::Closed => 1,
        MarketStatus::Resolved => 2,
        MarketStatus::Cancelled => 3,
    }
}

fn poisoned() -> AppError {
    AppError::Internal("the vector index lock is poisoned".into())
}

fn embed_error(e: EmbedError) -> AppError {
    AppError::Unavailable(e.to_string())
}
