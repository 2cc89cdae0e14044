//! `GET /metrics`: Prometheus (OpenMetrics) text with requests by route template and status,
//! latency histograms, the cache, the job queue, rate-limit refusals and database pool waits.

use reqwest::StatusCode;
use serde_json::json;

use crate::{helpers::TestApp, jobs::indexed};

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
