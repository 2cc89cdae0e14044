//! Rate limits counted in Redis (`--redis-url`): two servers on one Redis, each on its own data
//! directory and database, share every quota (per address, per username and address, per
//! username), with the in-process headers and refill; the GCRA script decides exactly as
//! governor does for the same request times; a bucket's key expires by itself. Outages are in
//! `limits_redis_outage.rs`.
//!
//! Every test needs `AGORA_TEST_REDIS_URL` (`.ci/run` sets it for the PostgreSQL run) and is
//! skipped, saying so, without it.

use std::time::Duration;

use agora::{
    middleware::rate_limit::{Decision, Rate, RedisStore},
    Config,
};
use governor::{
    clock::{Clock, FakeRelativeClock},
    middleware::StateInformationMiddleware,
    Quota, RateLimiter,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    helpers::{fresh_prefix, redis_url, request, skip_without_redis, TestApp, PASSWORD},
    limits::{app_with, assert_limited, client_from},
};

/// A command on the suite's Redis.
async fn redis_query<T: redis::FromRedisValue>(cmd: &mut redis::Cmd) -> T {
    let client = redis::Client::open(redis_url().expect("a Redis")).expect("Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connected to Redis");
    cmd.query_async(&mut conn).await.expect("Redis answers")
}

#[tokio::test]
async fn two_servers_on_one_redis_share_one_quota_per_address_with_the_same_headers() {
    if skip_without_redis("two servers share their quotas through Redis") {
        return;
    }
    let prefix = fresh_prefix();
    let flags = ["--rate-reads", "4/8s", "--redis-prefix", &prefix];
    let (a, b) = (app_with(&flags).await, app_with(&flags).await);
    let servers = [&a, &b];
    // The burst, spread over both servers: 4 pass in all, not 4 on each, and every answer
    // says what is left of the one quota.
    for (i, remaining) in [3, 2, 1, 0].into_iter().enumerate() {
        let reply = servers[i % 2].get("/api/markets").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.header("ratelimit-policy"), Some("\"reads\";q=4;w=8"));
        let state = format!("\"reads\";r={remaining};t={}", 2 * (4 - remaining));
        assert_eq!(reply.header("ratelimit"), Some(state.as_str()));
    }
    let mut retry_after = 0;
    for i in 0..6 {
        retry_after = assert_limited(&servers[i % 2].get("/api/markets").await, "reads");
    }
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    // It refills as governor does: one request every 8 s / 4 = 2 s, not the whole burst.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let reply = b.get("/api/markets").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply
        .header("ratelimit")
        .is_some_and(|s| s.starts_with("\"reads\";r=0;")));
    assert_limited(&a.get("/api/markets").await, "reads");

    // Another address has its own bucket, on either server.
    let other = client_from("127.0.0.2");
    let reply = request(
        &other,
        &a.base,
        None,
        Method::GET,
        "/api/markets",
        None,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    // The bucket is one key, which expires by itself a second after it is full again (8 s at
    // most here): nothing needs sweeping.
    let key = format!("{prefix}reads:ip:127.0.0.1");
    let ttl: i64 = redis_query(redis::cmd("PTTL").arg(&key)).await;
    assert!((1..=9_000).contains(&ttl), "{key}: PTTL {ttl}");
}

#[tokio::test]
async fn the_login_quotas_per_address_and_per_account_are_shared_by_both_servers() {
    if skip_without_redis("two servers share their login quotas through Redis") {
        return;
    }
    let prefix = fresh_prefix();
    let flags = [
        "--rate-login",
        "3/15min",
        "--rate-login-account",
        "5/15min",
        "--redis-prefix",
        &prefix,
    ];
    let (a, b) = (app_with(&flags).await, app_with(&flags).await);
    // Each server has its own database, so each has its own account of that name.
    a.register("victim").await;
    b.register("victim").await;
    let guess = json!({"username": "victim", "password": "a wrong guess"});
    let right = json!({"username": "VICTIM", "password": PASSWORD});
    // Guesses from one address, alternating between the servers: 3 in all.
    for server in [&a, &b, &a] {
        let reply = server.post("/api/auth/login", guess.clone()).await;
        reply.assert_error(401, "unauthorized");
    }
    for server in [&b, &a] {
        let retry_after = assert_limited(
            &server.post("/api/auth/login", right.clone()).await,
            "login",
        );
        assert!(retry_after > 200, "{retry_after}");
    }
    // The account's ceiling counts the 3 attempts that passed, from both servers: 2 more from
    // other addresses, whatever the server, then none.
    let login_from = |ip: &str, server: &TestApp, body: &serde_json::Value| {
        let (client, base, body) = (client_from(ip), server.base.clone(), body.clone());
        async move {
            let path = "/api/auth/login";
            request(&client, &base, None, Method::POST, path, Some(body), &[]).await
        }
    };
    let reply = login_from("127.0.0.2", &a, &right).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    login_from("127.0.0.3", &b, &guess)
        .await
        .assert_error(401, "unauthorized");
    let cut = login_from("127.0.0.4", &a, &right).await;
    assert_limited(&cut, "login_account");
}

/// governor's decision for the same quota, on a clock the test moves.
fn governor_decision(
    limiter: &RateLimiter<
        governor::state::NotKeyed,
        governor::state::InMemoryState,
        FakeRelativeClock,
        StateInformationMiddleware,
    >,
    clock: &FakeRelativeClock,
) -> Decision {
    match limiter.check() {
        Ok(snapshot) => Decision::Allowed {
            remaining: snapshot.remaining_burst_capacity(),
        },
        Err(not_until) => Decision::Refused {
            wait: not_until.wait_time_from(clock.now()),
        },
    }
}

#[tokio::test]
async fn the_redis_script_decides_as_governor_does_for_the_same_request_times() {
    if skip_without_redis("it runs the GCRA script in Redis") {
        return;
    }
    let url = redis_url().expect("a Redis");
    let prefix = fresh_prefix();
    let config = Config::from_args([
        "agora",
        "--redis-url",
        url,
        "--redis-prefix",
        prefix.as_str(),
        "--redis-timeout-ms",
        "5000",
    ])
    .expect("valid flags");
    let store = RedisStore::connect(&config.redis).expect("a store");
    let mut rng = StdRng::seed_from_u64(17);
    // Quotas whose refill interval is a whole number of microseconds (Redis's resolution), so
    // both sides must agree exactly: a burst of 1, small and large bursts, short and long windows.
    for rate in ["1/s", "4/2s", "5/s", "10/min", "30/min", "20/h"] {
        let parsed: Rate = rate.parse().expect("rate");
        let t = parsed.window / parsed.count.get();
        let quota = Quota::with_period(t)
            .expect("period")
            .allow_burst(parsed.count);
        let clock = FakeRelativeClock::default();
        clock.advance(Duration::from_secs(3600));
        let limiter = RateLimiter::direct_with_clock(quota, clock.clone())
            .with_middleware::<StateInformationMiddleware>();
        // Redis is given the same times, as microseconds since the epoch (late 2027).
        let mut now = Duration::from_secs(1_820_000_000);
        let key = format!("replay:{rate}");
        let t_us = u64::try_from(t.as_micros()).expect("fits");
        let (mut allowed, mut refused) = (0, 0);
        for step in 0..600 {
            // Mostly faster than the refill (so bursts run out), some slower, and now and then a
            // pause of up to two whole refills.
            let gap = match rng.random_range(0..100) {
                0..=49 => 0,
                50..=89 => rng.random_range(1..=t_us),
                90..=98 => rng.random_range(t_us..=3 * t_us),
                _ => rng.random_range(0..=2 * u64::from(parsed.count.get()) * t_us),
            };
            clock.advance(Duration::from_micros(gap));
            now += Duration::from_micros(gap);
            let expected = governor_decision(&limiter, &clock);
            let got = store
                .count_at(&key, parsed, now)
                .await
                .expect("Redis answers");
            assert_eq!(
                got, expected,
                "{rate}, request {step}, {gap} µs after the last"
            );
            match got {
                Decision::Allowed { .. } => allowed += 1,
                Decision::Refused { .. } => refused += 1,
            }
        }
        // The sequence exercised both answers.
        assert!(
            allowed > 20 && refused > 20,
            "{rate}: {allowed} / {refused}"
        );
    }
    assert_eq!(store.errors(), 0);
}
