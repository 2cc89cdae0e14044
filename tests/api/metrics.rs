//! `GET /metrics`: Prometheus (OpenMetrics) text with requests by route template and status,
//! latency histograms, the cache, the job queue, rate-limit refusals, database pool waits and
//! the SQLite writer's commits.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::{on_postgres, TestApp},
    jobs::indexed,
};

/// The value of the sample line starting with `prefix` (name and labels).
pub(crate) fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_read_every_source() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(&dir, &["--rate-reads", "3/min"]);
    let app = TestApp::spawn_with(dir, config).await;
    let alice = app.user("alice").await;
    let market = alice
        .create_market(json!({"name": "Will metrics work?"}))
        .await;
    indexed(&app).await;
    let path = format!("/api/markets/{}", market["id"]);
    for _ in 0..2 {
        alice.get(&path).await;
    }
    app.get("/api/nothing").await;
    // The 404 counts against the anonymous reads quota too: 2 lists pass, 2 get 429.
    for _ in 0..4 {
        app.get("/api/markets").await;
    }

    let resp = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(
        resp.headers().get("ratelimit").is_none(),
        "not rate limited"
    );
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let get_market =
        "agora_http_requests_total{method=\"GET\",route=\"get_market\",status=\"200\"}";
    assert_eq!(sample(&text, get_market), Some(2.0), "{text}");
    let created =
        "agora_http_requests_total{method=\"POST\",route=\"create_market\",status=\"201\"}";
    assert_eq!(sample(&text, created), Some(1.0));
    let unmatched = "agora_http_requests_total{method=\"GET\",route=\"-\",status=\"404\"}";
    assert_eq!(sample(&text, unmatched), Some(1.0));
    let limited = "agora_http_requests_total{method=\"GET\",route=\"-\",status=\"429\"}";
    assert_eq!(sample(&text, limited), Some(2.0), "{text}");
    let count = "agora_http_request_duration_seconds_count{method=\"GET\",route=\"get_market\"}";
    assert_eq!(sample(&text, count), Some(2.0));
    assert!(text.contains("agora_http_request_duration_seconds_bucket{le=\"0.005\",method=\"GET\",route=\"get_market\"}"), "{text}");
    assert!(
        sample(&text, "agora_cache_hits_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(sample(&text, "agora_cache_misses_total").is_some_and(|n| n >= 1.0));
    assert_eq!(
        sample(&text, "agora_jobs{status=\"succeeded\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "agora_jobs{status=\"dead\"}"), Some(0.0));
    assert_eq!(
        sample(&text, "agora_rate_limited_total{policy=\"reads\"}"),
        Some(2.0)
    );
    assert!(sample(&text, "agora_rate_limit_keys").is_some());
    // Whether Redis counts the quotas or not, no check has gone unanswered.
    assert_eq!(
        sample(&text, "agora_rate_limit_store_errors_total"),
        Some(0.0)
    );
    assert!(sample(&text, "agora_db_pool_waits_total").is_some());
    assert_eq!(sample(&text, "agora_event_streams_open"), Some(0.0));
    assert!(sample(&text, "agora_event_head").is_some(), "{text}");
}

/// The writes and write transactions of `/metrics` (SQLite's group commit), or `None` when the
/// engine has no such counters.
async fn write_batches(app: &TestApp) -> Option<(f64, f64)> {
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let commits = sample(&text, "agora_db_write_commits_total");
    let writes = sample(&text, "agora_db_batched_writes_total");
    assert_eq!(commits.is_some(), writes.is_some(), "{text}");
    commits.zip(writes)
}

#[tokio::test]
async fn the_writers_commits_and_the_writes_they_carried_give_its_mean_batch() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let market = alice
        .create_market(json!({"name": "Will writes share commits?"}))
        .await;
    let before = write_batches(&app).await;
    if on_postgres() {
        // Each write is its own transaction there: no such counters.
        assert_eq!(before, None);
        return;
    }
    let (commits, writes) = before.expect("SQLite counts its commits");
    assert!(commits >= 1.0 && writes >= commits, "{commits} {writes}");
    let replies = join_all((0..20).map(|_| alice.stake(&market["id"], 0, 1))).await;
    assert!(replies.iter().all(|r| r.status == StatusCode::CREATED));
    let (commits_after, writes_after) = write_batches(&app).await.unwrap();
    let (commits, writes) = (commits_after - commits, writes_after - writes);
    // Every stake is a write of a committed transaction, each of which carried at least one.
    assert!(writes >= 20.0, "{writes} writes for 20 stakes");
    assert!(
        commits >= 1.0 && commits <= writes,
        "{commits} commits, {writes} writes"
    );
}
