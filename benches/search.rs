//! Search quality: `cargo bench --bench search`.
//!
//! Loads the corpus in `data/search/corpus.json` (realistic markets and queries, each with the
//! markets a person would judge relevant) into a temporary database, indexes it with each
//! built-in embedder (the hashing one and the static MiniLM table), runs every query with
//! keyword-only, vector-only and hybrid ranking, and prints recall@10 and MRR (mean reciprocal
//! rank of the first relevant result) for each, over all queries and by kind (paraphrases share
//! no word with their markets). Then the time to embed one query with each embedder. The whole
//! transformer (`--embedder transformer`) is measured too when its weights are on disk
//! (`python3 data/embedder/fetch.py`; `AGORA_BENCH_MODEL_DIR` for another directory), with
//! the time to embed market texts as the indexing jobs do.
//!
//! Then the vector index at scale: the texts of 100,000 markets as `agora seed` draws them
//! (`AGORA_BENCH_VECTORS` changes the count; 1000000 for the 1M case), embedded and loaded into
//! the index, queried with the corpus's queries and with 100 of the markets' own texts (what
//! `related` asks). It prints the load time, the index's memory per market, each query's time
//! (p50, p99) and recall@10 of the index's answer against an exact search of the f32 vectors.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use agora::{
    db::{Db, DbOptions},
    domain::{
        job::QueueConfig,
        market::NewMarket,
        search::{SearchMode, SearchQuery},
        user::Role,
    },
    repo::{
        sqlite::{
            SqliteJobRepository, SqliteMarketRepository, SqliteSearchRepository,
            SqliteUserRepository,
        },
        MarketRepository, UserRepository,
    },
    search::{
        embedder::{Embedder, HashEmbedder},
        index::VectorIndex,
        minilm::MiniLmEmbedder,
        rank::{recall_at, reciprocal_rank},
        transformer::TransformerEmbedder,
    },
    service::search::SearchService,
};
use serde_json::Value;

fn main() {
    let corpus: Value =
        serde_json::from_str(include_str!("../data/search/corpus.json")).expect("corpus");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let transformer = transformer();
    let mut embedders: Vec<Arc<dyn Embedder>> = vec![
        Arc::new(HashEmbedder::default()),
        Arc::new(MiniLmEmbedder::default()),
    ];
    if let Some(t) = &transformer {
        embedders.push(t.clone());
    }
    println!("| embedder | ranking | all: recall@10 | MRR | wording: recall@10 | MRR | paraphrase: recall@10 | MRR |");
    println!("|---|---|---|---|---|---|---|---|");
    for embedder in embedders {
        runtime.block_on(quality(&corpus, embedder));
    }
    query_embedding_times(&corpus);
    if let Some(t) = &transformer {
        runtime.block_on(transformer_times(&corpus, t));
    }
    let queries: Vec<String> = corpus["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["q"].as_str().unwrap().to_owned())
        .collect();
    let count = std::env::var("AGORA_BENCH_VECTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    index_at_scale(count, &queries);
}

/// Recall@10 and MRR of keyword, vector and hybrid ranking with `embedder`, over all queries
/// and by kind (`wording`: variants and typos of the markets' words; `paraphrase`: no word in
/// common with the relevant markets).
async fn quality(corpus: &Value, embedder: Arc<dyn Embedder>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(&dir.path().join("agora.db"), &DbOptions::default()).unwrap());
    let users = SqliteUserRepository::new(db.clone());
    let user = users
        .create("corpus".into(), "x".into(), Role::User, 0)
        .await
        .unwrap();
    let markets: Arc<dyn MarketRepository> = Arc::new(SqliteMarketRepository::new(db.clone()));
    let search = SearchService::new(
        Arc::new(SqliteSearchRepository::new(db.clone())),
        markets.clone(),
        embedder,
        Arc::new(SqliteJobRepository::new(db.clone(), QueueConfig::default())),
        Duration::from_secs(5),
    );
    let mut keys = HashMap::new();
    for m in corpus["markets"].as_array().unwrap() {
        let text = |k: &str| m[k].as_str().unwrap().to_owned();
        let created = markets
            .create(
                NewMarket {
                    name: text("name"),
                    description: Some(text("description")),
                    creator_id: user.id,
                    outcomes: serde_json::from_value(m["outcomes"].clone()).unwrap(),
                    close_time: None,
                    initial_stake: None,
                },
                |_| Vec::new(),
            )
            .await
            .unwrap();
        search.index_market(created.id).await.unwrap();
        keys.insert(text("key"), created.id);
    }
    let queries = corpus["queries"].as_array().unwrap();
    for mode in [SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid] {
        // (recall, MRR, count) for all queries, wording, paraphrase.
        let mut sums = [(0.0, 0.0, 0.0); 3];
        for q in queries {
            let relevant: Vec<i64> = q["relevant"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| keys[k.as_str().unwrap()])
                .collect();
            let query =
                SearchQuery::parse(q["q"].as_str().unwrap(), None, Some(10), Some(mode)).unwrap();
            let hits = search.search(query).await.unwrap().hits;
            let got: Vec<i64> = hits.iter().map(|h| h.market.id).collect();
            let (recall, rr) = (
                recall_at(&relevant, &got, 10),
                reciprocal_rank(&relevant, &got),
            );
            let kind = if q["kind"] == "paraphrase" { 2 } else { 1 };
            for i in [0, kind] {
                sums[i].0 += recall;
                sums[i].1 += rr;
                sums[i].2 += 1.0;
            }
        }
        let cells: Vec<String> = sums
            .iter()
            .map(|(r, m, n)| format!("{:.3} | {:.3}", r / n, m / n))
            .collect();
        println!(
            "| {} | {} | {} |",
            search.model(),
            mode.as_str(),
            cells.join(" | ")
        );
    }
    db.close().await;
}

/// The whole transformer (`--embedder transformer`), when its weights are in
/// `AGORA_BENCH_MODEL_DIR` or where `data/embedder/fetch.py` puts them by default.
fn transformer() -> Option<Arc<TransformerEmbedder>> {
    let dir = std::env::var("AGORA_BENCH_MODEL_DIR").map_or_else(
        |_| TransformerEmbedder::default_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data")),
        PathBuf::from,
    );
    match TransformerEmbedder::load(&dir) {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            println!("(without the transformer: {e})\n");
            None
        }
    }
}

/// The transformer's time to embed a corpus query (p50, p99, through the `Embedder` trait as a
/// search calls it), and a market's text as an indexing job does (one text a call), over
/// 2,000 seeded markets' texts, with the time 100,000 would take on this machine's cores.
async fn transformer_times(corpus: &Value, t: &Arc<TransformerEmbedder>) {
    let mut times = Vec::new();
    for _ in 0..5 {
        for q in corpus["queries"].as_array().unwrap() {
            let text = [q["q"].as_str().unwrap().to_owned()];
            let started = Instant::now();
            std::hint::black_box(t.embed(&text).await.unwrap());
            times.push(started.elapsed());
        }
    }
    times.sort();
    let at = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "embedding a query, {}: p50 {:.2} ms, p99 {:.2} ms",
        t.model(),
        at(0.5),
        at(0.99)
    );
    let texts: Vec<String> = agora::seed::demo_texts(2_000, 7)
        .iter()
        .map(|m| m.joined())
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in texts.chunks(texts.len().div_ceil(cores)) {
        let (t, chunk) = (t.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for text in chunk {
                std::hint::black_box(t.embed(&[text]).await.unwrap());
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "embedding market texts, {}: {:.1} ms each on one core, {:.0} a second on {cores} \
         cores: 100,000 in {:.1} min",
        t.model(),
        elapsed * 1e3 * cores as f64 / texts.len() as f64,
        texts.len() as f64 / elapsed,
        100_000.0 * elapsed / texts.len() as f64 / 60.0
    );
}

/// A built-in embedder's model name and its embedding function.
type NamedEmbed<'a> = (&'a str, &'a dyn Fn(&str) -> Vec<f32>);

/// p50 and p99 of embedding one corpus query, per built-in embedder.
fn query_embedding_times(corpus: &Value) {
    let queries: Vec<&str> = corpus["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["q"].as_str().unwrap())
        .collect();
    let hash = HashEmbedder::default();
    let minilm = MiniLmEmbedder::default();
    let embedders: [NamedEmbed; 2] = [
        (hash.model(), &|t| hash.embed_text(t)),
        (minilm.model(), &|t| minilm.embed_text(t)),
    ];
    println!();
    for (model, embed) in embedders {
        let mut times: Vec<Duration> = (0..20)
            .flat_map(|_| queries.iter())
            .map(|q| {
                let started = Instant::now();
                std::hint::black_box(embed(q));
                started.elapsed()
            })
            .collect();
        times.sort();
        let at = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
        println!(
            "embedding a query, {model}: p50 {:.1} µs, p99 {:.1} µs",
            at(0.5),
            at(0.99)
        );
    }
}

/// The vector index on `count` seeded markets: load time, memory, query time and recall@10
/// against exact search.
fn index_at_scale(count: usize, texts: &[String]) {
    let embedder = MiniLmEmbedder::default();
    let markets = agora::seed::demo_texts(count, 7);
    let started = Instant::now();
    let vectors: Vec<Vec<f32>> = markets
        .iter()
        .map(|m| embedder.embed_text(&m.joined()))
        .collect();
    let embedded = started.elapsed();
    let started = Instant::now();
    let mut index = VectorIndex::new(vectors[0].len());
    index.reserve(count);
    for (id, vector) in vectors.iter().enumerate() {
        index.upsert_unpartitioned(id as i64, vector, 0);
    }
    let loaded = started.elapsed();
    let started = Instant::now();
    index.partition();
    let partitioned = started.elapsed();
    let mut queries: Vec<Vec<f32>> = texts.iter().map(|t| embedder.embed_text(t)).collect();
    let short = queries.len();
    queries.extend(vectors.iter().step_by(count / 100).cloned());
    println!(
        "\nvector index, {count} seeded markets: embedded in {:.1} s, loaded in {:.2} s, \
         partitioned into {} lists in {:.2} s, {} bytes a market",
        embedded.as_secs_f64(),
        loaded.as_secs_f64(),
        index.lists(),
        partitioned.as_secs_f64(),
        index.memory_bytes() / count
    );
    println!(
        "\n| queries | search | recall@10 vs every vector | vs exact f32 | within 0.01 | p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, range) in [
        ("corpus queries", 0..short),
        ("market texts (related)", short..queries.len()),
    ] {
        for (search, probe) in [
            ("nearest 8 lists' worth", Some(8)),
            ("nearest 16 lists' worth", Some(16)),
            ("nearest 32 lists' worth (default)", Some(32)),
            ("every vector", None),
        ] {
            let run = |query: &Vec<f32>| match probe {
                Some(probe) => index.top_probing(query, 10, probe, |_| true),
                None => index.top_exact(query, 10, |_| true),
            };
            // Timed back to back, as a busy server runs them (the recall check below reads
            // every f32 vector and would leave the index out of the CPU's caches).
            let mut times = Vec::new();
            for _ in 0..3 {
                for query in &queries[range.clone()] {
                    let started = Instant::now();
                    std::hint::black_box(run(query));
                    times.push(started.elapsed());
                }
            }
            let (mut ann, mut found, mut near) = (0.0, 0.0, 0.0);
            for query in &queries[range.clone()] {
                let got = run(query);
                let every = index.top_exact(query, 10, |_| true);
                let kth = every.last().map_or(f32::MIN, |e| e.1);
                ann += got.iter().filter(|(_, s)| *s >= kth - 1e-6).count().min(10) as f64 / 10.0;
                found += recall_against_exact(&vectors, query, &got, 1e-6);
                near += recall_against_exact(&vectors, query, &got, 0.01);
            }
            times.sort();
            let at = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
            println!(
                "| {name} | {search} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} |",
                ann / range.len() as f64,
                found / range.len() as f64,
                near / range.len() as f64,
                at(0.5),
                at(0.99)
            );
        }
    }
}

/// The share of the exact top 10 (by f32 cosine over every vector) in `got`. Seeded markets
/// repeat their texts but for a date, so many score alike: a result scoring at least the exact
/// tenth (less `slack`) is one of the exact top 10 as much as any. A slack of 0.01 forgives
/// what the i8 quantization alone cannot tell apart.
fn recall_against_exact(
    vectors: &[Vec<f32>],
    query: &[f32],
    got: &[(i64, f32)],
    slack: f32,
) -> f64 {
    let cosine = |v: &[f32]| {
        let dot: f32 = v.iter().zip(query).map(|(a, b)| a * b).sum();
        let norms = v.iter().map(|a| a * a).sum::<f32>().sqrt()
            * query.iter().map(|b| b * b).sum::<f32>().sqrt();
        if norms == 0.0 {
            0.0
        } else {
            dot / norms
        }
    };
    let mut exact: Vec<f32> = vectors.iter().map(|v| cosine(v)).collect();
    let tenth = 10.min(exact.len()) - 1;
    exact.select_nth_unstable_by(tenth, |a, b| b.total_cmp(a));
    let kth = exact[tenth];
    let hits = got
        .iter()
        .filter(|(id, _)| cosine(&vectors[*id as usize]) >= kth - slack)
        .count();
    hits.min(10) as f64 / 10.0
}
