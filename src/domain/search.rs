//! Search requests: the validated query, its ranking mode, and the keywords taken from the
//! user's words (each engine turns them into its own full-text query).

use super::{market::MarketStatus, FieldError, Problems};

/// Longest query, in characters.
pub const QUERY_MAX: usize = 200;
/// Most results per search.
pub const RESULTS_MAX: u32 = 50;
/// Results when the request does not say.
pub const RESULTS_DEFAULT: u32 = 10;

/// How results are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchMode {
    /// Keyword (bm25; markets with at least half the query's words) and vector similarity
    /// fused by reciprocal rank.
    Hybrid,
    /// Keyword matches only.
    Keyword,
    /// Vector similarity only.
    Vector,
}

impl SearchMode {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Keyword => "keyword",
            SearchMode::Vector => "vector",
        }
    }
}

/// A validated search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// What the user typed, trimmed.
    pub text: String,
    /// Only markets in this status.
    pub status: Option<MarketStatus>,
    /// Most results.
    pub limit: u32,
    /// Requested ranking.
    pub mode: SearchMode,
}

impl SearchQuery {
    /// Validates `q` (1..=200 characters) and `limit` (1..=50, default 10).
    pub fn parse(
        q: &str,
        status: Option<MarketStatus>,
        limit: Option<u32>,
        mode: Option<SearchMode>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::default();
        let text = p.text("q", q, 1, QUERY_MAX);
        let limit = limit.unwrap_or(RESULTS_DEFAULT);
        if !(1..=RESULTS_MAX).contains(&limit) {
            p.add("limit", format!("must be between 1 and {RESULTS_MAX}"));
        }
        p.finish(SearchQuery {
            text,
            status,
            limit,
            mode: mode.unwrap_or(SearchMode::Hybrid),
        })
    }
}

/// Words that say nothing about a market ("Will ... by ... ?").
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "any", "are", "as", "at", "be", "before", "by", "do", "does", "for", "from",
    "has", "have", "in", "is", "it", "its", "of", "on", "or", "than", "that", "the", "this", "to",
    "was", "what", "when", "which", "who", "will", "with",
];

/// The keywords of what a user typed: each distinct meaningful word (letters and digits only,
/// lowercased, stop words dropped), in order. A market matches when it has any of them; empty
/// when no word is left.
pub fn keywords(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
    {
        if !STOP_WORDS.contains(&word.as_str()) && !words.contains(&word) {
            words.push(word);
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_distinct_words_without_stop_words_or_syntax() {
        assert_eq!(keywords("Will the Fed cut rates?"), ["fed", "cut", "rates"]);
        assert_eq!(
            keywords("NEAR(\"x\" y) OR z* -- ^a"),
            ["near", "x", "y", "z"]
        );
        assert!(keywords("the of and ?!").is_empty());
        assert_eq!(keywords("élection élection"), ["élection"]);
    }

    #[test]
    fn search_queries_are_validated() {
        let q = SearchQuery::parse("  bitcoin  ", None, None, None).unwrap();
        assert_eq!(
            (q.text.as_str(), q.limit, q.mode),
            ("bitcoin", 10, SearchMode::Hybrid)
        );
        let errs = SearchQuery::parse(" ", None, Some(51), None).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["q", "limit"]);
        assert!(SearchQuery::parse(&"x".repeat(201), None, Some(0), None).is_err());
    }
}
