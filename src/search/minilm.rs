//! The default embedder: [all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2)
//! distilled into a static table of token vectors, embedded in the binary. No network, no
//! download, no model runtime: a text's vector is the normalized mean of its WordPiece tokens'
//! rows, microseconds a query.
//!
//! The table (`data/embedder/minilm-l6-v2-static.bin`) is made by `data/embedder/distill.py`,
//! which runs the transformer itself (numpy) on weights it downloads pinned and hash-checked:
//! every vocabulary token alone gives a first table (as model2vec does), which is then fitted
//! by least squares so that the mean of a text's rows reproduces the transformer's embedding of
//! that text, over WordNet's lemmas, definitions and examples (general English, not agora's
//! corpus); rows are PCA-reduced and stored as int8 with a scale each. The weights are
//! Apache-2.0 (`data/embedder/LICENSE`), WordNet has its own licence
//! (`data/embedder/WORDNET-LICENSE`).
//!
//! Tokenization is BERT's uncased WordPiece, step for step as the script does it: lower case,
//! accents stripped (NFD, combining marks dropped), split at whitespace, control characters,
//! punctuation and CJK ideographs, then each word into the longest vocabulary pieces from its
//! start (`##` marks a piece inside a word); a word with a piece missing is dropped, as are
//! tokens without a row (`[UNK]`, `[CLS]`, ...).

use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

use super::embedder::{EmbedError, Embedder};

/// The distilled table: `AGORAST1`, u32 dimensions, u32 token count, the tokens (a length
/// byte and UTF-8 each, sorted), the int8 rows and the f32 scales (little-endian), in the
/// tokens' order.
static TABLE: &[u8] = include_bytes!("../../data/embedder/minilm-l6-v2-static.bin");

/// Bumped whenever the table or the tokenization changes: stored vectors of another version
/// are another model's and are re-embedded.
const VERSION: u32 = 1;

/// Longest word WordPiece splits (BERT's limit); longer ones are dropped.
const MAX_WORD_CHARS: usize = 100;

/// The parsed table, borrowed from the binary's bytes.
struct Table {
    dims: usize,
    /// Sorted, so a piece is found by binary search.
    tokens: Vec<&'static str>,
    rows: &'static [u8],
    scales: Vec<f32>,
}

impl Table {
    fn parse(bytes: &'static [u8]) -> Result<Table, String> {
        let bad = |what: &str| format!("the embedded token table is malformed: {what}");
        let rest = bytes
            .strip_prefix(b"AGORAST1")
            .ok_or_else(|| bad("magic"))?;
        let u32_at = |at: usize| -> Result<usize, String> {
            let raw = rest.get(at..at + 4).ok_or_else(|| bad("header"))?;
            Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
        };
        let (dims, count) = (u32_at(0)?, u32_at(4)?);
        let mut at = 8;
        let mut tokens = Vec::with_capacity(count);
        for _ in 0..count {
            let len = *rest.get(at).ok_or_else(|| bad("tokens"))? as usize;
            let raw = rest
                .get(at + 1..at + 1 + len)
                .ok_or_else(|| bad("tokens"))?;
            tokens.push(std::str::from_utf8(raw).map_err(|_| bad("token UTF-8"))?);
            at += 1 + len;
        }
        if !tokens.windows(2).all(|w| w[0] < w[1]) {
            return Err(bad("tokens not sorted"));
        }
        let rows = rest.get(at..at + count * dims).ok_or_else(|| bad("rows"))?;
        let scales = rest
            .get(at + count * dims..at + count * dims + count * 4)
            .ok_or_else(|| bad("scales"))?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Table {
            dims,
            tokens,
            rows,
            scales,
        })
    }

    fn find(&self, piece: &str) -> Option<usize> {
        self.tokens.binary_search(&piece).ok()
    }

    /// Adds the token's row (dequantized) to `sum`.
    fn add(&self, token: usize, sum: &mut [f32]) {
        let row = &self.rows[token * self.dims..(token + 1) * self.dims];
        let scale = self.scales[token];
        for (s, &q) in sum.iter_mut().zip(row) {
            *s += f32::from(q as i8) * scale;
        }
    }
}

fn table() -> &'static Table {
    static PARSED: OnceLock<Table> = OnceLock::new();
    // The bytes are compiled in and checked by a unit test: a failure here is a build defect.
    PARSED.get_or_init(|| Table::parse(TABLE).unwrap_or_else(|e| panic!("{e}")))
}

/// The words BERT's basic tokenizer makes of `text` (see the module docs).
pub(super) fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    for ch in text.to_lowercase().nfd() {
        let category = ch.general_category();
        if category == GeneralCategory::NonspacingMark {
            continue;
        }
        let group = ch.general_category_group();
        if ch.is_whitespace() || group == GeneralCategoryGroup::Other {
            flush(&mut word, &mut out);
        } else if ch.is_ascii_punctuation()
            || group == GeneralCategoryGroup::Punctuation
            || is_cjk(ch)
        {
            flush(&mut word, &mut out);
            out.push(ch.to_string());
        } else {
            word.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn is_cjk(ch: char) -> bool {
    matches!(ch as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// The table rows of `word`'s WordPiece tokens, appended to `out`; nothing when a piece is
/// missing (BERT would give `[UNK]`, which has no row).
fn pieces(table: &Table, word: &str, out: &mut Vec<usize>) {
    word_pieces(word, |piece| table.find(piece), out);
}

/// WordPiece: `word` split into the longest pieces `find` knows, from its start (`##` marks a
/// piece inside a word), their ids appended to `out`. A word longer than BERT's limit or with
/// a piece missing appends nothing and returns false (BERT makes it one `[UNK]`).
pub(super) fn word_pieces<T>(
    word: &str,
    find: impl Fn(&str) -> Option<T>,
    out: &mut Vec<T>,
) -> bool {
    let chars: Vec<(usize, char)> = word.char_indices().collect();
    if chars.len() > MAX_WORD_CHARS {
        return false;
    }
    let before = out.len();
    let mut piece = String::new();
    let mut start = 0;
    while start < chars.len() {
        let from = chars[start].0;
        let found = (start + 1..=chars.len()).rev().find_map(|end| {
            let to = chars.get(end).map_or(word.len(), |c| c.0);
            piece.clear();
            if start > 0 {
                piece.push_str("##");
            }
            piece.push_str(&word[from..to]);
            find(&piece).map(|token| (end, token))
        });
        match found {
            Some((end, token)) => {
                out.push(token);
                start = end;
            }
            None => {
                out.truncate(before);
                return false;
            }
        }
    }
    true
}

/// The static MiniLM embedder (see the module docs).
#[derive(Debug, Clone)]
pub struct MiniLmEmbedder {
    model: String,
}

impl Default for MiniLmEmbedder {
    fn default() -> Self {
        MiniLmEmbedder {
            model: format!("minilm-l6-v2-static-v{VERSION}-{}", table().dims),
        }
    }
}

impl MiniLmEmbedder {
    /// The L2-normalized vector of one text (all zeros when no token of it has a row).
    pub fn embed_text(&self, text: &str) -> Vec<f32> {
        let table = table();
        let mut tokens = Vec::new();
        for word in words(text) {
            pieces(table, &word, &mut tokens);
        }
        let mut sum = vec![0.0f32; table.dims];
        for &token in &tokens {
            table.add(token, &mut sum);
        }
        let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            sum.iter_mut().for_each(|x| *x /= norm);
        }
        sum
    }
}

#[async_trait::async_trait]
impl Embedder for MiniLmEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dimensions(&self) -> usize {
        table().dims
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_text(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &str, b: &str) -> f32 {
        let e = MiniLmEmbedder::default();
        let (a, b) = (e.embed_text(a), e.embed_text(b));
        a.iter().zip(&b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn the_embedded_table_parses() {
        let table = Table::parse(TABLE).unwrap();
        assert!(table.tokens.len() > 25_000, "{}", table.tokens.len());
        assert_eq!(table.scales.len(), table.tokens.len());
        assert!(table.find("bank").is_some() && table.find("##ing").is_some());
        assert!(table.find("[CLS]").is_none());
        for bad in [&b"AGORAST0"[..], &TABLE[..100]] {
            assert!(Table::parse(bad.to_vec().leak()).is_err());
        }
    }

    #[test]
    fn tokenizes_as_bert_uncased_does() {
        assert_eq!(
            words("Héllo, World!  Naïve café"),
            ["hello", ",", "world", "!", "naive", "cafe"]
        );
        let table = table();
        let mut tokens = Vec::new();
        pieces(table, "unaffordable", &mut tokens);
        let pieces: Vec<&str> = tokens.iter().map(|&t| table.tokens[t]).collect();
        assert_eq!(pieces.concat().replace("##", ""), "unaffordable");
        assert!(pieces.len() >= 2 && pieces[1..].iter().all(|p| p.starts_with("##")));
        let mut none = Vec::new();
        super::pieces(table, &"x".repeat(101), &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn a_paraphrase_is_nearer_than_an_unrelated_text() {
        let pair = cosine(
            "Will the Fed cut interest rates in December?",
            "central bank lowers borrowing costs",
        );
        let unrelated = cosine(
            "Will the Fed cut interest rates in December?",
            "who wins the tennis final",
        );
        assert!(
            pair > unrelated + 0.1,
            "paraphrase {pair}, unrelated {unrelated}"
        );
        let pair = cosine("self-driving taxis", "driverless robotaxi service");
        let unrelated = cosine("self-driving taxis", "hottest year on record");
        assert!(
            pair > unrelated + 0.1,
            "paraphrase {pair}, unrelated {unrelated}"
        );
    }

    #[test]
    fn vectors_are_unit_length_or_zero_and_deterministic() {
        let e = MiniLmEmbedder::default();
        let v = e.embed_text("Bitcoin above $100,000");
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        assert_eq!(v, e.embed_text("Bitcoin above $100,000"));
        assert!(e.embed_text("").iter().all(|x| *x == 0.0));
        assert!(e.embed_text("\u{1}\u{2}").iter().all(|x| *x == 0.0));
        assert_eq!(
            e.model(),
            format!("minilm-l6-v2-static-v{VERSION}-{}", e.dimensions())
        );
    }
    /// The corpus's `paraphrase` queries really are paraphrases: no content word of one shares
    /// a five-letter prefix (or is a prefix of four letters or more) with a word of its
    /// relevant markets' names, descriptions or outcomes.
    #[test]
    fn the_corpus_paraphrases_share_no_word_with_their_markets() {
        const STOP: &[&str] = &[
            "a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "with", "and", "or", "is",
            "are", "be", "will", "who", "which", "what", "how", "when", "than", "more", "most",
            "any", "its", "it", "his", "her", "their", "this", "that", "from", "into", "over",
            "under", "between", "after", "before", "new", "next", "no", "yes",
        ];
        let words = |text: &str| -> Vec<String> {
            text.to_lowercase()
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| w.len() > 1 && !STOP.contains(w))
                .map(str::to_owned)
                .collect()
        };
        let share = |a: &str, b: &str| {
            a == b
                || (a.len() >= 5 && b.len() >= 5 && a[..5] == b[..5])
                || (a.len().min(b.len()) >= 4 && (a.starts_with(b) || b.starts_with(a)))
        };
        let corpus: serde_json::Value =
            serde_json::from_str(include_str!("../../data/search/corpus.json")).unwrap();
        let markets = corpus["markets"].as_array().unwrap();
        let mut paraphrases = 0;
        for q in corpus["queries"].as_array().unwrap() {
            if q["kind"] != "paraphrase" {
                continue;
            }
            paraphrases += 1;
            for key in q["relevant"].as_array().unwrap() {
                let m = markets.iter().find(|m| m["key"] == *key).unwrap();
                let text = format!("{} {} {}", m["name"], m["description"], m["outcomes"]);
                let market_words = words(&text);
                for w in words(q["q"].as_str().unwrap()) {
                    let shared = market_words.iter().find(|m| share(&w, m));
                    assert!(shared.is_none(), "{q} and {key} share {w}/{shared:?}");
                }
            }
        }
        assert!(paraphrases >= 30, "{paraphrases}");
    }
}
