//! The workloads: what each request of a run is, as a function of its connection and count,
//! and the logins and market ids they need.

use std::sync::Arc;

use reqwest::{Client, Method};
use serde_json::{json, Value};

use crate::generator::Make;

/// A cheap, deterministic spread of numbers for picking ids and offsets.
pub fn spread(conn: usize, n: u64) -> u64 {
    (conn as u64 + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(n.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        >> 17
}

/// A second pick for the same request, independent enough of `spread` (a token beside a market).
fn spread2(conn: usize, n: u64) -> u64 {
    let mut x = spread(conn, n) ^ 0xD6E8_FEB8_6659_FD93;
    x = (x ^ (x >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^ (x >> 29)
}

/// Access tokens of the seeded users `demo1..=demo{n}`, logged in one after the other.
pub async fn login_all(client: &Client, base: &str, n: usize) -> Arc<Vec<String>> {
    let mut tokens = Vec::new();
    for i in 1..=n {
        let resp: Value = client
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"username": format!("demo{i}"), "password": "agora-demo"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(
            resp["data"]["access_token"]
                .as_str()
                .expect("login")
                .to_owned(),
        );
    }
    Arc::new(tokens)
}

/// The ids of the `n` newest active markets (`n` a multiple of 100).
pub async fn active_markets(client: &Client, base: &str, n: usize) -> Arc<Vec<i64>> {
    let mut ids = Vec::new();
    for offset in (0..n).step_by(100) {
        let resp: Value = client
            .get(format!(
                "{base}/api/markets?status=active&sort=created_at&limit=100&offset={offset}"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.extend(
            resp["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_i64().unwrap()),
        );
    }
    Arc::new(ids)
}

/// A stake of 1 on a random market of `active`, each connection with its own token.
pub fn stake_request(tokens: Arc<Vec<String>>, active: Arc<Vec<i64>>, outcome: u32) -> Make {
    Arc::new(move |c, n| {
        let id = active[spread(c, n) as usize % active.len()];
        let body = json!({"outcome": outcome, "amount": 1});
        (
            Method::POST,
            format!("/api/markets/{id}/positions"),
            Some(body),
            Some(tokens[c % tokens.len()].clone()),
        )
    })
}

/// Searches with the corpus's queries, in turn.
pub fn search_request(mode: &'static str) -> Make {
    let corpus: Value =
        serde_json::from_str(include_str!("../../data/search/corpus.json")).expect("corpus");
    let queries: Arc<Vec<String>> = Arc::new(
        corpus["queries"]
            .as_array()
            .expect("queries")
            .iter()
            .filter_map(|q| q["q"].as_str())
            .map(|q| q.replace(' ', "%20"))
            .collect(),
    );
    Arc::new(move |c, n| {
        let q = &queries[spread(c, n) as usize % queries.len()];
        (
            Method::GET,
            format!("/api/markets/search?q={q}&mode={mode}&limit=10"),
            None,
            None,
        )
    })
}

/// Markets related to a random one of the first `markets`.
pub fn related_request(markets: u64) -> Make {
    Arc::new(move |c, n| {
        (
            Method::GET,
            format!(
                "/api/markets/{}/related?limit=10",
                1 + spread(c, n) % markets
            ),
            None,
            None,
        )
    })
}

/// The same path every time.
pub fn get_path(path: &'static str) -> Make {
    Arc::new(move |_, _| (Method::GET, path.into(), None, None))
}

pub fn healthz_request() -> Make {
    get_path("/healthz")
}

/// A market by id among the first `hot`.
pub fn get_request(hot: u64) -> Make {
    Arc::new(move |c, n| {
        (
            Method::GET,
            format!("/api/markets/{}", 1 + spread(c, n) % hot),
            None,
            None,
        )
    })
}

/// A list page of active markets by volume among the first 100 pages.
pub fn list_request_first_pages() -> Make {
    Arc::new(|c, n| {
        let offset = spread(c, n) % 100 * 20;
        (
            Method::GET,
            format!("/api/markets?status=active&sort=volume&limit=20&offset={offset}"),
            None,
            None,
        )
    })
}

/// The list page of the comparison: active markets by volume, 20 a page, a random page of
/// the first 500.
pub fn list_request() -> Make {
    Arc::new(|c, n| {
        let offset = 20 * (spread(c, n) % 500);
        (
            Method::GET,
            format!("/api/markets?status=active&sort=volume&limit=20&offset={offset}"),
            None,
            None,
        )
    })
}

/// The comparison's stake on agora: a random token of `tokens` on a random market of `active`.
pub fn agora_stake(tokens: Arc<Vec<String>>, active: Arc<Vec<i64>>) -> Make {
    Arc::new(move |c, n| {
        let id = active[spread(c, n) as usize % active.len()];
        let token = &tokens[spread2(c, n) as usize % tokens.len()];
        (
            Method::POST,
            format!("/api/markets/{id}/positions"),
            Some(json!({"outcome": 0, "amount": 1})),
            Some(token.clone()),
        )
    })
}

/// The comparison's stake on Fastify, which has no authentication: a random `user_id` of
/// `users` on a random market of `active`.
pub fn fastify_stake(users: u64, active: Arc<Vec<i64>>) -> Make {
    Arc::new(move |c, n| {
        let id = active[spread(c, n) as usize % active.len()];
        let user = 1 + spread2(c, n) % users;
        (
            Method::POST,
            format!("/api/markets/{id}/positions"),
            Some(json!({"user_id": user, "outcome": "YES", "amount": 1})),
            None,
        )
    })
}
