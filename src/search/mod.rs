//! Semantic market search: the [`embedder::Embedder`] trait with a built-in embedder and an
//! OpenAI-compatible HTTP one, the in-memory [`index::VectorIndex`], keyword ranking with bounded
//! work ([`terms`]), and rank fusion ([`rank`]).
//!
//! The default embedder ([`minilm`]) is all-MiniLM-L6-v2 distilled into a static table of token
//! vectors compiled into the binary: no network, no download, microseconds a query, and it
//! knows that "cheaper borrowing" is about rate cuts. `--embedder transformer` runs the whole
//! all-MiniLM-L6-v2 in process instead ([`transformer`]): better on meaning (word order, context),
//! milliseconds a query, from weights fetched once by `data/embedder/fetch.py` (pinned, checked;
//! nothing is downloaded at run time). `--embedder hash` is the earlier built-in
//! one (each word, a light stem of it and the 3- and 4-character pieces of `#word#` hashed
//! into 256 signed buckets: wording, not meaning). `--embedder http` uses any OpenAI-compatible `/v1/embeddings` API instead (OpenAI,
//! Ollama, vLLM, TEI). Vectors are stored in the database with the market, tagged with the
//! model and a SHA-256 of the text they were computed from: a market is embedded again only when
//! its text changes, and when the model changes, every market is re-embedded in the background
//! at the next start (the server enqueues `index_markets` jobs, 32 markets each, for the markets
//! without a vector of the current model: one embedding call a job).
//!
//! For ranking, the vectors are held in memory quantized to 8 bits, with each market's status
//! (a status filter applies inside the search): 303 bytes a market in all (29 MiB for 100,000,
//! 300 MiB for a million). Past 20,000 markets the index is partitioned into about √n lists by
//! nearest centroid, stored list by list, and a query scores the vectors of the lists nearest
//! it, about as many as 32 lists hold and at most 16,384 (a tenth of the index at 100,000
//! markets, 1.6% at a million): 0.3 ms a query at 100,000 where scoring all took 2.3 ms, with recall@10 against
//! scoring all of 0.987 on the corpus's queries (see [`index`] and benches/README.md). The
//! index is loaded and partitioned at start (1.8 s for 100,000 seeded markets, the reads
//! included) and follows every change to the markets through the storage's change feed,
//! whichever process made it: `agora seed` beside a running server, another agora on the same
//! PostgreSQL. It is partitioned again when it has doubled.
//!
//! Keyword ranking is the engine's full-text index (FTS5 bm25 on SQLite, `ts_rank` on
//! PostgreSQL), asked one word at a time for that word's best 1,000 markets; the scores add up
//! over the query's words. A common word's list is kept until the markets change, so a word
//! that half the markets have costs its ranking once, not on every query ([`terms`]).

pub mod embedder;
pub mod http;
pub mod index;
pub mod minilm;
pub mod rank;
pub mod terms;
pub mod transformer;
