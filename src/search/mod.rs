//! Semantic market search: the [`embedder::Embedder`] trait with a built-in embedder and an
//! OpenAI-compatible HTTP one, the in-memory [`index::VectorIndex`], and rank fusion.

pub mod embedder;
pub mod http;
pub mod index;
pub mod rank;
