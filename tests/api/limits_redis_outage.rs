//! Rate limits in Redis when Redis goes away, on a Redis of each test's own
//! (`tests/redis/server`), stopped, frozen and started again under a running server: with
//! `--redis-failure open` limited requests pass uncounted, logins get 503, `/readyz` says
//! `degraded`; with `closed` limited requests get 503 and `/readyz` fails; never a 500, never a
//! hang; every unanswered check is counted in `/metrics`; and the limits are back, without a
//! restart, once Redis is.
//!
//! Skipped without `AGORA_TEST_REDIS_URL` (it says Redis is installed; `.ci/run` sets it).

use std::{
    future::Future,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;

use crate::{
    helpers::{redis_server, skip_without_redis, Reply, TestApp, PASSWORD},
    limits::{app_with, assert_limited},
    metrics::sample,
};

/// A Redis of the test's own, stopped when dropped (also when the test fails).
struct OwnRedis {
    dir: TempDir,
    url: String,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = redis_server("start", dir.path());
        OwnRedis { dir, url }
    }

    fn stop(&self) {
        redis_server("stop", self.dir.path());
    }

    /// Starts it again: empty, on the same port.
    fn restart(&self) {
        assert_eq!(redis_server("start", self.dir.path()), self.url);
    }

    /// Freezes (`STOP`) or thaws (`CONT`) the server: it keeps its connections but answers
    /// nothing while frozen.
    fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join("redis.pid")).expect("pidfile");
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.trim().to_owned()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/redis/server");
        let _ = Command::new(server)
            .arg("stop")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .status();
    }
}

/// Polls `condition` until it holds or `timeout` passes; whether it held.
async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn store_errors(app: &TestApp) -> f64 {
    let text = app.get("/metrics").await.text;
    sample(&text, "agora_rate_limit_store_errors_total").expect("the metric")
}

/// Asserts a read passed without being counted: 200 and no `RateLimit` headers.
#[track_caller]
fn assert_uncounted(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply.header("ratelimit").is_none(), "{:?}", reply.headers);
    assert!(reply.header("ratelimit-policy").is_none());
}

/// Once Redis is back: a read is counted again (it carries `RateLimit`) within 15 s.
async fn counted_again(app: &TestApp) {
    let back = wait_until(Duration::from_secs(15), || async move {
        let reply = app.get("/api/markets").await;
        assert_ne!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        reply.header("ratelimit").is_some()
    })
    .await;
    assert!(back, "limits are not counted again after Redis returned");
}

#[tokio::test]
async fn with_redis_gone_reads_pass_uncounted_logins_get_503_and_limits_return_with_it() {
    if skip_without_redis("it stops and starts a Redis of its own") {
        return;
    }
    let redis = OwnRedis::start();
    let app = app_with(&["--redis-url", &redis.url, "--rate-reads", "3/min"]).await;
    app.register("owner").await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/markets").await.status, StatusCode::OK);
    }
    assert_limited(&app.get("/api/markets").await, "reads");
    assert_eq!(app.get("/readyz").await.body["status"], "ok");
    assert_eq!(store_errors(&app).await, 0.0);

    redis.stop();
    // Open: the used-up quota no longer refuses; each read passes, uncounted.
    for _ in 0..10 {
        assert_uncounted(&app.get("/api/markets").await);
    }
    // Logins fail closed: the guessing bound is not lifted by an outage.
    let login = json!({"username": "owner", "password": PASSWORD});
    app.post("/api/auth/login", login.clone())
        .await
        .assert_error(503, "unavailable");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.body["status"], "degraded");
    assert!(store_errors(&app).await >= 11.0);

    // Back, empty (nothing persisted): every bucket is full again, and counted.
    redis.restart();
    counted_again(&app).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(app.get("/api/markets").await.status.as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let reply = app.post("/api/auth/login", login).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(app.get("/readyz").await.body["status"], "ok");
}

#[tokio::test]
async fn failing_closed_refuses_limited_requests_with_503_and_readiness_fails_until_redis_returns()
{
    if skip_without_redis("it stops and starts a Redis of its own") {
        return;
    }
    let redis = OwnRedis::start();
    let app = app_with(&["--redis-url", &redis.url, "--redis-failure", "closed"]).await;
    assert_eq!(app.get("/api/markets").await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);

    redis.stop();
    for path in [
        "/api/markets",
        "/api/markets/1",
        "/api/markets/search?q=rain",
    ] {
        app.get(path).await.assert_error(503, "unavailable");
    }
    let reply = app
        .post(
            "/api/auth/register",
            json!({"username": "newcomer", "password": PASSWORD}),
        )
        .await;
    reply.assert_error(503, "unavailable");
    assert_eq!(app.count("users"), 0, "a refused request changes nothing");
    // Unlimited routes answer as usual; readiness says the server should get no traffic.
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    app.get("/readyz").await.assert_error(503, "unavailable");
    assert!(store_errors(&app).await >= 4.0);

    redis.restart();
    counted_again(&app).await;
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_frozen_redis_costs_a_request_at_most_the_check_timeout_and_never_hangs_it() {
    if skip_without_redis("it freezes a Redis of its own") {
        return;
    }
    let redis = OwnRedis::start();
    let app = app_with(&[
        "--redis-url",
        &redis.url,
        "--redis-timeout-ms",
        "250",
        "--rate-reads",
        "2/min",
    ])
    .await;
    for _ in 0..2 {
        assert_eq!(app.get("/api/markets").await.status, StatusCode::OK);
    }
    assert_limited(&app.get("/api/markets").await, "reads");

    // Frozen, Redis keeps the connection open and answers nothing: each check gives up after
    // its 250 ms and the read passes. (A bound on hanging, far above the timeout; not a
    // performance measurement.)
    redis.signal("STOP");
    for _ in 0..5 {
        let started = Instant::now();
        assert_uncounted(&app.get("/api/markets").await);
        assert!(started.elapsed() < Duration::from_secs(5), "a read hung");
    }
    assert!(store_errors(&app).await >= 5.0);

    redis.signal("CONT");
    // The checks that timed out ran when Redis woke, so the quota is used up again soon.
    let app = &app;
    let limited_again = wait_until(Duration::from_secs(15), || async move {
        let reply = app.get("/api/markets").await;
        assert_ne!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        reply.status == StatusCode::TOO_MANY_REQUESTS
    })
    .await;
    assert!(
        limited_again,
        "the quota is not enforced after Redis thawed"
    );
}
