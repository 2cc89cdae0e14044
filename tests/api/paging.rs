//! Cursor paging: every list takes an opaque `cursor` (the previous page's `meta.next_cursor`)
//! and walks the same order as the plain list, exactly once per row, while rows come and go.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{Caller, Reply, TestApp};

/// `path` with `extra` query parameters appended.
fn with(path: &str, extra: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{extra}")
}

/// Walks a list from its first page by `meta.next_cursor`, `limit` rows a page; returns every
/// row in order (at most 200 pages, so a cursor that loops fails instead of hanging).
async fn walk(caller: &Caller, path: &str, limit: u32) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut reply = caller.get(&with(path, &format!("limit={limit}"))).await;
    for _ in 0..200 {
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        let page = reply.body["data"].as_array().expect("data").clone();
        assert!(page.len() <= limit as usize, "{path}: page too long");
        rows.extend(page);
        match reply.body["meta"]["next_cursor"].as_str() {
            Some(cursor) => {
                reply = caller
                    .get(&with(path, &format!("limit={limit}&cursor={cursor}")))
                    .await
            }
            None => {
                assert!(
                    reply.body["meta"]["next_cursor"].is_null(),
                    "{}",
                    reply.text
                );
                return rows;
            }
        }
    }
    panic!("{path}: more than 200 pages");
}

/// One page of 100: the plain ordering.
async fn all(caller: &Caller, path: &str) -> Vec<Value> {
    let reply = caller.get(&with(path, "limit=100")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(
        reply.body["meta"]["next_cursor"].is_null(),
        "{}",
        reply.text
    );
    reply.body["data"].as_array().expect("data").clone()
}

fn ids(rows: &[Value]) -> Vec<i64> {
    rows.iter().map(|r| r["id"].as_i64().expect("id")).collect()
}

/// 24 markets whose sort columns tie in groups: volume, creation time and close time repeat,
/// a third have no close time, names repeat up to case; two statuses.
async fn markets_with_ties(app: &TestApp, user: &Caller) -> Vec<i64> {
    let mut created = Vec::new();
    for i in 0..24 {
        let name = match i % 3 {
            0 => format!("Question {}", i / 6),
            1 => format!("QUESTION {}", i / 6),
            _ => format!("question {i:02}"),
        };
        created.push(
            user.create_market(json!({"name": name})).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    // Set before the first list read, so no cached page predates it.
    app.db().batch(
        "UPDATE markets SET volume = (id % 4) * 10,
                                created_at = 1700000000000 + (id / 3) * 1000,
                                close_time = CASE WHEN id % 3 = 0 THEN NULL
                                                  ELSE 4102444800000 + (id % 5) * 60000 END;
             UPDATE markets SET status = 'closed' WHERE id % 2 = 0;",
    );
    created
}

#[tokio::test]
async fn walking_every_sort_and_order_by_cursor_visits_each_market_once_in_list_order() {
    let app = TestApp::spawn().await;
    let user = app.user("walker").await;
    let created = markets_with_ties(&app, &user).await;
    let other = app.user("other").await;
    other.create_market(json!({"name": "Someone else's"})).await;
    for sort in ["volume", "created_at", "close_time", "name"] {
        for order in ["", "&order=asc", "&order=desc"] {
            for filter in ["", "&status=closed", &format!("&creator_id={}", user.id)] {
                let path = format!("/api/markets?sort={sort}{order}{filter}");
                let plain = all(&user, &path).await;
                let walked = walk(&user, &path, 5).await;
                assert_eq!(ids(&walked), ids(&plain), "{path}");
                let unique: HashSet<i64> = ids(&walked).into_iter().collect();
                assert_eq!(unique.len(), walked.len(), "{path} repeats a market");
                if filter.is_empty() {
                    assert_eq!(walked.len(), created.len() + 1, "{path}");
                }
            }
        }
    }
}

#[tokio::test]
async fn ties_in_the_sort_column_are_broken_by_id_in_the_sort_direction() {
    let app = TestApp::spawn().await;
    let user = app.user("ties").await;
    markets_with_ties(&app, &user).await;
    for (sort, column) in [("volume", "volume"), ("created_at", "created_at")] {
        for (order, descending) in [("asc", false), ("desc", true)] {
            let rows = walk(&user, &format!("/api/markets?sort={sort}&order={order}"), 4).await;
            let mut ties = 0;
            for pair in rows.windows(2) {
                if pair[0][column] == pair[1][column] {
                    ties += 1;
                    let (a, b) = (pair[0]["id"].as_i64(), pair[1]["id"].as_i64());
                    assert_eq!(a > b, descending, "{sort} {order}: {a:?} then {b:?}");
                }
            }
            assert!(ties > 5, "the data has ties under {sort}");
        }
    }
}

#[tokio::test]
async fn rows_created_or_deleted_between_pages_neither_repeat_nor_skip_the_rest() {
    let app = TestApp::spawn().await;
    let user = app.user("mover").await;
    for i in 0..12 {
        user.create_market(json!({"name": format!("m{:02}", i * 2)}))
            .await;
    }
    let path = "/api/markets?sort=name&limit=4";
    let first = user.get(path).await;
    let seen = first.column("name");
    assert_eq!(seen, ["m00", "m02", "m04", "m06"]);
    let cursor = first.body["meta"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    // Before the cursor: a new market and a deletion (which shift every offset by one each)...
    user.create_market(json!({"name": "m01"})).await;
    let gone = first.ids()[0];
    user.delete(&format!("/api/markets/{gone}")).await;
    // ...and after it: a deletion and a new market, which the walk must skip and see.
    let rest_before = user.get("/api/markets?sort=name&limit=100").await;
    let m10 = rest_before.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "m10")
        .unwrap()["id"]
        .clone();
    assert_eq!(
        user.delete(&format!("/api/markets/{m10}")).await.status,
        204
    );
    user.create_market(json!({"name": "m07"})).await;

    let mut names = Vec::new();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let page = user.get(&format!("{path}&cursor={cursor}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        names.extend(page.column("name"));
        next = page.body["meta"]["next_cursor"].as_str().map(str::to_owned);
    }
    let expected: Vec<Value> = ["m07", "m08", "m12", "m14", "m16", "m18", "m20", "m22"]
        .iter()
        .map(|n| json!(n))
        .collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn a_bad_cursor_a_cursor_with_offset_or_a_cursor_of_another_list_is_a_422() {
    let app = TestApp::spawn().await;
    let user = app.user("bad").await;
    for i in 0..3 {
        user.create_market(json!({"name": format!("market {i}")}))
            .await;
    }
    let first = user.get("/api/markets?sort=name&limit=1").await;
    let cursor = first.body["meta"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut edited = cursor.clone().into_bytes();
    edited[5] = if edited[5] == b'x' { b'y' } else { b'x' };
    let edited = String::from_utf8(edited).unwrap();
    let before = app.snapshot();
    for (query, message) in [
        (
            format!("sort=name&cursor={cursor}&offset=0"),
            "together with offset",
        ),
        (format!("sort=name&cursor={edited}"), "not a valid cursor"),
        (
            "sort=name&cursor=not-a-cursor".to_owned(),
            "not a valid cursor",
        ),
        ("sort=name&cursor=".to_owned(), "not a valid cursor"),
        (format!("sort=volume&cursor={cursor}"), "another list"),
        (
            format!("sort=name&order=desc&cursor={cursor}"),
            "another list",
        ),
        (
            format!("sort=name&status=active&cursor={cursor}"),
            "another list",
        ),
        (
            format!("sort=name&creator_id={}&cursor={cursor}", user.id),
            "another list",
        ),
    ] {
        let reply = user.get(&format!("/api/markets?{query}")).await;
        let details = reply.assert_error(422, "invalid_parameter");
        assert_eq!(details[0]["field"], "cursor", "{query}: {}", reply.text);
        let text = details[0]["message"].as_str().unwrap();
        assert!(text.contains(message), "{query}: {text}");
    }
    // A cursor of one list is not one of another list's.
    let ledger = user.get(&format!("/api/me/ledger?cursor={cursor}")).await;
    ledger.assert_field_error(422, "invalid_parameter", "cursor");
    assert_eq!(app.snapshot(), before);
    // The right cursor still works.
    let second = user
        .get(&format!("/api/markets?sort=name&limit=1&cursor={cursor}"))
        .await;
    assert_eq!(second.column("name"), ["market 1"]);
}

/// Checks one list endpoint: the cursor walk equals the plain list and has `n` rows.
async fn check_walk(caller: &Caller, path: &str, n: usize, key: fn(&Value) -> Value) {
    let plain: Vec<Value> = all(caller, path).await.iter().map(key).collect();
    let walked: Vec<Value> = walk(caller, path, 2).await.iter().map(key).collect();
    assert_eq!(walked, plain, "{path}");
    assert_eq!(walked.len(), n, "{path}");
}

#[tokio::test]
async fn every_list_endpoint_pages_by_cursor() {
    let app = TestApp::spawn().await;
    let admin = app.with_role("boss", "admin").await;
    let users = [
        app.user("user1").await,
        app.user("user2").await,
        app.user("user3").await,
    ];
    let mut markets = Vec::new();
    for i in 0..3 {
        markets.push(
            admin
                .create_market(json!({"name": format!("staked {i}"), "outcomes": ["A", "B", "C"]}))
                .await["id"]
                .clone(),
        );
    }
    // Equal amounts on one market (ties broken by staker, then outcome).
    for (u, user) in users.iter().enumerate() {
        for (m, market) in markets.iter().enumerate() {
            for outcome in 0..2 {
                let amount = if m == 0 {
                    5
                } else {
                    1 + (u as i64 + outcome) % 2
                };
                let reply = user.stake(market, outcome as u32, amount).await;
                assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
            }
        }
    }
    let position = |p: &Value| json!([p["user"]["id"], p["outcome"], p["amount"]]);
    for market in &markets {
        check_walk(
            &admin,
            &format!("/api/markets/{market}/positions"),
            6,
            position,
        )
        .await;
    }
    let mine = |p: &Value| json!([p["market_id"], p["outcome"]]);
    check_walk(&users[0], "/api/me/positions", 6, mine).await;
    let entry = |e: &Value| e["id"].clone();
    check_walk(&users[1], "/api/me/ledger", 7, entry).await;
    check_walk(&admin, "/api/jobs?kind=index_market", 3, entry).await;
    // A cursor of one market's positions is refused on another's.
    let page = admin
        .get(&format!("/api/markets/{}/positions?limit=1", markets[0]))
        .await;
    let cursor = page.body["meta"]["next_cursor"].as_str().unwrap();
    admin
        .get(&format!(
            "/api/markets/{}/positions?cursor={cursor}",
            markets[1]
        ))
        .await
        .assert_field_error(422, "invalid_parameter", "cursor");
}

#[tokio::test]
async fn the_last_page_has_a_null_next_cursor_and_offset_pages_carry_one() {
    let app = TestApp::spawn().await;
    let user = app.user("meta").await;
    for i in 0..3 {
        user.create_market(json!({"name": format!("meta {i}")}))
            .await;
    }
    let offset: Reply = user.get("/api/markets?limit=1&offset=1").await;
    assert!(
        offset.body["meta"]["next_cursor"].is_string(),
        "{}",
        offset.text
    );
    assert_eq!(offset.body["meta"]["total"], 3);
    let last = user.get("/api/markets?limit=1&offset=2").await;
    assert!(last.body["meta"]["next_cursor"].is_null(), "{}", last.text);
    assert!(last.body["meta"]
        .as_object()
        .unwrap()
        .contains_key("next_cursor"));
    let exact = user.get("/api/markets?limit=3").await;
    assert!(
        exact.body["meta"]["next_cursor"].is_null(),
        "{}",
        exact.text
    );
}
