//! Probability histories over HTTP: every point of `GET /api/markets/{id}/history` at each
//! interval is computed here from the bets (their `created_at` and amounts) and must match
//! exactly; bounds, the multi-market endpoint and the refusals.
//!
//! A test cannot wait hours for stakes to fall in different intervals, so it moves the past
//! further into the past: after a group of stakes it shifts that market's creation, its bets'
//! `created_at` and its history rows back by the same whole minutes, by SQL, as if they had
//! happened then.

use reqwest::StatusCode;
use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::helpers::{Caller, TestApp};

const MINUTE: i64 = 60_000;

fn ms(text: &Value) -> i64 {
    let t = OffsetDateTime::parse(text.as_str().expect("a timestamp"), &Rfc3339).expect("RFC 3339");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// One bet as the history must see it.
#[derive(Debug, Clone, Copy)]
struct Bet {
    at: i64,
    outcome: usize,
    amount: i64,
}

/// A market and its bets, with times as they stand after every shift.
struct Script {
    id: i64,
    created: i64,
    bets: Vec<Bet>,
}

impl Script {
    async fn stake(&mut self, caller: &Caller, outcome: usize, amount: i64) {
        let reply = caller.stake(&json!(self.id), outcome as u32, amount).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        self.bets.push(Bet {
            at: ms(&reply.body["data"]["created_at"]),
            outcome,
            amount,
        });
    }

    /// Moves the market's creation, bets and history rows `minutes` back.
    fn shift(&mut self, app: &TestApp, minutes: i64) {
        let by = minutes * MINUTE;
        let db = app.db();
        for sql in [
            "UPDATE markets SET created_at = created_at - $2 WHERE id = $1",
            "UPDATE bets SET created_at = created_at - $2 WHERE market_id = $1",
            "UPDATE market_history SET minute = minute - $2 WHERE market_id = $1",
        ] {
            db.execute(sql, &[&self.id, &by]);
        }
        self.created -= by;
        for bet in &mut self.bets {
            bet.at -= by;
        }
    }

    /// The points from `from` (aligned) for `n` intervals of `step`: the probabilities after
    /// the last bet before each interval's end, and the credits staked within it.
    fn expected(&self, from: i64, step: i64, n: i64) -> Vec<(i64, Vec<f64>, i64)> {
        (0..n)
            .map(|i| {
                let (start, end) = (from + i * step, from + (i + 1) * step);
                let mut pools = [0i64; 2];
                let mut volume = 0;
                for bet in self.bets.iter().filter(|b| b.at < end) {
                    pools[bet.outcome] += bet.amount;
                    if bet.at >= start {
                        volume += bet.amount;
                    }
                }
                let total: i64 = pools.iter().sum();
                let probabilities = pools
                    .iter()
                    .map(|&p| {
                        if total > 0 {
                            p as f64 / total as f64
                        } else {
                            0.5
                        }
                    })
                    .collect();
                (start, probabilities, volume)
            })
            .collect()
    }
}

/// A history's points as (start, probabilities, volume).
fn points(history: &Value) -> Vec<(i64, Vec<f64>, i64)> {
    history["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| {
            let probabilities = p["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (ms(&p["t"]), probabilities, p["volume"].as_i64().unwrap())
        })
        .collect()
}

/// A market staked on 77, 74 and 4 minutes ago and now (times as the server recorded them).
async fn scripted(app: &TestApp) -> (Script, [Caller; 3]) {
    let users = [
        app.user("alice").await,
        app.user("bob").await,
        app.user("carol").await,
    ];
    let created = users[0]
        .create_market(json!({"name": "Charted market", "outcomes": ["YES", "NO"]}))
        .await;
    let mut script = Script {
        id: created["id"].as_i64().unwrap(),
        created: ms(&created["created_at"]),
        bets: Vec::new(),
    };
    script.shift(app, 3);
    script.stake(&users[0], 0, 100).await;
    script.stake(&users[1], 1, 300).await;
    script.shift(app, 70);
    script.stake(&users[2], 0, 50).await;
    script.shift(app, 4);
    script.stake(&users[1], 0, 200).await;
    script.stake(&users[0], 1, 20).await;
    script.stake(&users[2], 1, 7).await;
    (script, users)
}

#[tokio::test]
async fn every_point_at_every_interval_is_the_last_probability_and_the_volume_staked_in_it() {
    let dir = tempfile::tempdir().unwrap();
    // The shifts change markets by SQL: the read cache must not hold the old creation time.
    let config = TestApp::config(&dir, &["--cache-mb", "0"]);
    let app = TestApp::spawn_with(dir, config).await;
    let (script, _) = scripted(&app).await;
    let m = app.get(&format!("/api/markets/{}", script.id)).await.body["data"].clone();
    assert_eq!(ms(&m["created_at"]), script.created);
    let pools: Vec<i64> = (0..2)
        .map(|i| m["outcomes"][i]["pool"].as_i64().unwrap())
        .collect();
    let total: i64 = pools.iter().sum();
    let current: Vec<f64> = pools.iter().map(|&p| p as f64 / total as f64).collect();

    for (interval, step) in [
        ("1m", MINUTE),
        ("5m", 5 * MINUTE),
        ("1h", 60 * MINUTE),
        ("1d", 1440 * MINUTE),
    ] {
        let before = now_ms();
        let reply = app
            .get(&format!(
                "/api/markets/{}/history?interval={interval}",
                script.id
            ))
            .await;
        let after = now_ms();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let h = &reply.body["data"];
        assert_eq!(h["market_id"], json!(script.id));
        assert_eq!(h["interval"], interval);
        assert_eq!(h["outcomes"], json!(["YES", "NO"]));
        let (from, to) = (ms(&h["from"]), ms(&h["to"]));
        assert_eq!(from, script.created.div_euclid(step) * step, "{interval}");
        assert!(
            (before.div_euclid(step) + 1) * step <= to && to <= (after.div_euclid(step) + 1) * step,
            "{interval}: the last point holds now"
        );
        let got = points(h);
        assert_eq!(
            got,
            script.expected(from, step, (to - from) / step),
            "{interval}"
        );
        let last = got.last().unwrap();
        assert_eq!(
            last.1, current,
            "{interval}: the last point is the market now"
        );
        let volume: i64 = got.iter().map(|p| p.2).sum();
        assert_eq!(json!(volume), m["volume"], "{interval}");
        if interval == "1m" {
            assert!(got.len() >= 78, "{}", got.len());
            assert_eq!(got[0].1, vec![0.5, 0.5], "nothing staked at first: uniform");
            assert_eq!(got[0].2, 0);
        }
    }

    // Bounds widen to whole intervals; `from` before the creation starts at the creation.
    let third = script.bets[2].at;
    let (from, to) = (third - 2 * MINUTE - 1, third + MINUTE);
    for (interval, step) in [("1m", MINUTE), ("5m", 5 * MINUTE)] {
        let reply = app
            .get(&format!(
                "/api/markets/{}/history?interval={interval}&from={}&to={}",
                script.id,
                rfc3339(from),
                rfc3339(to)
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let h = &reply.body["data"];
        let first = from.div_euclid(step) * step;
        let end = (to.div_euclid(step) + 1) * step;
        assert_eq!((ms(&h["from"]), ms(&h["to"])), (first, end), "{interval}");
        assert_eq!(
            points(h),
            script.expected(first, step, (end - first) / step),
            "{interval}"
        );
    }
    let early = rfc3339(script.created - 3 * 86_400_000);
    let reply = app
        .get(&format!(
            "/api/markets/{}/history?interval=1h&from={early}",
            script.id
        ))
        .await;
    let step = 60 * MINUTE;
    assert_eq!(
        ms(&reply.body["data"]["from"]),
        script.created.div_euclid(step) * step
    );
}

#[tokio::test]
async fn several_histories_come_in_the_order_asked_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(&dir, &["--cache-mb", "0"]);
    let app = TestApp::spawn_with(dir, config).await;
    let (script, users) = scripted(&app).await;
    let other = users[1]
        .create_market(json!({"name": "Another chart"}))
        .await["id"]
        .as_i64()
        .unwrap();
    users[2].stake(&json!(other), 1, 9).await;
    // An explicit `to`: every request sees the same points.
    let to = rfc3339(now_ms());
    let single = |id: i64| {
        let app = &app;
        let to = to.clone();
        async move {
            let reply = app
                .get(&format!("/api/markets/{id}/history?interval=5m&to={to}"))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            reply.body["data"].clone()
        }
    };
    let (a, b) = (single(other).await, single(script.id).await);
    let reply = app
        .get(&format!(
            "/api/markets/history?ids={other},{},{other}&interval=5m&to={to}",
            script.id
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["data"], json!([a, b]));
    assert_eq!(reply.body["meta"]["count"], 2);
}

#[tokio::test]
async fn history_requests_out_of_bounds_are_refused_with_the_field_named() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let id = alice.create_market(json!({"name": "Bounded"})).await["id"]
        .as_i64()
        .unwrap();
    // Created 3 days ago (before anything reads it, so no cache holds the true time).
    app.db().execute(
        "UPDATE markets SET created_at = created_at - $2 WHERE id = $1",
        &[&id, &(3 * 1440 * MINUTE)],
    );
    let now = now_ms();
    app.get("/api/markets/424242/history")
        .await
        .assert_error(404, "not_found");
    app.get(&format!("/api/markets/history?ids={id},424242"))
        .await
        .assert_field_error(422, "validation_failed", "ids");
    let (later, sooner) = (rfc3339(now), rfc3339(now - 10 * MINUTE));
    app.get(&format!(
        "/api/markets/{id}/history?from={later}&to={sooner}"
    ))
    .await
    .assert_field_error(422, "validation_failed", "from");
    // 2 days of minutes: 2,880 points.
    let past = rfc3339(now - 2 * 1440 * MINUTE);
    app.get(&format!(
        "/api/markets/{id}/history?interval=1m&from={past}&to={}",
        rfc3339(now)
    ))
    .await
    .assert_field_error(422, "validation_failed", "from");
    let fine = app
        .get(&format!(
            "/api/markets/{id}/history?interval=1h&from={past}&to={}",
            rfc3339(now)
        ))
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.text);
    assert!(
        (48..=49).contains(&fine.body["data"]["points"].as_array().unwrap().len()),
        "{}",
        fine.text
    );
    // A `to` to come ends at now: the last point is the current interval.
    let far = rfc3339(now + 2 * 1440 * MINUTE);
    let capped = app
        .get(&format!("/api/markets/{id}/history?interval=1h&to={far}"))
        .await;
    assert_eq!(capped.status, StatusCode::OK, "{}", capped.text);
    let last = capped.body["data"]["points"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["t"]
        .clone();
    assert!(
        ms(&last) <= now,
        "a point for time to come: {}",
        capped.text
    );
    for interval in ["2m", "hour", ""] {
        app.get(&format!("/api/markets/{id}/history?interval={interval}"))
            .await
            .assert_field_error(400, "invalid_parameter", "interval");
    }
    app.get(&format!("/api/markets/{id}/history?from=yesterday"))
        .await
        .assert_field_error(400, "invalid_parameter", "from");
    app.get("/api/markets/0/history")
        .await
        .assert_field_error(400, "invalid_parameter", "id");
    let many: Vec<String> = (0..21).map(|_| id.to_string()).collect();
    for ids in ["abc", "0", &many.join(",")] {
        app.get(&format!("/api/markets/history?ids={ids}"))
            .await
            .assert_field_error(422, "validation_failed", "ids");
    }
    for query in ["", "?ids="] {
        app.get(&format!("/api/markets/history{query}"))
            .await
            .assert_field_error(400, "invalid_parameter", "ids");
    }
}
