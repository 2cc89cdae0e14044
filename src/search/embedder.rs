//! The [`Embedder`] trait that turns texts into unit vectors, its error type, and the built-in
//! [`HashEmbedder`] (feature hashing of words, stems and character n-grams; no network, no files).

/// Why embedding failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The provider could not be reached or answered 5xx/429/timeout: worth retrying later.
    #[error("embedding provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request or answered something unusable (4xx, bad JSON, wrong count/dimension).
    #[error("embedding provider error: {0}")]
    Invalid(String),
}

/// Turns texts into unit-length vectors.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// Identifies the model and its settings; stored with each vector so vectors of another model
    /// are never mixed in (e.g. "builtin-hash-v1-256").
    fn model(&self) -> &str;
    /// Vector length; 0 while unknown (an HTTP embedder learns it from its first answer).
    fn dimensions(&self) -> usize;
    /// One L2-normalized vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Dimensions of [`HashEmbedder::default`].
pub const DEFAULT_DIMENSIONS: usize = 256;

/// Bumped whenever features, weights or hashing change, so stored vectors of the old scheme are
/// recognised as another model and re-embedded.
const FEATURE_VERSION: u32 = 1;

/// Weight of a whole word. The three weights below were tuned on `data/search/corpus.json`.
const WORD_WEIGHT: f32 = 1.0;
/// Weight of a word's light stem: lets "launches" meet "launch" even where n-grams differ.
const STEM_WEIGHT: f32 = 0.5;
/// Weight of each 3- and 4-gram of "#word#": n-grams carry typos ("etherium") and compounds
/// ("superbowl"), and a long word having more of them acts as a crude IDF.
const NGRAM_WEIGHT: f32 = 2.0;

/// Words that say nothing about a market's subject. Every market reads "Will ... by ...?" and
/// "Resolves Yes if ... Otherwise No", so those words are skipped entirely.
const STOP_WORDS: &[&str] = &[
    "a",
    "after",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "before",
    "by",
    "end",
    "for",
    "from",
    "had",
    "has",
    "have",
    "her",
    "his",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "more",
    "no",
    "not",
    "of",
    "on",
    "or",
    "otherwise",
    "over",
    "resolves",
    "than",
    "that",
    "the",
    "their",
    "this",
    "to",
    "under",
    "was",
    "what",
    "when",
    "which",
    "who",
    "will",
    "with",
    "yes",
];

/// Suffixes stripped by [`stem`], longest first, with their replacement.
const SUFFIXES: &[(&str, &str)] = &[
    ("ations", ""),
    ("ation", ""),
    ("ings", ""),
    ("ing", ""),
    ("ies", "y"),
    ("ied", "y"),
    ("ions", ""),
    ("ion", ""),
    ("ers", ""),
    ("er", ""),
    ("ed", ""),
    ("es", ""),
    ("s", ""),
];

/// The built-in embedder: signed feature hashing of words, stems and character n-grams.
///
/// Deterministic and stable across processes, platforms and Rust versions (hand-written FNV-1a),
/// so its vectors can be stored. A text without any content word (empty, or only stop words)
/// embeds to the all-zero vector, which scores 0 against everything.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dimensions: usize,
    model: String,
}

impl HashEmbedder {
    /// An embedder producing vectors of `dimensions` (at least 1) components.
    pub fn new(dimensions: usize) -> Self {
        let dimensions = dimensions.max(1);
        Self {
            dimensions,
            model: format!("builtin-hash-v{FEATURE_VERSION}-{dimensions}"),
        }
    }

    /// The L2-normalized vector of one text (all zeros if it has no content word).
    pub fn embed_text(&self, text: &str) -> Vec<f32> {
        // Accumulate per feature first so term frequency can be damped (sqrt) before hashing.
        let mut features: std::collections::HashMap<u64, f32> = std::collections::HashMap::new();
        let lower = text.to_lowercase();
        for word in lower.split(|c: char| !c.is_alphanumeric()) {
            if word.is_empty() || STOP_WORDS.contains(&word) {
                continue;
            }
            *features
                .entry(fnv1a(&[b"w:", word.as_bytes()]))
                .or_default() += WORD_WEIGHT;
            let stemmed = stem(word);
            *features
                .entry(fnv1a(&[b"s:", stemmed.as_bytes()]))
                .or_default() += STEM_WEIGHT;
            let marked: Vec<char> = std::iter::once('#')
                .chain(word.chars())
                .chain(std::iter::once('#'))
                .collect();
            for n in [3, 4] {
                for gram in marked.windows(n) {
                    let gram: String = gram.iter().collect();
                    *features
                        .entry(fnv1a(&[b"c:", gram.as_bytes()]))
                        .or_default() += NGRAM_WEIGHT;
                }
            }
        }
        let mut vector = vec![0.0f32; self.dimensions];
        for (hash, weight) in features {
            // usize is at least 32 bits and dimensions fits in it, so the remainder fits too.
            let bucket = (hash % self.dimensions as u64) as usize;
            // The top bit picks the sign so collisions cancel out on average instead of piling up.
            let sign = if hash >> 63 == 1 { -1.0 } else { 1.0 };
            vector[bucket] += sign * weight.sqrt();
        }
        normalize(&mut vector);
        vector
    }
}

impl Default for HashEmbedder {
    fn default() -> Self {
        Self::new(DEFAULT_DIMENSIONS)
    }
}

#[async_trait::async_trait]
impl Embedder for HashEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Microseconds per text: not worth a blocking-pool hop.
        Ok(texts.iter().map(|t| self.embed_text(t)).collect())
    }
}

/// Scales `vector` to unit length in place; a zero (or non-finite) vector becomes all zeros.
pub(crate) fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        vector.iter_mut().for_each(|x| *x /= norm);
    } else {
        vector.iter_mut().for_each(|x| *x = 0.0);
    }
}

/// 64-bit FNV-1a over the concatenation of `parts`: tiny and fixed forever, unlike std's
/// randomly seeded hasher.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A light English stem: strips the first matching suffix if at least 3 characters remain;
/// "-ss", "-us" and "-is" keep their "s" ("class", "bonus", "crisis").
fn stem(word: &str) -> String {
    for (suffix, replacement) in SUFFIXES {
        if let Some(base) = word.strip_suffix(suffix) {
            if base.chars().count() + replacement.len() < 3 {
                continue;
            }
            if *suffix == "s" && (base.ends_with('s') || base.ends_with('u') || base.ends_with('i'))
            {
                return word.to_string();
            }
            return format!("{base}{replacement}");
        }
    }
    word.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::rank::{recall_at, reciprocal_rank};

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_unit_length_and_deterministic() {
        let e = HashEmbedder::default();
        assert_eq!(e.model(), "builtin-hash-v1-256");
        assert_eq!(e.dimensions(), 256);
        let v = e.embed_text("Will Bitcoin close above $100,000?");
        assert_eq!(v.len(), 256);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-5);
        assert_eq!(v, e.embed_text("will BITCOIN close above 100 000"));
        // Pinned so an accidental change of hashing or features (which would silently mismatch
        // stored vectors) fails here and forces a FEATURE_VERSION bump.
        assert_eq!(fnv1a(&[b"w:", b"bitcoin"]), fnv1a(&[b"w:bitcoin"]));
        assert_eq!(fnv1a(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn empty_and_stop_word_texts_give_zero_vectors() {
        let e = HashEmbedder::new(16);
        assert!(e.embed_text("").iter().all(|x| *x == 0.0));
        assert!(e.embed_text("Will the ... by?").iter().all(|x| *x == 0.0));
        assert_eq!(HashEmbedder::new(0).dimensions(), 1);
    }

    #[test]
    fn stems() {
        assert_eq!(stem("launches"), "launch");
        assert_eq!(stem("raising"), "rais");
        assert_eq!(stem("races"), "rac");
        assert_eq!(stem("countries"), "country");
        assert_eq!(stem("elections"), "elect");
        assert_eq!(stem("class"), "class");
        assert_eq!(stem("bus"), "bus");
        assert_eq!(stem("is"), "is");
    }

    #[tokio::test]
    async fn embed_keeps_order() {
        let e = HashEmbedder::default();
        let texts = vec!["oil price".to_string(), "snap election".to_string()];
        let out = e.embed(&texts).await.unwrap();
        assert_eq!(
            out,
            vec![e.embed_text("oil price"), e.embed_text("snap election")]
        );
        assert!(dot(&out[0], &e.embed_text("crude oil prices")) > 0.5);
    }

    #[derive(serde::Deserialize)]
    struct Corpus {
        markets: Vec<Market>,
        queries: Vec<Query>,
    }
    #[derive(serde::Deserialize)]
    struct Market {
        key: String,
        name: String,
        description: String,
    }
    #[derive(serde::Deserialize)]
    struct Query {
        q: String,
        relevant: Vec<String>,
        #[serde(default)]
        kind: Option<String>,
    }

    /// Mean recall@10 and MRR of vector-only search over the corpus's wording queries (the
    /// paraphrases share no word with their markets: hashing words cannot find them).
    fn corpus_quality(e: &HashEmbedder) -> (f64, f64) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/search/corpus.json");
        let corpus: Corpus = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let docs: Vec<Vec<f32>> = corpus
            .markets
            .iter()
            .map(|m| e.embed_text(&format!("{}\n{}", m.name, m.description)))
            .collect();
        let slot = |key: &str| corpus.markets.iter().position(|m| m.key == key).unwrap() as i64;
        let (mut recall, mut mrr) = (0.0, 0.0);
        let queries: Vec<&Query> = corpus
            .queries
            .iter()
            .filter(|q| q.kind.as_deref() != Some("paraphrase"))
            .collect();
        for query in &queries {
            let q = e.embed_text(&query.q);
            let mut ranked: Vec<(i64, f32)> = (0..docs.len())
                .map(|i| (i as i64, dot(&docs[i], &q)))
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let ranked: Vec<i64> = ranked.into_iter().map(|(i, _)| i).collect();
            let relevant: Vec<i64> = query.relevant.iter().map(|k| slot(k)).collect();
            recall += recall_at(&relevant, &ranked, 10);
            mrr += reciprocal_rank(&relevant, &ranked);
        }
        let n = queries.len() as f64;
        (recall / n, mrr / n)
    }

    #[test]
    fn corpus_recall_and_mrr() {
        for dims in [256, 384, 512] {
            let (recall, mrr) = corpus_quality(&HashEmbedder::new(dims));
            println!("builtin-hash dims={dims}: recall@10={recall:.4} MRR={mrr:.4}");
            if dims == DEFAULT_DIMENSIONS {
                assert!(recall >= 0.88, "recall@10 {recall}");
                assert!(mrr >= 0.85, "MRR {mrr}");
            }
        }
    }
}
