//! Search quality: `cargo bench --bench search`.
//!
//! Loads the corpus in `data/search/corpus.json` (realistic markets and queries, each with the
//! markets a person would judge relevant) into a temporary database, indexes it with the
//! built-in embedder, runs every query with keyword-only, vector-only and hybrid ranking, and
//! prints recall@10 and MRR (mean reciprocal rank of the first relevant result) for each.

use std::{collections::HashMap, sync::Arc, time::Duration};

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
        embedder::HashEmbedder,
        rank::{recall_at, reciprocal_rank},
    },
    service::search::SearchService,
};
use serde_json::Value;

fn main() {
    let corpus: Value =
        serde_json::from_str(include_str!("../data/search/corpus.json")).expect("corpus");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
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
            Arc::new(HashEmbedder::default()),
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
        println!(
            "{} markets, {} queries, model {}\n",
            keys.len(),
            queries.len(),
            search.model()
        );
        println!("| ranking | recall@10 | MRR |");
        println!("|---|---|---|");
        for mode in [SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid] {
            let (mut recall, mut mrr) = (0.0, 0.0);
            for q in queries {
                let relevant: Vec<i64> = q["relevant"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| keys[k.as_str().unwrap()])
                    .collect();
                let query =
                    SearchQuery::parse(q["q"].as_str().unwrap(), None, Some(10), Some(mode))
                        .unwrap();
                let hits = search.search(query).await.unwrap().hits;
                let got: Vec<i64> = hits.iter().map(|h| h.market.id).collect();
                recall += recall_at(&relevant, &got, 10);
                mrr += reciprocal_rank(&relevant, &got);
            }
            let n = queries.len() as f64;
            println!("| {} | {:.3} | {:.3} |", mode.as_str(), recall / n, mrr / n);
        }
        db.close().await;
    });
}
