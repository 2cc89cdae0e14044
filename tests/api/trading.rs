//! Trading over HTTP: stakes, idempotency, settlement, positions, the ledger, and the money
//! invariants under concurrency.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{Caller, TestApp};

async fn market(owner: &Caller, outcomes: &[&str]) -> Value {
    owner
        .create_market(json!({"name": "Tradable market", "outcomes": outcomes}))
        .await["id"]
        .clone()
}

#[tokio::test]
async fn a_stake_moves_credits_into_the_pool_and_shows_everywhere() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let id = market(&alice, &["YES", "NO"]).await;
    let reply = alice.stake(&id, 0, 300).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.header("idempotent-replayed"), Some("false"));
    let bet = &reply.body["data"];
    assert_eq!(
        (
            bet["outcome"].as_i64(),
            bet["amount"].as_i64(),
            bet["balance_after"].as_i64()
        ),
        (Some(0), Some(300), Some(700))
    );
    alice.stake(&id, 1, 100).await;
    alice.stake(&id, 0, 100).await;

    let m = app.get(&format!("/api/markets/{id}")).await.body["data"].clone();
    assert_eq!(m["volume"], 500);
    assert_eq!(m["version"], 4, "each stake bumps the version");
    assert_eq!(m["outcomes"][0]["pool"], 400);
    assert_eq!(m["outcomes"][0]["probability"], 0.8);
    assert_eq!(alice.get("/api/me").await.body["data"]["balance"], 500);

    let positions = app.get(&format!("/api/markets/{id}/positions")).await;
    assert_eq!(positions.body["meta"]["total"], 2);
    assert_eq!(positions.column("amount"), [json!(400), json!(100)]);
    assert_eq!(positions.body["data"][0]["user"]["username"], "alice");
    assert_eq!(positions.body["data"][0]["payout"], Value::Null);

    let mine = alice.get("/api/me/positions").await;
    assert_eq!(mine.body["meta"]["total"], 2);
    assert!(mine.column("outcome_label").contains(&json!("YES")));
    assert_eq!(mine.body["data"][0]["market_name"], "Tradable market");

    let mut ledger = alice.get("/api/me/ledger?limit=2").await;
    assert!(ledger.body["meta"]["next_cursor"].is_string());
    ledger.body["meta"]["next_cursor"].take();
    assert_eq!(
        ledger.body["meta"],
        json!({"limit": 2, "offset": 0, "total": 4, "next_cursor": null})
    );
    assert_eq!(ledger.column("kind"), [json!("STAKE"), json!("STAKE")]);
    let all = alice.get("/api/me/ledger").await;
    let sum: i64 = all
        .column("amount")
        .iter()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(sum, 500, "the ledger reconciles to the balance");
    app.assert_invariants();
}

#[tokio::test]
async fn refused_stakes_get_the_right_status_and_move_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let id = market(&alice, &["A", "B", "C"]).await;
    let before = (app.snapshot(), app.balance(alice.id));
    alice
        .stake(&json!(424242), 0, 10)
        .await
        .assert_error(404, "not_found");
    alice
        .stake(&id, 3, 10)
        .await
        .assert_field_error(422, "unknown_outcome", "outcome");
    alice
        .stake(&id, 10, 10)
        .await
        .assert_field_error(400, "invalid_body", "outcome");
    alice
        .stake(&id, 0, 0)
        .await
        .assert_field_error(400, "invalid_body", "amount");
    alice
        .stake(&id, 0, 1001)
        .await
        .assert_error(409, "insufficient_funds");
    let anonymous = app
        .post(
            &format!("/api/markets/{id}/positions"),
            json!({"outcome": 0, "amount": 1}),
        )
        .await;
    anonymous.assert_error(401, "unauthorized");
    let bad_key = alice
        .send(
            Method::POST,
            &format!("/api/markets/{id}/positions"),
            Some(json!({"outcome": 0, "amount": 1})),
            &[("idempotency-key", "has space")],
        )
        .await;
    bad_key.assert_field_error(422, "validation_failed", "Idempotency-Key");
    assert_eq!((app.snapshot(), app.balance(alice.id)), before);

    app.db().execute(
        "UPDATE markets SET close_time = 1 WHERE id = $1",
        &[&id.as_i64().unwrap()],
    );
    alice
        .stake(&id, 0, 10)
        .await
        .assert_error(409, "market_closed");
    let closed = market(&alice, &["A", "B"]).await;
    assert_eq!(
        alice
            .post(&format!("/api/markets/{closed}/close"), json!({}))
            .await
            .status,
        StatusCode::OK
    );
    alice
        .stake(&closed, 0, 10)
        .await
        .assert_error(409, "market_not_active");
    assert_eq!(app.balance(alice.id), 1000);
    app.assert_invariants();
}

#[tokio::test]
async fn the_same_idempotency_key_sent_twenty_times_at_once_creates_one_bet() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let id = market(&alice, &["YES", "NO"]).await;
    let path = format!("/api/markets/{id}/positions");
    let body = json!({"outcome": 1, "amount": 25});
    let replies = join_all((0..20).map(|_| {
        alice.send(
            Method::POST,
            &path,
            Some(body.clone()),
            &[("idempotency-key", "order-7")],
        )
    }))
    .await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::CREATED),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let bet_ids: std::collections::HashSet<_> = replies
        .iter()
        .map(|r| r.body["data"]["id"].clone())
        .collect();
    assert_eq!(bet_ids.len(), 1, "every reply is the same bet");
    assert_eq!(
        replies
            .iter()
            .filter(|r| r.header("idempotent-replayed") == Some("false"))
            .count(),
        1
    );
    assert_eq!(app.count("bets"), 1);
    assert_eq!(app.balance(alice.id), 975);

    let other_body = alice
        .send(
            Method::POST,
            &path,
            Some(json!({"outcome": 1, "amount": 26})),
            &[("idempotency-key", "order-7")],
        )
        .await;
    other_body.assert_field_error(422, "idempotency_key_reused", "Idempotency-Key");
    let bob = app.user("bob").await;
    let same_key_other_user = bob
        .send(
            Method::POST,
            &path,
            Some(body),
            &[("idempotency-key", "order-7")],
        )
        .await;
    assert_eq!(
        same_key_other_user.status,
        StatusCode::CREATED,
        "keys are per user"
    );
    assert_eq!(app.count("bets"), 2);
    app.assert_invariants();
}

#[tokio::test]
async fn an_initial_stake_is_created_with_the_market_or_not_at_all() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let m = alice.create_market(json!({"name": "Backed from the start", "initial_stake": {"outcome": 1, "amount": 200}})).await;
    assert_eq!(
        (m["volume"].as_i64(), m["outcomes"][1]["pool"].as_i64()),
        (Some(200), Some(200))
    );
    assert_eq!(app.balance(alice.id), 800);

    let markets_before = app.count("markets");
    let too_much = alice
        .post(
            "/api/markets",
            json!({"name": "Overdrawn market", "initial_stake": {"outcome": 0, "amount": 5000}}),
        )
        .await;
    too_much.assert_error(409, "insufficient_funds");
    let bad_outcome = alice
        .post(
            "/api/markets",
            json!({"name": "Bad outcome", "initial_stake": {"outcome": 2, "amount": 5}}),
        )
        .await;
    bad_outcome.assert_field_error(422, "validation_failed", "initial_stake.outcome");
    assert_eq!(
        app.count("markets"),
        markets_before,
        "a refused initial stake creates no market"
    );
    assert_eq!(app.balance(alice.id), 800);
    app.assert_invariants();
}

#[tokio::test]
async fn resolution_pays_the_whole_pool_pro_rata_once() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol) = (
        app.user("alice").await,
        app.user("bob").await,
        app.user("carol").await,
    );
    let moderator = app.with_role("mod", "moderator").await;
    let id = market(&alice, &["YES", "NO"]).await;
    alice.stake(&id, 0, 100).await;
    bob.stake(&id, 0, 200).await;
    carol.stake(&id, 1, 401).await;
    let resolved = moderator
        .post(&format!("/api/markets/{id}/resolve"), json!({"outcome": 0}))
        .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text);
    assert_eq!(resolved.body["data"]["status"], "resolved");
    assert_eq!(resolved.body["data"]["resolution"], "YES");
    // Pool 701 over winning stakes 300: alice 233.67 -> 233, bob 467.33 -> 467; 1 leftover
    // credit goes to the largest remainder (alice's .67).
    assert_eq!(
        (
            app.balance(alice.id),
            app.balance(bob.id),
            app.balance(carol.id)
        ),
        (900 + 234, 800 + 467, 599)
    );
    let positions = app.get(&format!("/api/markets/{id}/positions")).await;
    assert_eq!(
        positions.column("payout"),
        [json!(0), json!(467), json!(234)]
    );
    let rule: (i64, i64, String) = app.db().query_one(
        "SELECT pool, leftover, rule FROM settlements WHERE market_id = $1",
        &[&id.as_i64().unwrap()],
    );
    assert_eq!((rule.0, rule.1), (701, 1));
    assert!(rule.2.contains("largest remainder"));

    alice
        .post(&format!("/api/markets/{id}/resolve"), json!({"outcome": 1}))
        .await
        .assert_error(409, "market_not_active");
    alice
        .post(&format!("/api/markets/{id}/cancel"), json!({}))
        .await
        .assert_error(409, "market_not_active");
    alice
        .post(&format!("/api/markets/{id}/close"), json!({}))
        .await
        .assert_error(409, "market_not_active");
    alice
        .stake(&id, 0, 1)
        .await
        .assert_error(409, "market_not_active");
    app.assert_invariants();
}

#[tokio::test]
async fn cancellation_and_a_winner_nobody_backed_refund_every_stake() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let cancelled = market(&alice, &["A", "B", "C"]).await;
    let unbacked = market(&alice, &["A", "B", "C"]).await;
    for id in [&cancelled, &unbacked] {
        alice.stake(id, 0, 30).await;
        bob.stake(id, 1, 70).await;
    }
    let c = alice
        .post(&format!("/api/markets/{cancelled}/cancel"), json!({}))
        .await;
    assert_eq!(c.body["data"]["status"], "cancelled");
    let moderator = app.with_role("mod", "moderator").await;
    let r = moderator
        .post(
            &format!("/api/markets/{unbacked}/resolve"),
            json!({"outcome": 2}),
        )
        .await;
    assert_eq!(r.body["data"]["resolution"], "C");
    assert_eq!((app.balance(alice.id), app.balance(bob.id)), (1000, 1000));
    let kinds: Vec<String> = app.db().query_rows(
        "SELECT DISTINCT kind FROM ledger WHERE kind != 'GRANT' ORDER BY kind",
        &[],
    );
    assert_eq!(kinds, ["REFUND", "STAKE"]);
    app.assert_invariants();
}

#[tokio::test]
async fn only_the_creator_a_moderator_or_an_admin_may_settle() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let moderator = app.with_role("mod", "moderator").await;
    let id = market(&alice, &["YES", "NO"]).await;
    for step in ["close", "cancel"] {
        bob.post(&format!("/api/markets/{id}/{step}"), json!({}))
            .await
            .assert_error(403, "forbidden");
    }
    bob.post(&format!("/api/markets/{id}/resolve"), json!({"outcome": 0}))
        .await
        .assert_error(403, "forbidden");
    app.post(&format!("/api/markets/{id}/close"), json!({}))
        .await
        .assert_error(401, "unauthorized");
    moderator
        .post(&format!("/api/markets/{id}/resolve"), json!({"outcome": 9}))
        .await
        .assert_field_error(422, "unknown_outcome", "outcome");
    let ok = moderator
        .post(&format!("/api/markets/{id}/close"), json!({}))
        .await;
    assert_eq!(ok.body["data"]["status"], "closed");
    app.post("/api/markets/999/close", json!({}))
        .await
        .assert_error(401, "unauthorized");
    moderator
        .post("/api/markets/999/close", json!({}))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn markets_close_by_themselves_at_their_close_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(&dir, &["--close-sweep-secs", "1"]);
    let app = TestApp::spawn_with(dir, config).await;
    let alice = app.user("alice").await;
    let id = market(&alice, &["YES", "NO"]).await;
    app.db().execute(
        "UPDATE markets SET close_time = 1 WHERE id = $1",
        &[&id.as_i64().unwrap()],
    );
    let mut status = Value::Null;
    for _ in 0..50 {
        status = app.get(&format!("/api/markets/{id}")).await.body["data"]["status"].clone();
        if status == "closed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, "closed");
}

#[tokio::test]
async fn fifty_clients_staking_at_once_on_one_market_keep_every_invariant() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let id = market(&owner, &["A", "B", "C"]).await;
    let mut users = Vec::new();
    for i in 0..50 {
        users.push(app.user(&format!("trader{i}")).await);
    }
    let replies = join_all(users.iter().enumerate().map(|(i, u)| {
        let id = id.clone();
        async move { u.stake(&id, (i % 3) as u32, 10 + i as i64).await }
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == StatusCode::CREATED));
    let expected: i64 = (0..50).map(|i| 10 + i).sum();
    assert_eq!(
        app.get(&format!("/api/markets/{id}")).await.body["data"]["volume"],
        expected
    );
    app.assert_invariants();
}

#[tokio::test]
async fn parallel_stakes_that_overdraw_succeed_exactly_floor_balance_over_amount_times() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let id = market(&alice, &["YES", "NO"]).await;
    let replies = join_all((0..40).map(|i| alice.stake(&id, i % 2, 70))).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(ok, 1000 / 70);
    assert!(replies
        .iter()
        .filter(|r| r.status != StatusCode::CREATED)
        .all(|r| r.status == StatusCode::CONFLICT && r.body["code"] == "insufficient_funds"));
    assert_eq!(app.balance(alice.id), 1000 - 70 * (1000 / 70));
    app.assert_invariants();
}

#[tokio::test]
async fn stakes_racing_a_resolution_are_either_paid_or_refused_never_lost() {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let moderator = app.with_role("mod", "moderator").await;
    let id = market(&owner, &["YES", "NO"]).await;
    let mut users = Vec::new();
    for i in 0..20 {
        users.push(app.user(&format!("racer{i}")).await);
    }
    let stakes = join_all(users.iter().enumerate().map(|(i, u)| {
        let id = id.clone();
        async move { (u.id, u.stake(&id, (i % 2) as u32, 50).await) }
    }));
    let resolve = async {
        tokio::task::yield_now().await;
        moderator
            .post(&format!("/api/markets/{id}/resolve"), json!({"outcome": 0}))
            .await
    };
    let (stakes, resolved) = tokio::join!(stakes, resolve);
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text);
    for (user, reply) in &stakes {
        match reply.status {
            StatusCode::CREATED => {
                let payout: Option<i64> = app.db().query_one(
                    "SELECT payout FROM positions WHERE market_id = $1 AND user_id = $2",
                    &[&id.as_i64().unwrap(), user],
                );
                assert!(payout.is_some(), "an acknowledged stake was settled");
            }
            StatusCode::CONFLICT => {
                assert_eq!(reply.body["code"], "market_not_active");
                assert_eq!(app.balance(*user), 1000, "a refused stake moved nothing");
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    app.assert_invariants();
}

#[tokio::test]
async fn two_concurrent_resolutions_one_wins_one_gets_409() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let admin = app.with_role("admin", "admin").await;
    let id = market(&alice, &["YES", "NO"]).await;
    alice.stake(&id, 0, 100).await;
    let path = format!("/api/markets/{id}/resolve");
    let (a, b) = tokio::join!(
        alice.post(&path, json!({"outcome": 0})),
        admin.post(&path, json!({"outcome": 1}))
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    assert_eq!(app.count("settlements"), 1);
    app.assert_invariants();
}
