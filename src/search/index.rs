//! The in-memory [`VectorIndex`]: i8-quantized vectors searched by brute force, keeping only
//! the best `k` of one pass ([`VectorIndex::top`]).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

/// Vectors by id, each stored normalized and quantized to i8 with its own scale (a quarter of the
/// memory of f32; the cosine error stays around 1e-2 at most), in one contiguous buffer.
#[derive(Debug, Clone)]
pub struct VectorIndex {
    dimensions: usize,
    /// `dimensions` quantized components per slot, slot after slot.
    data: Vec<i8>,
    /// Per slot: the factor turning the i8 components back into the unit vector.
    scales: Vec<f32>,
    /// Per slot: the id stored there.
    ids: Vec<i64>,
    slots: HashMap<i64, usize>,
}

impl VectorIndex {
    /// An empty index of vectors with `dimensions` components.
    pub fn new(dimensions: usize) -> Self {
        Self {
            dimensions,
            data: Vec::new(),
            scales: Vec::new(),
            ids: Vec::new(),
            slots: HashMap::new(),
        }
    }

    /// Makes room for `additional` more vectors at once, so loading many does not grow the
    /// buffers by doubling (each doubling copies, and the old buffer stays in the allocator).
    pub fn reserve(&mut self, additional: usize) {
        self.data.reserve_exact(additional * self.dimensions);
        self.scales.reserve_exact(additional);
        self.ids.reserve_exact(additional);
        self.slots.reserve(additional);
    }

    /// Length of the vectors held.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Number of vectors held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no vector is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Adds or replaces the vector of `id`. The vector need not be unit length (it is normalized
    /// here); one of the wrong length or with a non-finite component is ignored and returns false.
    pub fn upsert(&mut self, id: i64, vector: &[f32]) -> bool {
        let Some((quantized, scale)) = quantize(vector, self.dimensions) else {
            return false;
        };
        match self.slots.get(&id) {
            Some(&slot) => {
                let start = slot * self.dimensions;
                self.data[start..start + self.dimensions].copy_from_slice(&quantized);
                self.scales[slot] = scale;
            }
            None => {
                self.slots.insert(id, self.ids.len());
                self.ids.push(id);
                self.scales.push(scale);
                self.data.extend_from_slice(&quantized);
            }
        }
        true
    }

    /// Removes the vector of `id`; false if there was none. The last slot moves into the hole.
    pub fn remove(&mut self, id: i64) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        let last = self.ids.len() - 1;
        if slot != last {
            let dims = self.dimensions;
            self.data
                .copy_within(last * dims..(last + 1) * dims, slot * dims);
            let moved = self.ids[last];
            self.slots.insert(moved, slot);
        }
        self.data.truncate(last * self.dimensions);
        self.ids.swap_remove(slot);
        self.scales.swap_remove(slot);
        true
    }

    /// Whether `id` has a vector.
    pub fn contains(&self, id: i64) -> bool {
        self.slots.contains_key(&id)
    }

    /// The `k` ids most similar to `query`, best first (ties by smaller id), found in one pass
    /// that keeps only the best `k` seen so far: memory is `k` entries whatever the index
    /// size. A query of the wrong length or non-finite yields nothing.
    pub fn top(&self, query: &[f32], k: usize) -> Vec<(i64, f32)> {
        let Some((query, query_scale)) = quantize(query, self.dimensions) else {
            return Vec::new();
        };
        if k == 0 || self.dimensions == 0 {
            return Vec::new();
        }
        // A min-heap on "goodness": its top is the worst of the best k kept so far.
        let mut heap: BinaryHeap<Reverse<Scored>> =
            BinaryHeap::with_capacity(k.min(self.ids.len()) + 1);
        for ((vector, scale), id) in self
            .data
            .chunks_exact(self.dimensions)
            .zip(&self.scales)
            .zip(&self.ids)
        {
            let dot: i64 = vector
                .chunks(DOT_CHUNK)
                .zip(query.chunks(DOT_CHUNK))
                .map(|(a, b)| i64::from(dot_i8(a, b)))
                .sum();
            let scored = Scored(*id, dot as f32 * scale * query_scale);
            if heap.len() < k {
                heap.push(Reverse(scored));
            } else if heap.peek().is_some_and(|worst| scored > worst.0) {
                heap.pop();
                heap.push(Reverse(scored));
            }
        }
        let mut best: Vec<(i64, f32)> = heap.into_iter().map(|r| (r.0 .0, r.0 .1)).collect();
        best.sort_unstable_by(best_first);
        best
    }

    /// Approximate heap bytes used (for logs/metrics).
    pub fn memory_bytes(&self) -> usize {
        // A hashbrown entry is the key and value plus one control byte.
        let entry = std::mem::size_of::<(i64, usize)>() + 1;
        self.data.capacity()
            + self.scales.capacity() * std::mem::size_of::<f32>()
            + self.ids.capacity() * std::mem::size_of::<i64>()
            + self.slots.capacity() * entry
    }
}

/// Components summed in i32 before widening: 1024 * 127 * 127 is far below i32::MAX, so no
/// dimension count can overflow, while each chunk still vectorizes.
const DOT_CHUNK: usize = 1024;

fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

/// The i8 form of `vector` normalized, with the scale turning it back; None if the length is not
/// `dimensions` or a component is not finite. A zero vector quantizes to zeros with scale 0.
fn quantize(vector: &[f32], dimensions: usize) -> Option<(Vec<i8>, f32)> {
    if vector.len() != dimensions || vector.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    let max = vector.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if norm == 0.0 || max == 0.0 || !norm.is_finite() {
        return Some((vec![0; dimensions], 0.0));
    }
    // Scaling the largest component to 127 uses the whole i8 range for this vector.
    let to_i8 = 127.0 / max;
    let quantized = vector
        .iter()
        .map(|x| (x * to_i8).round().clamp(-127.0, 127.0) as i8)
        .collect();
    Some((quantized, 1.0 / (to_i8 * norm)))
}

/// An id and its score, ordered by goodness: higher score, then smaller id, is greater.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored(i64, f32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        best_first(&(other.0, other.1), &(self.0, self.1))
    }
}

/// Best-first order: higher score, then smaller id.
fn best_first(a: &(i64, f32), b: &(i64, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    fn random_vectors(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| (0..dims).map(|_| rng.random_range(-1.0f32..1.0)).collect())
            .collect()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (na * nb)
    }

    #[test]
    fn upsert_replace_remove_keep_lookups_right() {
        let mut index = VectorIndex::new(3);
        assert!(index.is_empty());
        assert!(index.upsert(10, &[1.0, 0.0, 0.0]));
        assert!(index.upsert(20, &[0.0, 1.0, 0.0]));
        assert!(index.upsert(30, &[0.0, 0.0, 2.0]));
        assert!(!index.upsert(40, &[1.0, 0.0]), "wrong length");
        assert!(!index.upsert(40, &[f32::NAN, 0.0, 0.0]), "not finite");
        assert_eq!(index.len(), 3);
        assert!(index.contains(20) && !index.contains(40));

        // Replacing keeps the count and changes what the id matches.
        assert!(index.upsert(10, &[0.0, 1.0, 0.0]));
        assert_eq!(index.len(), 3);
        let top: Vec<i64> = index.top(&[0.0, 1.0, 0.0], 2).iter().map(|r| r.0).collect();
        assert_eq!(top, vec![10, 20], "equal scores: smaller id first");

        // Removing a middle slot moves the last one into it; every lookup must follow.
        assert!(index.remove(10));
        assert!(!index.remove(10));
        assert_eq!(index.len(), 2);
        assert!(!index.contains(10) && index.contains(20) && index.contains(30));
        let (id, score) = index.top(&[0.0, 0.0, 1.0], 1)[0];
        assert_eq!(id, 30);
        assert!((score - 1.0).abs() < 0.02);
        assert!(index.remove(30) && index.remove(20));
        assert!(index.is_empty());
        assert!(index.top(&[0.0, 0.0, 1.0], 5).is_empty());
        assert!(index.upsert(30, &[0.0, 0.0, 1.0]));
        assert_eq!(index.top(&[0.0, 0.0, 1.0], 1)[0].0, 30);
        assert!(index.memory_bytes() > 0);
    }

    #[test]
    fn bad_and_zero_queries() {
        let mut index = VectorIndex::new(2);
        index.upsert(2, &[1.0, 0.0]);
        index.upsert(1, &[0.0, 0.0]);
        assert!(index.top(&[1.0], 5).is_empty());
        let all = index.top(&[0.0, 0.0], 5);
        assert_eq!(all, vec![(1, 0.0), (2, 0.0)]);
    }

    #[test]
    fn top_order_matches_exact_cosine() {
        let dims = 64;
        let vectors = random_vectors(3000, dims, 7);
        let mut index = VectorIndex::new(dims);
        for (i, v) in vectors.iter().enumerate() {
            assert!(index.upsert(i as i64, v));
        }
        for query in random_vectors(5, dims, 8) {
            let mut exact: Vec<(i64, f32)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (i as i64, cosine(v, &query)))
                .collect();
            exact.sort_by(best_first);
            let approx = index.top(&query, 100);
            for (rank, (id, score)) in approx.iter().enumerate() {
                // Each returned score is close to the exact one, and each position holds a
                // vector about as good as the exact one at that position.
                let truth = cosine(&vectors[*id as usize], &query);
                assert!((score - truth).abs() < 0.02, "{score} vs {truth}");
                assert!((truth - exact[rank].1).abs() < 0.03);
            }
            let exact_top: HashSet<i64> = exact.iter().take(10).map(|e| e.0).collect();
            let found = approx[..20]
                .iter()
                .filter(|e| exact_top.contains(&e.0))
                .count();
            assert!(found >= 9, "only {found} of the exact top 10 in the top 20");
        }
    }

    fn yields_every_id_once(n: usize) {
        let dims = 256;
        // A bare xorshift: StdRng is too slow for millions of components in debug builds.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut index = VectorIndex::new(dims);
        let mut vector = vec![0.0f32; dims];
        for id in 0..n as i64 {
            for x in vector.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *x = (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            }
            assert!(index.upsert(id * 3, &vector));
        }
        let ranked = index.top(&vector, n + 10);
        assert_eq!(ranked.len(), n);
        let mut seen = HashSet::with_capacity(n);
        let mut previous = (i64::MIN, f32::INFINITY);
        for item in ranked {
            assert!(
                best_first(&previous, &item) == Ordering::Less,
                "out of order"
            );
            assert!(seen.insert(item.0));
            previous = item;
        }
        assert_eq!(seen.len(), n);
        assert_eq!(previous.0 % 3, 0);
    }

    #[test]
    fn top_of_everything_yields_all_ids_once_in_order() {
        yields_every_id_once(20_000);
    }

    #[test]
    #[ignore = "slow in debug builds; run with --ignored (or --release)"]
    fn top_of_everything_yields_all_ids_once_in_order_100k() {
        yields_every_id_once(100_000);
    }

    #[test]
    fn top_k_is_the_head_of_the_full_order() {
        let mut index = VectorIndex::new(8);
        for id in 0..500i64 {
            let v: Vec<f32> = (0..8)
                .map(|j| ((id * 31 + j * 7) % 13) as f32 - 6.0)
                .collect();
            index.upsert(id, &v);
        }
        let query = [1.0, -2.0, 0.5, 3.0, 0.0, -1.0, 2.0, 0.25];
        let all = index.top(&query, 500);
        assert_eq!(index.top(&query, 20), all[..20]);
        assert_eq!(index.top(&query, 600).len(), 500);
        assert!(index.top(&query, 0).is_empty());
        assert!(
            index.top(&query, usize::MAX).len() == 500,
            "k is not an allocation size"
        );
    }
}
