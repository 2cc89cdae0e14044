//! Semantic market search: the [`embedder::Embedder`] trait with a built-in embedder and an
//! OpenAI-compatible HTTP one, the in-memory [`index::VectorIndex`], and rank fusion.
//!
//! The built-in embedder needs no network and no files: it hashes each word, a light stem of it
//! and the 3- and 4-character pieces of `#word#` into 256 signed buckets and normalizes the
//! result. `--embedder http` uses any OpenAI-compatible `/v1/embeddings` API instead (OpenAI,
//! Ollama, vLLM, TEI). Vectors are stored in SQLite with the market, tagged with the model and a
//! SHA-256 of the text they were computed from: a market is embedded again only when its text
//! changes, and when the model changes, every market is re-embedded in the background at the next
//! start (the server enqueues a job for each market without a vector of the current model). For
//! ranking, the vectors are held in memory quantized to 8 bits (256 bytes a market: 25 MiB for
//! 100,000 markets) and scanned in full on each query.

pub mod embedder;
pub mod http;
pub mod index;
pub mod rank;
pub mod terms;
