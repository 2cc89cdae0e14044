//! Schemas of search results and related markets.

use poem_openapi::{types::Example, Enum, Object};

use super::{envelope::envelope, market_models::MarketView};
use crate::{
    domain::{market::Market, search::SearchMode},
    service::search::{Hit, SearchResults},
};

/// How results are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum SearchModeView {
    /// Keyword (bm25 over name and description) and meaning (vector similarity) fused by
    /// reciprocal rank.
    Hybrid,
    /// Keyword matches only.
    Keyword,
    /// Vector similarity only.
    Vector,
}

impl From<SearchModeView> for SearchMode {
    fn from(m: SearchModeView) -> Self {
        match m {
            SearchModeView::Hybrid => SearchMode::Hybrid,
            SearchModeView::Keyword => SearchMode::Keyword,
            SearchModeView::Vector => SearchMode::Vector,
        }
    }
}

impl From<SearchMode> for SearchModeView {
    fn from(m: SearchMode) -> Self {
        match m {
            SearchMode::Hybrid => SearchModeView::Hybrid,
            SearchMode::Keyword => SearchModeView::Keyword,
            SearchMode::Vector => SearchModeView::Vector,
        }
    }
}

/// One search result.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct SearchHitView {
    /// The market.
    pub market: MarketView,
    /// Relevance (reciprocal-rank fusion of the rankings below; higher is better, comparable
    /// within one response only).
    pub score: f64,
    /// Rank among keyword matches (1 = best), or null when the words did not match.
    #[oai(nullable)]
    pub keyword_rank: Option<u32>,
    /// Rank by similarity of meaning (1 = nearest), or null when not among the candidates.
    #[oai(nullable)]
    pub vector_rank: Option<u32>,
}

impl From<Hit> for SearchHitView {
    fn from(h: Hit) -> Self {
        SearchHitView {
            market: h.market.into(),
            score: h.score,
            keyword_rank: h.keyword_rank,
            vector_rank: h.vector_rank,
        }
    }
}

impl Example for SearchHitView {
    fn example() -> Self {
        SearchHitView {
            market: MarketView::example(),
            score: 0.0328,
            keyword_rank: Some(1),
            vector_rank: Some(2),
        }
    }
}

/// How a search was answered.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct SearchMeta {
    /// The ranking used: `keyword` when hybrid or vector ranking was asked for but the embedder
    /// is unavailable (see `notice`).
    pub mode: SearchModeView,
    /// Why the ranking is not the one asked for; null when it is.
    #[oai(nullable)]
    pub notice: Option<String>,
    /// The embedding model.
    pub model: String,
    /// Results returned.
    pub count: u32,
}

impl Example for SearchMeta {
    fn example() -> Self {
        SearchMeta {
            mode: SearchModeView::Hybrid,
            notice: None,
            model: "minilm-l6-v2-static-v1-256".into(),
            count: 1,
        }
    }
}

envelope! {
    /// Search results, best first.
    SearchEnvelope { data: Vec<SearchHitView>, meta: SearchMeta }
}

impl From<SearchResults> for SearchEnvelope {
    fn from(r: SearchResults) -> Self {
        let meta = SearchMeta {
            mode: r.mode.into(),
            notice: r.degraded.map(|why| format!("keyword results only: {why}")),
            model: r.model,
            count: r.hits.len() as u32,
        };
        SearchEnvelope::new(r.hits.into_iter().map(Into::into).collect(), meta)
    }
}

/// A market near another in meaning.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct RelatedMarketView {
    /// The market.
    pub market: MarketView,
    /// Cosine similarity of the two markets' texts, -1 to 1 (higher is nearer).
    pub similarity: f32,
}

impl From<(Market, f32)> for RelatedMarketView {
    fn from((market, similarity): (Market, f32)) -> Self {
        RelatedMarketView {
            market: market.into(),
            similarity,
        }
    }
}

impl Example for RelatedMarketView {
    fn example() -> Self {
        RelatedMarketView {
            market: MarketView::example(),
            similarity: 0.62,
        }
    }
}

/// How related markets were found.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct RelatedMeta {
    /// The embedding model.
    pub model: String,
    /// Results returned.
    pub count: u32,
}

impl Example for RelatedMeta {
    fn example() -> Self {
        RelatedMeta {
            model: "minilm-l6-v2-static-v1-256".into(),
            count: 1,
        }
    }
}

envelope! {
    /// Markets related to one market, nearest first.
    RelatedEnvelope { data: Vec<RelatedMarketView>, meta: RelatedMeta }
}
