//! The in-memory [`VectorIndex`]: vectors quantized to i8, partitioned into lists by their
//! nearest centroid (an inverted-file index, IVF), so that a query scores a share of them.
//!
//! Each vector is stored normalized and quantized to i8 with its own scale (a quarter of the
//! memory of f32; the cosine off by about 1e-2 at most). Up to [`EXACT_UP_TO`] vectors a query
//! scores every one. Past it the index is partitioned: about √n centroids (vectors spread over
//! the index, refined by two rounds of k-means on a sample) and each vector in the list of its
//! nearest. A query scores the centroids, then the vectors of the nearest lists, keeping the
//! best `k`, until it has scored as many accepted vectors as [`PROBE`] lists hold on average, at
//! most [`SCAN_MAX`] (and at least [`PER_RESULT`] for each of the `k`): a tenth of the index at
//! 100,000 vectors (316 lists), 1.6% at a million, so the work a query does hardly grows with the
//! index past that. Nearby vectors share lists, so the best are found with a fraction of the
//! work (recall@10 against scoring every vector: see benches/README.md). The partition is made again when the index has
//! doubled since (a new vector joins the list of its nearest centroid meanwhile); a removal
//! leaves its list at once. A filter (a tag a vector, e.g. a market's status) applies while
//! the lists are scanned, and a query keeps scanning lists until it has `k` accepted vectors,
//! so a filtered query still gets `k` when that many are accepted.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

/// Vectors by id, each normalized and quantized to i8 with its own scale, with a tag, in
/// contiguous buffers, and the lists partitioning them.
#[derive(Debug, Clone)]
pub struct VectorIndex {
    dimensions: usize,
    /// `dimensions` quantized components per slot, slot after slot.
    data: Vec<i8>,
    /// Per slot: the factor turning the i8 components back into the unit vector.
    scales: Vec<f32>,
    /// Per slot: the id stored there.
    ids: Vec<i64>,
    /// Per slot: the caller's tag (what a filter looks at).
    tags: Vec<u8>,
    /// How many vectors have each tag.
    tag_counts: [usize; 256],
    slots: HashMap<i64, usize>,
    /// The partition, once the index holds more than `exact_up_to` vectors.
    lists: Option<Lists>,
    exact_up_to: usize,
}

/// The index's partition into lists by nearest centroid.
#[derive(Debug, Clone)]
struct Lists {
    /// `dimensions` quantized components per centroid.
    centroids: Vec<i8>,
    /// Per centroid: its scale.
    scales: Vec<f32>,
    /// Per list: the slots in it.
    members: Vec<Vec<u32>>,
    /// Per slot: its list and its place in that list.
    place: Vec<(u32, u32)>,
    /// How many vectors the index held when partitioned.
    made_at: usize,
}

/// Up to this many vectors a query scores every one (exact to the quantization: 20,000 take
/// about half a millisecond); past it, the index is partitioned.
pub const EXACT_UP_TO: usize = 20_000;

/// A query scores about as many vectors as this many lists hold (of those its filter accepts),
/// and at least [`PER_RESULT`] for each result it wants.
pub const PROBE: usize = 32;

/// Vectors a query scores at least for each result it wants.
pub const PER_RESULT: usize = 10;

/// The most vectors a query scores (past [`PER_RESULT`] times `k`), however large the index: at
/// a million vectors 32 lists hold twice this, and scoring them took 2.4 ms a query (read from
/// memory, not the caches) for recall@10 1.000 against scoring all; this many, 1.4 ms and
/// 0.972 (see benches/README.md).
pub const SCAN_MAX: usize = 16_384;

impl VectorIndex {
    /// An empty index of vectors with `dimensions` components.
    pub fn new(dimensions: usize) -> Self {
        Self::partitioned_past(dimensions, EXACT_UP_TO)
    }

    /// An empty index that is partitioned once it holds more than `exact_up_to` vectors
    /// ([`EXACT_UP_TO`] for [`VectorIndex::new`]; smaller ones for tests and measurements).
    pub fn partitioned_past(dimensions: usize, exact_up_to: usize) -> Self {
        Self {
            dimensions,
            data: Vec::new(),
            scales: Vec::new(),
            ids: Vec::new(),
            tags: Vec::new(),
            tag_counts: [0; 256],
            slots: HashMap::new(),
            lists: None,
            exact_up_to: exact_up_to.max(16),
        }
    }

    /// Makes room for `additional` more vectors at once, so loading many does not grow the
    /// buffers by doubling (each doubling copies, and the old buffer stays in the allocator).
    pub fn reserve(&mut self, additional: usize) {
        self.data.reserve_exact(additional * self.dimensions);
        self.scales.reserve_exact(additional);
        self.ids.reserve_exact(additional);
        self.tags.reserve_exact(additional);
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

    /// Number of lists (0 while the index is not partitioned).
    pub fn lists(&self) -> usize {
        self.lists.as_ref().map_or(0, |l| l.members.len())
    }

    /// Adds or replaces the vector of `id`, tagged `tag`. The vector need not be unit length (it
    /// is normalized here); one of the wrong length or with a non-finite component is ignored
    /// and returns false. Partitions the index when it has grown past [`EXACT_UP_TO`] or
    /// doubled since it was partitioned (a bulk load should call [`VectorIndex::partition`]
    /// once at its end instead: see [`VectorIndex::upsert_unpartitioned`]).
    pub fn upsert(&mut self, id: i64, vector: &[f32], tag: u8) -> bool {
        if !self.upsert_unpartitioned(id, vector, tag) {
            return false;
        }
        let made_at = self
            .lists
            .as_ref()
            .map_or(self.exact_up_to / 2, |l| l.made_at);
        if self.len() > 2 * made_at {
            self.partition();
        }
        true
    }

    /// [`VectorIndex::upsert`] without partitioning again, however much the index has grown.
    pub fn upsert_unpartitioned(&mut self, id: i64, vector: &[f32], tag: u8) -> bool {
        let Some((quantized, scale)) = quantize(vector, self.dimensions) else {
            return false;
        };
        let slot = match self.slots.get(&id) {
            Some(&slot) => {
                let start = slot * self.dimensions;
                self.data[start..start + self.dimensions].copy_from_slice(&quantized);
                self.scales[slot] = scale;
                self.retag(slot, tag);
                if let Some(lists) = &mut self.lists {
                    lists.leave(slot);
                }
                slot
            }
            None => {
                let slot = self.ids.len();
                self.slots.insert(id, slot);
                self.ids.push(id);
                self.scales.push(scale);
                self.tags.push(tag);
                self.tag_counts[usize::from(tag)] += 1;
                self.data.extend_from_slice(&quantized);
                if let Some(lists) = &mut self.lists {
                    lists.place.push((0, 0));
                }
                slot
            }
        };
        if let Some(lists) = &mut self.lists {
            let list = lists.nearest(&quantized, self.dimensions);
            lists.join(slot, list);
        }
        true
    }

    /// Changes the tag of `id`'s vector; false if it has none.
    pub fn set_tag(&mut self, id: i64, tag: u8) -> bool {
        match self.slots.get(&id) {
            Some(&slot) => {
                self.retag(slot, tag);
                true
            }
            None => false,
        }
    }

    fn retag(&mut self, slot: usize, tag: u8) {
        self.tag_counts[usize::from(self.tags[slot])] -= 1;
        self.tag_counts[usize::from(tag)] += 1;
        self.tags[slot] = tag;
    }

    /// Removes the vector of `id`; false if there was none. The last slot moves into the hole.
    pub fn remove(&mut self, id: i64) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        let last = self.ids.len() - 1;
        self.tag_counts[usize::from(self.tags[slot])] -= 1;
        if let Some(lists) = &mut self.lists {
            lists.leave(slot);
            if slot != last {
                lists.rename(last, slot);
            }
            lists.place.truncate(last);
        }
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
        self.tags.swap_remove(slot);
        true
    }

    /// Whether `id` has a vector.
    pub fn contains(&self, id: i64) -> bool {
        self.slots.contains_key(&id)
    }

    /// Partitions the index (again): about √n centroids, each vector in the list of its
    /// nearest. Below the index's threshold ([`EXACT_UP_TO`]) it drops the partition instead.
    /// Uses every core; n√n dot products: on two cores 0.5 s for 100,000 vectors of 256
    /// components, 20 s for a million.
    pub fn partition(&mut self) {
        if self.len() <= self.exact_up_to {
            self.lists = None;
            return;
        }
        let dims = self.dimensions;
        let count = ((self.len() as f64).sqrt() as usize).max(16);
        // Start from vectors spread over the index, then two rounds of k-means on a sample.
        let step = self.len() / count;
        let mut centroids: Vec<i8> = (0..count)
            .flat_map(|c| self.vector(c * step).iter().copied())
            .collect();
        let mut scales: Vec<f32> = (0..count).map(|c| self.scales[c * step]).collect();
        let sample: Vec<usize> = (0..self.len())
            .step_by((self.len() / (count * 32)).max(1))
            .collect();
        for _ in 0..2 {
            let nearest = self.nearest_of(&sample, &centroids, &scales);
            let mut sums = vec![0f32; count * dims];
            let mut sizes = vec![0usize; count];
            for (&slot, &c) in sample.iter().zip(&nearest) {
                let scale = self.scales[slot];
                let sum = &mut sums[c as usize * dims..(c as usize + 1) * dims];
                for (s, x) in sum.iter_mut().zip(self.vector(slot)) {
                    *s += f32::from(*x) * scale;
                }
                sizes[c as usize] += 1;
            }
            for c in (0..count).filter(|&c| sizes[c] > 0) {
                if let Some((q, scale)) = quantize(&sums[c * dims..(c + 1) * dims], dims) {
                    centroids[c * dims..(c + 1) * dims].copy_from_slice(&q);
                    scales[c] = scale;
                }
            }
        }
        let all: Vec<usize> = (0..self.len()).collect();
        let nearest = self.nearest_of(&all, &centroids, &scales);
        // Store the vectors list by list: a query then reads each list's vectors from one run
        // of memory, not from all over the index (measured at 100,000 seeded markets: 0.81 ms
        // a query before, 0.23 ms after).
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by_key(|&slot| nearest[slot]);
        self.permute(&order);
        let nearest: Vec<u32> = order.iter().map(|&slot| nearest[slot]).collect();
        let mut lists = Lists {
            centroids,
            scales,
            members: vec![Vec::new(); count],
            place: vec![(0, 0); self.len()],
            made_at: self.len(),
        };
        for (slot, list) in nearest.into_iter().enumerate() {
            lists.join(slot, list as usize);
        }
        self.lists = Some(lists);
    }

    /// Moves the vector in slot `order[i]` to slot `i`, for every `i` (`order` is a
    /// permutation of the slots), in place: cycle by cycle, one vector held aside, so that
    /// partitioning never holds the index twice (freed, a second copy stays in the allocator).
    fn permute(&mut self, order: &[usize]) {
        let dims = self.dimensions;
        let mut done = vec![false; order.len()];
        let mut held = vec![0i8; dims];
        for start in 0..order.len() {
            if done[start] || order[start] == start {
                continue;
            }
            held.copy_from_slice(self.vector(start));
            let (scale, id, tag) = (self.scales[start], self.ids[start], self.tags[start]);
            let mut to = start;
            loop {
                done[to] = true;
                let from = order[to];
                if from == start {
                    self.data[to * dims..(to + 1) * dims].copy_from_slice(&held);
                    (self.scales[to], self.ids[to], self.tags[to]) = (scale, id, tag);
                    break;
                }
                self.data
                    .copy_within(from * dims..(from + 1) * dims, to * dims);
                self.scales[to] = self.scales[from];
                self.ids[to] = self.ids[from];
                self.tags[to] = self.tags[from];
                to = from;
            }
        }
        for (slot, id) in self.ids.iter().enumerate() {
            self.slots.insert(*id, slot);
        }
    }

    /// For each of `slots`, the index of its nearest centroid (on every core).
    fn nearest_of(&self, slots: &[usize], centroids: &[i8], scales: &[f32]) -> Vec<u32> {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let chunk = slots.len().div_ceil(threads).max(1);
        let dims = self.dimensions;
        std::thread::scope(|scope| {
            let parts: Vec<_> = slots
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|&slot| nearest(self.vector(slot), centroids, scales, dims) as u32)
                            .collect::<Vec<u32>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| part.join().unwrap_or_default())
                .collect()
        })
    }

    fn vector(&self, slot: usize) -> &[i8] {
        &self.data[slot * self.dimensions..(slot + 1) * self.dimensions]
    }

    /// The `k` ids most similar to `query` among those whose tag `accept`s, best first (ties by
    /// smaller id), with their cosine similarity. Exact to the quantization up to
    /// [`EXACT_UP_TO`] vectors; past it, the best of the lists nearest the query (as many
    /// accepted vectors as [`PROBE`] lists hold, at least [`PER_RESULT`] times `k`). Memory is `k` entries
    /// and a score a list, whatever the index size. A query of the wrong length or non-finite
    /// yields nothing.
    pub fn top(&self, query: &[f32], k: usize, accept: impl Fn(u8) -> bool) -> Vec<(i64, f32)> {
        self.top_probing(query, k, PROBE, accept)
    }

    /// [`VectorIndex::top`] scoring as many accepted vectors as `probe` lists hold (instead of
    /// [`PROBE`]): fewer for a query that is itself an indexed vector (a market's, for its
    /// related markets), whose nearest lists hold its neighbours.
    pub fn top_probing(
        &self,
        query: &[f32],
        k: usize,
        probe: usize,
        accept: impl Fn(u8) -> bool,
    ) -> Vec<(i64, f32)> {
        let Some((query, query_scale)) = quantize(query, self.dimensions) else {
            return Vec::new();
        };
        if k == 0 || self.dimensions == 0 {
            return Vec::new();
        }
        let Some(lists) = &self.lists else {
            let all = (0..self.len()).filter(|&slot| accept(self.tags[slot]));
            return self.rescore(&query, query_scale, all, k);
        };
        let dims = self.dimensions;
        let mut order: Vec<(usize, f32)> = (0..lists.members.len())
            .map(|c| {
                let centroid = &lists.centroids[c * dims..(c + 1) * dims];
                (c, dot_i8(centroid, &query) as f32 * lists.scales[c])
            })
            .collect();
        order.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let acceptable: usize = (0..=u8::MAX)
            .filter(|&tag| accept(tag))
            .map(|tag| self.tag_counts[usize::from(tag)])
            .sum();
        let budget = (acceptable * probe.max(1) / lists.members.len())
            .min(SCAN_MAX)
            .max(k.saturating_mul(PER_RESULT));
        let mut accepted = 0;
        let mut best = Best::new(k);
        for &(c, _) in &order {
            if accepted >= budget {
                break;
            }
            for &slot in &lists.members[c] {
                let slot = slot as usize;
                if accept(self.tags[slot]) {
                    accepted += 1;
                    best.offer(self.score(slot, &query, query_scale));
                }
            }
        }
        best.into_sorted()
    }

    /// The `k` ids most similar to `query` among those whose tag `accept`s, found by scoring
    /// every such vector (exact to the quantization; what [`VectorIndex::top`] is measured
    /// against).
    pub fn top_exact(
        &self,
        query: &[f32],
        k: usize,
        accept: impl Fn(u8) -> bool,
    ) -> Vec<(i64, f32)> {
        match quantize(query, self.dimensions) {
            Some((query, scale)) if k > 0 && self.dimensions > 0 => {
                let all = (0..self.len()).filter(|&slot| accept(self.tags[slot]));
                self.rescore(&query, scale, all, k)
            }
            _ => Vec::new(),
        }
    }

    /// The best `k` of `slots` by their i8 vectors, best first.
    fn rescore(
        &self,
        query: &[i8],
        query_scale: f32,
        slots: impl Iterator<Item = usize>,
        k: usize,
    ) -> Vec<(i64, f32)> {
        let mut best = Best::new(k);
        for slot in slots {
            best.offer(self.score(slot, query, query_scale));
        }
        best.into_sorted()
    }

    /// The id in `slot` and its vector's cosine similarity to `query`.
    fn score(&self, slot: usize, query: &[i8], query_scale: f32) -> Scored {
        let dot = dot_i8(self.vector(slot), query);
        Scored(self.ids[slot], dot as f32 * self.scales[slot] * query_scale)
    }

    /// Approximate heap bytes used (for logs/metrics).
    pub fn memory_bytes(&self) -> usize {
        // A hashbrown entry is the key and value plus one control byte.
        let entry = std::mem::size_of::<(i64, usize)>() + 1;
        let lists = self.lists.as_ref().map_or(0, |l| {
            l.centroids.capacity()
                + l.scales.capacity() * 4
                + l.members
                    .iter()
                    .map(|m| m.capacity() * 4 + 24)
                    .sum::<usize>()
                + l.place.capacity() * 8
        });
        self.data.capacity()
            + self.scales.capacity() * std::mem::size_of::<f32>()
            + self.ids.capacity() * std::mem::size_of::<i64>()
            + self.tags.capacity()
            + self.slots.capacity() * entry
            + lists
    }
}

impl Lists {
    /// The list whose centroid is nearest `vector`.
    fn nearest(&self, vector: &[i8], dims: usize) -> usize {
        nearest(vector, &self.centroids, &self.scales, dims)
    }

    fn join(&mut self, slot: usize, list: usize) {
        self.place[slot] = (list as u32, self.members[list].len() as u32);
        self.members[list].push(slot as u32);
    }

    /// Takes `slot` out of its list (the list's last member takes its place there).
    fn leave(&mut self, slot: usize) {
        let (list, at) = self.place[slot];
        let members = &mut self.members[list as usize];
        members.swap_remove(at as usize);
        if let Some(&moved) = members.get(at as usize) {
            self.place[moved as usize].1 = at;
        }
    }

    /// Slot `from` is now slot `to` (the index moved it into a hole).
    fn rename(&mut self, from: usize, to: usize) {
        let (list, at) = self.place[from];
        self.members[list as usize][at as usize] = to as u32;
        self.place[to] = (list, at);
    }
}

/// The index of the centroid nearest `vector` (largest dot product, scaled).
fn nearest(vector: &[i8], centroids: &[i8], scales: &[f32], dims: usize) -> usize {
    centroids
        .chunks_exact(dims)
        .zip(scales)
        .map(|(c, scale)| dot_i8(c, vector) as f32 * scale)
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        .map_or(0, |(c, _)| c)
}

/// The dot product of two i8 vectors. Each product fits an i16 (127 * 127); 32 of them are
/// summed in 32 i32 lanes, a shape the compiler turns into SIMD (3x the plain zip-map-sum).
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut lanes = [0i32; 32];
    let (a32, b32) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: i32 = a32
        .remainder()
        .iter()
        .zip(b32.remainder())
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    for (x, y) in a32.zip(b32) {
        for i in 0..32 {
            lanes[i] += i32::from(i16::from(x[i]) * i16::from(y[i]));
        }
    }
    lanes.iter().sum::<i32>() + tail
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

/// The best `k` scores offered so far: a min-heap on goodness, whose top is the worst kept.
struct Best {
    k: usize,
    heap: BinaryHeap<Reverse<Scored>>,
}

impl Best {
    fn new(k: usize) -> Self {
        Best {
            k,
            heap: BinaryHeap::with_capacity(k.min(1024) + 1),
        }
    }

    fn offer(&mut self, scored: Scored) {
        if self.heap.len() < self.k {
            self.heap.push(Reverse(scored));
        } else if self.heap.peek().is_some_and(|worst| scored > worst.0) {
            self.heap.pop();
            self.heap.push(Reverse(scored));
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<(i64, f32)> {
        let mut best: Vec<(i64, f32)> = self.heap.into_iter().map(|r| (r.0 .0, r.0 .1)).collect();
        best.sort_unstable_by(best_first);
        best
    }
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
        assert!(index.upsert(10, &[1.0, 0.0, 0.0], 0));
        assert!(index.upsert(20, &[0.0, 1.0, 0.0], 0));
        assert!(index.upsert(30, &[0.0, 0.0, 2.0], 0));
        assert!(!index.upsert(40, &[1.0, 0.0], 0), "wrong length");
        assert!(!index.upsert(40, &[f32::NAN, 0.0, 0.0], 0), "not finite");
        assert_eq!(index.len(), 3);
        assert!(index.contains(20) && !index.contains(40));

        // Replacing keeps the count and changes what the id matches.
        assert!(index.upsert(10, &[0.0, 1.0, 0.0], 0));
        assert_eq!(index.len(), 3);
        let top: Vec<i64> = index
            .top(&[0.0, 1.0, 0.0], 2, |_| true)
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(top, vec![10, 20], "equal scores: smaller id first");

        // Removing a middle slot moves the last one into it; every lookup must follow.
        assert!(index.remove(10));
        assert!(!index.remove(10));
        assert_eq!(index.len(), 2);
        assert!(!index.contains(10) && index.contains(20) && index.contains(30));
        let (id, score) = index.top(&[0.0, 0.0, 1.0], 1, |_| true)[0];
        assert_eq!(id, 30);
        assert!((score - 1.0).abs() < 0.02);
        assert!(index.remove(30) && index.remove(20));
        assert!(index.is_empty());
        assert!(index.top(&[0.0, 0.0, 1.0], 5, |_| true).is_empty());
        assert!(index.upsert(30, &[0.0, 0.0, 1.0], 0));
        assert_eq!(index.top(&[0.0, 0.0, 1.0], 1, |_| true)[0].0, 30);
        assert!(index.memory_bytes() > 0);
    }

    #[test]
    fn bad_and_zero_queries() {
        let mut index = VectorIndex::new(2);
        index.upsert(2, &[1.0, 0.0], 0);
        index.upsert(1, &[0.0, 0.0], 0);
        assert!(index.top(&[1.0], 5, |_| true).is_empty());
        let all = index.top(&[0.0, 0.0], 5, |_| true);
        assert_eq!(all, vec![(1, 0.0), (2, 0.0)]);
    }

    #[test]
    fn top_order_matches_exact_cosine() {
        let dims = 64;
        let vectors = random_vectors(3000, dims, 7);
        let mut index = VectorIndex::new(dims);
        for (i, v) in vectors.iter().enumerate() {
            assert!(index.upsert(i as i64, v, 0));
        }
        for query in random_vectors(5, dims, 8) {
            let mut exact: Vec<(i64, f32)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (i as i64, cosine(v, &query)))
                .collect();
            exact.sort_by(best_first);
            let approx = index.top(&query, 100, |_| true);
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

    /// Texts like markets' (a topic's words, a few others), embedded by the built-in embedder:
    /// clustered, as real vectors are, unlike uniform noise.
    fn market_like(n: usize, seed: u64) -> Vec<Vec<f32>> {
        let embedder = crate::search::embedder::HashEmbedder::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let word = |i: usize| format!("w{}x{}", i * 7919 % 1000, i);
        (0..n)
            .map(|_| {
                let topic = rng.random_range(0..60) * 8;
                let mut text: Vec<String> = (0..rng.random_range(3..6))
                    .map(|_| word(topic + rng.random_range(0..8)))
                    .collect();
                text.extend((0..rng.random_range(0..4)).map(|_| word(rng.random_range(0..2000))));
                embedder.embed_text(&text.join(" "))
            })
            .collect()
    }

    /// What the lists find, against scoring every vector (ties at the cut count as found:
    /// which of equals comes first is not recall).
    fn recall_against_every_vector(index: &VectorIndex, queries: &[Vec<f32>], k: usize) -> f64 {
        let mut found = 0;
        for query in queries {
            let every = index.top_exact(query, k, |_| true);
            let fast = index.top(query, k, |_| true);
            assert_eq!(fast.len(), k);
            let kth = every[k - 1].1;
            found += fast.iter().filter(|(_, s)| *s >= kth - 1e-6).count();
        }
        found as f64 / (queries.len() * k) as f64
    }

    /// An index of `vectors` (ids their positions), partitioned past 1,000 vectors.
    fn partitioned(vectors: &[Vec<f32>], tag: impl Fn(usize) -> u8) -> VectorIndex {
        let mut index = VectorIndex::partitioned_past(vectors[0].len(), 1_000);
        for (i, v) in vectors.iter().enumerate() {
            assert!(index.upsert(i as i64, v, tag(i)));
        }
        index
    }

    #[test]
    fn the_lists_find_what_scoring_every_vector_finds() {
        let vectors = market_like(12_000, 11);
        // Partitioned at 1,000, 2,000, 4,000 and 8,000 vectors; the last 4,000 joined lists.
        let index = partitioned(&vectors, |_| 0);
        assert_eq!(index.lists(), 89, "√8000");
        // Queries: short texts and whole markets (as `related` asks).
        let mut queries = market_like(20, 12);
        queries.extend(vectors.iter().step_by(997).cloned());
        let recall = recall_against_every_vector(&index, &queries, 10);
        assert!(recall >= 0.95, "recall@10 {recall}");
    }

    #[test]
    fn a_filter_applies_inside_the_search() {
        let vectors = market_like(8_000, 21);
        // One vector in a hundred is tagged 1: few, and mostly far from any query.
        let mut index = partitioned(&vectors, |i| u8::from(i % 100 == 0));
        let query = &vectors[1];
        let tagged = index.top(query, 20, |tag| tag == 1);
        assert_eq!(tagged.len(), 20, "a filtered query still gets k results");
        assert!(tagged.iter().all(|(id, _)| id % 100 == 0));
        let every = index.top_exact(query, 20, |tag| tag == 1);
        let kth = every[19].1;
        let found = tagged.iter().filter(|(_, s)| *s >= kth - 1e-6).count();
        assert!(found >= 18, "{found} of the best 20 tagged 1");
        // Retagging moves a vector in or out of the filter.
        assert!(index.set_tag(1, 1) && !index.set_tag(-5, 1));
        assert_eq!(index.top(query, 1, |tag| tag == 1)[0].0, 1);
        assert!(index.top(query, 5, |tag| tag == 7).is_empty());
        assert!(index.set_tag(1, 0));
        assert!(index.top(query, 80, |tag| tag == 1).len() == 80);
        assert!(
            index.top(query, 81, |tag| tag == 1).len() == 80,
            "all 80 tagged 1"
        );
    }

    #[test]
    fn removals_and_replacements_keep_the_lists_in_step() {
        let vectors = market_like(9_000, 31);
        let mut index = partitioned(&vectors, |_| 0);
        // Remove every third vector (each removal moves the last slot into the hole, in its
        // list too), then replace some of the rest (they move to another list).
        for id in (0..9_000).step_by(3) {
            assert!(index.remove(id));
        }
        for id in (1..9_000).step_by(30) {
            index.upsert(id, &vectors[(id as usize + 1) % 9_000], 0);
        }
        assert_eq!(index.len(), 6_000);
        let queries: Vec<Vec<f32>> = vectors.iter().step_by(1_500).cloned().collect();
        for query in &queries {
            let top = index.top(query, 6_000, |_| true);
            assert_eq!(top.len(), 6_000, "every vector is in exactly one list");
            assert!(top.iter().all(|(id, _)| id % 3 != 0));
        }
        let recall = recall_against_every_vector(&index, &queries, 10);
        assert!(recall >= 0.95, "recall@10 {recall}");
        // Partitioning again, and dropping the partition below the threshold, keep every id.
        index.partition();
        for id in (1..9_000).filter(|id| id % 3 != 0).take(5_500) {
            assert!(index.remove(id));
        }
        index.partition();
        assert_eq!(index.lists(), 0);
        assert_eq!(index.top(&queries[0], 600, |_| true).len(), 500);
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
            assert!(index.upsert(id * 3, &vector, 0));
        }
        let ranked = index.top(&vector, n + 10, |_| true);
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
            index.upsert(id, &v, 0);
        }
        let query = [1.0, -2.0, 0.5, 3.0, 0.0, -1.0, 2.0, 0.25];
        let all = index.top(&query, 500, |_| true);
        assert_eq!(index.top(&query, 20, |_| true), all[..20]);
        assert_eq!(index.top(&query, 600, |_| true).len(), 500);
        assert!(index.top(&query, 0, |_| true).is_empty());
        assert!(
            index.top(&query, usize::MAX, |_| true).len() == 500,
            "k is not an allocation size"
        );
    }
}
