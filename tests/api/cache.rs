//! The read cache never serves a value older than a write that has returned, however reads
//! and writes interleave.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn reads_after_a_write_returns_never_see_older_data_under_concurrent_reads() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            alice
                .create_market(json!({"name": format!("Cached market {i}")}))
                .await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let done = AtomicBool::new(false);
    let readers = join_all((0..8).map(|r| {
        let (app, ids, done) = (&app, &ids, &done);
        async move {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let id = ids[(n + r) % ids.len()];
                app.get(&format!("/api/markets/{id}")).await;
                app.get("/api/markets?sort=name").await;
                n += 1;
            }
        }
    }));
    let writers = async {
        join_all(ids.iter().map(|id| {
            let (alice, app) = (&alice, &app);
            async move {
                for round in 0..15 {
                    let written = alice
                        .patch(
                            &format!("/api/markets/{id}"),
                            json!({"description": format!("round {round}")}),
                        )
                        .await;
                    assert_eq!(written.status, StatusCode::OK);
                    let version = written.body["data"]["version"].as_i64().unwrap();
                    let read = app.get(&format!("/api/markets/{id}")).await;
                    assert!(
                        read.body["data"]["version"].as_i64().unwrap() >= version,
                        "stale market after a write"
                    );
                    let listed = app.get("/api/markets?sort=name&limit=100").await;
                    let mine = listed.body["data"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|m| m["id"] == *id)
                        .unwrap()
                        .clone();
                    assert!(
                        mine["version"].as_i64().unwrap() >= version,
                        "stale list page after a write"
                    );
                    let staked = alice.stake(&json!(id), 0, 1).await;
                    assert_eq!(staked.status, StatusCode::CREATED);
                    let read = app.get(&format!("/api/markets/{id}")).await;
                    let volume = read.body["data"]["volume"].as_i64().unwrap();
                    assert_eq!(volume, round + 1, "a returned stake is in the next read");
                    // The body (rendered once per cached market) and its ETag agree.
                    assert_eq!(
                        read.header("etag"),
                        Some(format!("\"{id}-{}\"", read.body["data"]["version"]).as_str())
                    );
                }
            }
        }))
        .await;
        done.store(true, Ordering::Relaxed);
    };
    tokio::join!(readers, writers);
    app.assert_invariants();
}

#[tokio::test]
async fn a_market_requested_before_it_exists_is_found_once_created() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    app.get("/api/markets/1")
        .await
        .assert_error(404, "not_found");
    let total_before = app.get("/api/markets").await.body["meta"]["total"].clone();
    assert_eq!(total_before, 0);
    let created = alice.create_market(json!({"name": "Now it exists"})).await;
    assert_eq!(created["id"], 1);
    assert_eq!(
        app.get("/api/markets/1").await.status,
        StatusCode::OK,
        "a cached miss does not hide a new market"
    );
    assert_eq!(app.get("/api/markets").await.body["meta"]["total"], 1);
    assert_eq!(
        alice.delete("/api/markets/1").await.status,
        StatusCode::NO_CONTENT
    );
    app.get("/api/markets/1")
        .await
        .assert_error(404, "not_found");
}
