//! Market search: hybrid keyword + semantic search, and markets related to a market.

use std::sync::Arc;

use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    OpenApi,
};

use super::{
    error::ApiError,
    market_models::MarketStatusView,
    search_models::{RelatedEnvelope, RelatedMeta, SearchEnvelope, SearchModeView},
    ApiTags,
};
use crate::{
    domain::search::{SearchQuery, RESULTS_DEFAULT},
    service::search::SearchService,
};

/// Search API.
pub struct SearchApi {
    /// The search use cases.
    pub search: Arc<SearchService>,
}

#[OpenApi(prefix_path = "/api/markets", tag = "ApiTags::Markets")]
impl SearchApi {
    /// Search markets
    ///
    /// Markets whose name or description match `q`, best first. Hybrid ranking fuses keyword
    /// matches (bm25, names weigh double, word forms stemmed) with similarity of meaning
    /// (embedding vectors, which also catch typos and other word forms) by reciprocal rank;
    /// each result carries its score and both ranks. `status` filters inside the search, so
    /// a filtered search still returns up to `limit` results. When the embedding provider is
    /// unavailable the answer comes from the keyword index alone and `meta.notice` says so.
    #[oai(path = "/search", method = "get", operation_id = "search_markets")]
    async fn search_markets(
        &self,
        /// What to look for: 1 to 200 characters.
        #[oai(validator(min_length = 1, max_length = 200))]
        q: Query<String>,
        /// Only markets in this status.
        status: Query<Option<MarketStatusView>>,
        /// Most results, 1 to 50 (default 10).
        #[oai(validator(minimum(value = "1"), maximum(value = "50")))]
        limit: Query<Option<u32>>,
        /// Ranking (default `hybrid`).
        mode: Query<Option<SearchModeView>>,
    ) -> Result<Json<SearchEnvelope>, ApiError> {
        let query = SearchQuery::parse(
            &q.0,
            status.0.map(Into::into),
            limit.0,
            mode.0.map(Into::into),
        )?;
        let results = self.search.search(query).await?;
        Ok(Json(results.into()))
    }

    /// List related markets
    ///
    /// The markets nearest in meaning to this one (by their embedding vectors), nearest first,
    /// without the market itself.
    #[oai(
        path = "/:id/related",
        method = "get",
        operation_id = "list_related_markets"
    )]
    async fn list_related_markets(
        &self,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// Only markets in this status.
        status: Query<Option<MarketStatusView>>,
        /// Most results, 1 to 50 (default 10).
        #[oai(validator(minimum(value = "1"), maximum(value = "50")))]
        limit: Query<Option<u32>>,
    ) -> Result<Json<RelatedEnvelope>, ApiError> {
        let related = self
            .search
            .related(
                id.0,
                status.0.map(Into::into),
                limit.0.unwrap_or(RESULTS_DEFAULT),
            )
            .await?;
        let meta = RelatedMeta {
            model: self.search.model().to_owned(),
            count: related.len() as u32,
        };
        Ok(Json(RelatedEnvelope::new(
            related.into_iter().map(Into::into).collect(),
            meta,
        )))
    }
}
