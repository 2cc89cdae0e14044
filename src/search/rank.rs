//! Rank arithmetic: reciprocal rank fusion of several result lists, and the recall@n / reciprocal
//! rank measures used to judge search quality.

use std::collections::{HashMap, HashSet};

/// The customary k.
pub const RRF_K: f64 = 60.0;

/// Reciprocal rank fusion: each input list is ids best first; an id's fused score is the sum over
/// lists of 1 / (k + rank), rank starting at 1. Returns ids with scores, best first; ties by
/// smaller id.
///
/// An id repeated within one list counts once, at its best rank, so a sloppy list cannot vote
/// twice.
pub fn reciprocal_rank_fusion(lists: &[&[i64]], k: f64) -> Vec<(i64, f64)> {
    let mut scores: HashMap<i64, f64> = HashMap::new();
    for list in lists {
        let mut seen = HashSet::with_capacity(list.len());
        for (index, id) in list.iter().enumerate() {
            if seen.insert(*id) {
                *scores.entry(*id).or_default() += 1.0 / (k + (index + 1) as f64);
            }
        }
    }
    let mut fused: Vec<(i64, f64)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

/// Fraction of the distinct `relevant` ids found among the first `n` of `ranked`; 0 when
/// `relevant` is empty (nothing to find, so nothing found: skip such queries when averaging).
pub fn recall_at(relevant: &[i64], ranked: &[i64], n: usize) -> f64 {
    let relevant: HashSet<i64> = relevant.iter().copied().collect();
    if relevant.is_empty() {
        return 0.0;
    }
    let found: HashSet<i64> = ranked
        .iter()
        .take(n)
        .filter(|id| relevant.contains(id))
        .copied()
        .collect();
    found.len() as f64 / relevant.len() as f64
}

/// 1 / rank (starting at 1) of the first relevant id in `ranked`; 0 when none is there.
pub fn reciprocal_rank(relevant: &[i64], ranked: &[i64]) -> f64 {
    ranked
        .iter()
        .position(|id| relevant.contains(id))
        .map_or(0.0, |index| 1.0 / (index + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_sums_reciprocal_ranks() {
        let a: &[i64] = &[1, 2, 3];
        let b: &[i64] = &[3, 1];
        let fused = reciprocal_rank_fusion(&[a, b], 60.0);
        let ids: Vec<i64> = fused.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        assert!((fused[0].1 - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-12);
        assert!((fused[1].1 - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
        assert!((fused[2].1 - 1.0 / 62.0).abs() < 1e-12);
    }

    #[test]
    fn rrf_ties_go_to_smaller_id_and_duplicates_count_once() {
        let a: &[i64] = &[9, 4];
        let b: &[i64] = &[4, 9];
        let fused = reciprocal_rank_fusion(&[a, b], RRF_K);
        assert_eq!(fused[0].0, 4);
        assert_eq!(fused[1].0, 9);
        assert_eq!(fused[0].1, fused[1].1);

        let dup: &[i64] = &[5, 5, 5];
        let fused = reciprocal_rank_fusion(&[dup], RRF_K);
        assert_eq!(fused, vec![(5, 1.0 / 61.0)]);
        assert!(reciprocal_rank_fusion(&[], RRF_K).is_empty());
    }

    #[test]
    fn recall() {
        assert_eq!(recall_at(&[1, 2], &[3, 1, 4, 2], 2), 0.5);
        assert_eq!(recall_at(&[1, 2], &[3, 1, 4, 2], 4), 1.0);
        assert_eq!(recall_at(&[1, 2], &[1, 1, 1], 3), 0.5);
        assert_eq!(recall_at(&[], &[1], 10), 0.0);
        assert_eq!(recall_at(&[7], &[], 10), 0.0);
    }

    #[test]
    fn reciprocal_rank_of_first_hit() {
        assert_eq!(reciprocal_rank(&[2, 4], &[1, 4, 2]), 0.5);
        assert_eq!(reciprocal_rank(&[1], &[1]), 1.0);
        assert_eq!(reciprocal_rank(&[9], &[1, 2]), 0.0);
    }
}
