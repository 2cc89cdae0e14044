//! Keyword ranking with bounded work: each query word's best matches are fetched (or taken from
//! a cache) on their own and summed, instead of one query that ranks every market having any
//! of the words.
//!
//! bm25 is a sum over the query's words of each word's score in a market, so a market's rank
//! for "central bank" is its score for "central" plus its score for "bank". The engine ranks
//! the markets having one word (a work proportional to how many have it) and returns the best
//! [`TERM_LIST`]; [`merge`] adds the lists up. A word in fewer than [`TERM_LIST`] markets is
//! ranked whole, so queries of such words rank exactly as one query over all would. A common
//! word (one that matched, in the seeded 100,000 markets, up to all of them and cost 50 ms to
//! rank) is ranked once and its list kept ([`TermLists`]): a query then costs a few thousand
//! additions whatever the words. A market missing from a common word's list counts 0 for that
//! word (its score there is at most the list's last), which is where the ranking is approximate.
//!
//! A kept list is used until the markets have changed (a market's text, status or vector,
//! whichever process changed it: the search service counts [`TermLists::changed`]) and then
//! for at most [`STALE_FOR`] more, so a common word is ranked again at most once in that time
//! however often markets change, and a new market is found by its words within it.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use moka::future::Cache;

use crate::domain::market::MarketStatus;

/// The most matches of one word fetched; a word with this many is "common" and its list kept.
pub const TERM_LIST: u32 = 1000;

/// The most words of one query that are ranked (the rest are ignored).
pub const TERMS_MAX: usize = 16;

/// How long a kept list is used after the markets changed.
pub const STALE_FOR: Duration = Duration::from_secs(1);

/// Lists kept at most (each up to [`TERM_LIST`] entries of 16 bytes: 4 MiB in all).
const KEPT: u64 = 256;

/// One word's best matches, best first, as fetched at a moment.
#[derive(Debug)]
struct TermList {
    matches: Vec<(i64, f64)>,
    generation: u64,
    fetched: Instant,
}

/// The lists of common words, kept.
pub struct TermLists {
    kept: Cache<(String, Option<MarketStatus>), Arc<TermList>>,
    generation: AtomicU64,
}

impl Default for TermLists {
    fn default() -> Self {
        Self {
            kept: Cache::builder().max_capacity(KEPT).build(),
            generation: AtomicU64::new(0),
        }
    }
}

impl TermLists {
    /// Markets changed: a kept list may miss some, and is fetched again once it is
    /// [`STALE_FOR`] old.
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The best `n` markets having at least `min_words` of `terms`, by their summed scores
    /// (ties by smaller id), each word's list from `fetch(term, status, limit)` (the engine's
    /// ranking of the markets that have it) or kept.
    pub async fn rank<F, Fut, E>(
        &self,
        terms: &[String],
        min_words: usize,
        status: Option<MarketStatus>,
        n: usize,
        fetch: F,
    ) -> Result<Vec<i64>, Arc<E>>
    where
        F: Fn(String, Option<MarketStatus>, u32) -> Fut,
        Fut: Future<Output = Result<Vec<(i64, f64)>, E>>,
        E: Send + Sync + 'static,
    {
        let mut lists = Vec::new();
        for term in terms.iter().take(TERMS_MAX) {
            lists.push(self.list(term, status, &fetch).await?);
        }
        // Words past TERMS_MAX are not ranked, so they cannot be required either.
        let min_words = min_words.min(lists.len());
        Ok(merge(
            lists.iter().map(|l| l.matches.as_slice()),
            min_words,
            n,
        ))
    }

    async fn list<F, Fut, E>(
        &self,
        term: &str,
        status: Option<MarketStatus>,
        fetch: &F,
    ) -> Result<Arc<TermList>, Arc<E>>
    where
        F: Fn(String, Option<MarketStatus>, u32) -> Fut,
        Fut: Future<Output = Result<Vec<(i64, f64)>, E>>,
        E: Send + Sync + 'static,
    {
        let key = (term.to_owned(), status);
        let now = self.generation.load(Ordering::Acquire);
        if let Some(kept) = self.kept.get(&key).await {
            if kept.generation == now || kept.fetched.elapsed() < STALE_FOR {
                return Ok(kept);
            }
            self.kept.invalidate(&key).await;
        }
        // Concurrent queries of a word wait for one fetch of it (after markets change, 64 of
        // them would otherwise rank a common word 64 times at once).
        let list = self
            .kept
            .try_get_with(key.clone(), async {
                let matches = fetch(key.0.clone(), status, TERM_LIST).await?;
                Ok::<_, E>(Arc::new(TermList {
                    matches,
                    generation: now,
                    fetched: Instant::now(),
                }))
            })
            .await?;
        // Only common words are kept: a rare one costs little to fetch again.
        if list.matches.len() < TERM_LIST as usize {
            self.kept.invalidate(&key).await;
        }
        Ok(list)
    }
}

/// The best `n` ids found in at least `min_words` of `lists`, by the sum of their scores over
/// them (each best first; an id missing from a list scores 0 there), best first, ties by
/// smaller id.
pub fn merge<'a>(
    lists: impl Iterator<Item = &'a [(i64, f64)]>,
    min_words: usize,
    n: usize,
) -> Vec<i64> {
    let mut sums: HashMap<i64, (f64, usize)> = HashMap::new();
    for list in lists {
        for &(id, score) in list {
            let sum = sums.entry(id).or_default();
            sum.0 += score;
            sum.1 += 1;
        }
    }
    let mut ranked: Vec<(i64, f64)> = sums
        .into_iter()
        .filter(|(_, (_, words))| *words >= min_words)
        .map(|(id, (score, _))| (id, score))
        .collect();
    let by_rank = |a: &(i64, f64), b: &(i64, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if ranked.len() > n && n > 0 {
        ranked.select_nth_unstable_by(n - 1, by_rank);
    }
    ranked.truncate(n);
    ranked.sort_unstable_by(by_rank);
    ranked.into_iter().map(|(id, _)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn scores_add_up_over_words_and_ties_go_to_the_smaller_id() {
        let a: &[(i64, f64)] = &[(1, 3.0), (2, 2.0), (3, 1.0)];
        let b: &[(i64, f64)] = &[(3, 2.5), (4, 2.0)];
        assert_eq!(merge([a, b].into_iter(), 1, 10), vec![3, 1, 2, 4]);
        assert_eq!(merge([a, b].into_iter(), 1, 2), vec![3, 1]);
        assert_eq!(merge([a].into_iter(), 1, 0), Vec::<i64>::new());
        assert_eq!(
            merge([a, b].into_iter(), 2, 10),
            vec![3],
            "only 3 has both words"
        );
        let tie: &[(i64, f64)] = &[(9, 1.0), (5, 1.0)];
        assert_eq!(merge([tie].into_iter(), 1, 1), vec![5]);
    }

    #[tokio::test]
    async fn a_common_words_list_is_kept_until_markets_change_and_then_for_a_moment() {
        let lists = TermLists::default();
        let fetches = AtomicUsize::new(0);
        let fetch = |term: String, _status, limit: u32| {
            fetches.fetch_add(1, Ordering::SeqCst);
            async move {
                // "common" has as many matches as may be fetched; "rare" has one.
                let n = if term == "common" { limit as i64 } else { 1 };
                Ok::<_, ()>((0..n).map(|id| (id, 1.0 / (id + 1) as f64)).collect())
            }
        };
        let terms = ["common".to_owned(), "rare".to_owned()];
        let ranked = lists.rank(&terms, 1, None, 3, &fetch).await.unwrap();
        assert_eq!(ranked, vec![0, 1, 2]);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // The common word's list is kept, the rare word's fetched each time.
        lists.rank(&terms, 1, None, 3, &fetch).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        // A filter is a list of its own.
        lists
            .rank(&terms[..1], 1, Some(MarketStatus::Active), 3, &fetch)
            .await
            .unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 4);
        // Markets changed: the kept list is still used for a moment, then fetched again.
        lists.changed();
        lists.rank(&terms[..1], 1, None, 3, &fetch).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 4);
        tokio::time::sleep(STALE_FOR).await;
        lists.rank(&terms[..1], 1, None, 3, &fetch).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 5);
        lists.rank(&terms[..1], 1, None, 3, &fetch).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn at_most_the_ranked_words_are_required() {
        let lists = TermLists::default();
        let fetch = |_term: String, _status, _limit: u32| async { Ok::<_, ()>(vec![(7, 1.0)]) };
        let terms: Vec<String> = (0..TERMS_MAX + 4).map(|i| format!("w{i}")).collect();
        let all = terms.len();
        assert_eq!(lists.rank(&terms, all, None, 3, &fetch).await.unwrap(), [7]);
    }
}
